"""Near-duplicate photographs across folders: a content fingerprint per image, cached on disk.

The same photograph can sit in two public datasets under other names, re-encoded, resized or
with another exposure. Any image used to test segmentation must stay out of the localizer's
training, so pools, ``check_data`` and the converters all find such copies with this module.

Why this fingerprint. A plain grey thumbnail is dominated by what every fundus photograph shares
(the black border, the round field of view, the bright disc, the illumination fall-off): two
unrelated photographs correlate above 0.99 and the old z-scored 32x32 thumbnail kept copies
(<= 0.012) from the nearest different photograph (0.039) by a thin margin. Here the grey image
is resized (aspect kept) to a 64x64 thumbnail, the field of view (FOV) is found and its rim
dropped, and the thumbnail is band-passed inside the FOV (minus a Gaussian of sigma 2 px,
normalised convolution so the rim does not leak in): what remains is vessel- and lesion-scale
detail, which differs between photographs and survives re-encoding, resizing and exposure
changes. The score of a pair is ``1 - cosine similarity`` of the two band-passed thumbnails over
the pixels inside both FOVs: 0 for a copy, about 1 for unrelated photographs.

Measured (README "Duplicate photographs"): copies made by JPEG quality 60, 0.5x and 0.77x
resizing, +30 brightness and gamma 0.7 score at most 0.031 on DRIONS-DB, IDRiD and synthetic
photographs (-30 brightness, which clips the dark periphery: 0.071); the 60 copies shared by the
two IDRiD folders at most 0.002. Different photographs score at least 0.31 (IDRiD), 0.40
(DRIONS-DB) and 0.58 (synthetic). ``DEFAULT_THRESHOLD`` = 0.15 sits between the two. Second
shots of one eye (a few in IDRiD, consecutive film frames in DRIONS-DB) score 0.08-0.51: the
closest are reported, the others are not.

Byte-identical files always score 0. Fingerprints are cached per file content (a hash of the
bytes), so renaming or moving a folder keeps its cache, and a changed file is recomputed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from rich.console import Console
from rich.progress import track

from locseg.data.dataset import IMAGE_SUFFIXES, DatasetError
from locseg.data.preprocess import default_cache_dir, file_digest
from locseg.io import atomic_path

FINGERPRINT_VERSION = 1  # bump when the fingerprint changes, so cached ones are recomputed
THUMB = 64  # side of the band-passed thumbnail
WORK = 256  # longer side of the image the FOV is found on
BAND_SIGMA = 2.0  # Gaussian (thumbnail px) subtracted to keep vessel-scale detail
FOV_LEVEL = 0.15  # FOV = brighter than border + this fraction of the (1st..99th percentile) range
RIM_ERODE = 2  # thumbnail px dropped inside the FOV edge
DEFAULT_THRESHOLD = 0.15  # scores up to this are the same photograph
PROGRESS_MIN = 50  # show a progress bar when at least this many images are fingerprinted
BLOCK = 512  # query rows per block of the distance matrix (bounded memory)
SIZE = THUMB * THUMB  # a fingerprint is [band-passed thumbnail | FOV mask], 2 * SIZE floats


@dataclass(frozen=True)
class DuplicatePair:
    """``query`` shows the same photograph as ``reference`` (``score``: 0 = identical)."""

    query: Path
    reference: Path
    score: float


# --------------------------------------------------------------------------- one image


def fingerprint_image(gray: np.ndarray) -> np.ndarray:
    """Fingerprint of grey uint8 pixels: float32 [band-passed thumbnail | FOV mask] (2*SIZE)."""
    if gray.ndim == 3:
        gray = cv2.cvtColor(gray, cv2.COLOR_RGB2GRAY)
    height, width = gray.shape
    scale = WORK / max(height, width)
    work_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    work = cv2.resize(gray, work_size, interpolation=interpolation).astype(np.float32)
    fov = field_of_view(work).astype(np.float32)
    # Masked average to THUMB x THUMB: border pixels do not darken the thumbnail's rim.
    weight = cv2.resize(fov, (THUMB, THUMB), interpolation=cv2.INTER_AREA)
    thumb = cv2.resize(work * fov, (THUMB, THUMB), interpolation=cv2.INTER_AREA)
    thumb = np.where(weight > 0, thumb / np.maximum(weight, 1e-6), 0.0).astype(np.float32)
    inside = cv2.erode((weight > 0.999).astype(np.uint8), np.ones((2 * RIM_ERODE + 1,) * 2))
    inside_f = inside.astype(np.float32)
    low = cv2.GaussianBlur(thumb * inside_f, (0, 0), BAND_SIGMA)
    low /= np.maximum(cv2.GaussianBlur(inside_f, (0, 0), BAND_SIGMA), 1e-6)
    band = (thumb - low) * inside_f
    if inside.any():
        band[inside > 0] -= band[inside > 0].mean()
    band *= inside_f
    norm = float(np.linalg.norm(band))
    band = band / norm if norm > 1e-6 else band * 0.0
    return np.concatenate([band.ravel(), inside_f.ravel()]).astype(np.float32)


def field_of_view(gray: np.ndarray) -> np.ndarray:
    """Bool mask of the photographed retina: the largest bright region, holes filled.

    The threshold is relative to the image's own dark and bright levels, so it follows
    brightness and gamma changes; an image without a dark border is all FOV.
    """
    blurred = cv2.blur(gray, (5, 5))
    low, high = np.percentile(blurred, [1, 99])
    bright = (blurred > low + FOV_LEVEL * (high - low)).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(bright, connectivity=4)
    if count <= 1:
        return np.ones(gray.shape, bool)
    largest = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    contours, _ = cv2.findContours(largest, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(largest)
    cv2.drawContours(filled, contours, -1, 1, thickness=-1)
    if filled.mean() > 0.97:
        return np.ones(gray.shape, bool)
    return filled.astype(bool)


def read_gray(path: Path) -> np.ndarray:
    """Grey uint8 pixels, decoded at 1/8 scale when that still leaves 2 * WORK px (fast JPEG)."""
    buffer = np.fromfile(path, dtype=np.uint8) if path.is_file() else np.zeros(0, np.uint8)
    gray = cv2.imdecode(buffer, cv2.IMREAD_REDUCED_GRAYSCALE_8) if buffer.size else None
    if gray is None or max(gray.shape) < 2 * WORK:
        gray = cv2.imdecode(buffer, cv2.IMREAD_GRAYSCALE) if buffer.size else None
    if gray is None or gray.size == 0:
        raise DatasetError(
            f"{path}: cannot decode this image for its fingerprint (missing, corrupt or not an "
            "image). Re-download or re-export it, or remove it from the folder."
        )
    return gray


# --------------------------------------------------------------------------- many images, cached


def fingerprints(paths: Sequence[Path], cache_dir: Path | None = None) -> np.ndarray:
    """Fingerprints of ``paths`` (row i = ``paths[i]``), float32 (N, 2 * SIZE).

    Cached per file content under ``cache_dir`` (default: the preprocessing cache's
    ``fingerprints/`` folder), so a second call costs one hash per file.
    """
    return _fingerprints_and_digests(paths, cache_dir)[0]


def _fingerprints_and_digests(
    paths: Sequence[Path], cache_dir: Path | None
) -> tuple[np.ndarray, list[str]]:
    folder = _cache_folder(cache_dir)
    paths = [Path(p) for p in paths]
    digests = [_digest(path) for path in paths]
    result = np.zeros((len(paths), 2 * SIZE), np.float32)
    missing: list[int] = []
    for index, digest in enumerate(digests):
        cached = _load(folder / f"{digest}.npy")
        if cached is None:
            missing.append(index)
        else:
            result[index] = cached
    steps = missing
    if len(missing) >= PROGRESS_MIN:
        console = Console(stderr=True)  # stdout stays clean for tables and pipes
        steps = track(missing, "fingerprinting images", transient=True, console=console)
    for index in steps:
        result[index] = fingerprint_image(read_gray(paths[index]))
        with atomic_path(folder / f"{digests[index]}.npy") as tmp, tmp.open("wb") as handle:
            np.save(handle, result[index])
    return result, digests


def _cache_folder(cache_dir: Path | None) -> Path:
    base = Path(cache_dir) if cache_dir else default_cache_dir() / "fingerprints"
    folder = base / f"v{FINGERPRINT_VERSION}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _digest(path: Path) -> str:
    if not path.is_file():
        raise DatasetError(f"{path}: image file not found. Check the path or the folder.")
    return file_digest(path)


def _load(entry: Path) -> np.ndarray | None:
    """A cached fingerprint, or None when absent or damaged (it is then recomputed)."""
    try:
        values = np.load(entry)
    except (OSError, ValueError, EOFError):
        return None
    if values.shape != (2 * SIZE,) or values.dtype != np.float32:
        return None
    return values


# --------------------------------------------------------------------------- comparing


def distances(query: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Scores (Nq, Nr): 1 - cosine similarity of the band-passed thumbnails inside both FOVs."""
    query, reference = np.atleast_2d(query), np.atleast_2d(reference)
    ref_band, ref_fov = reference[:, :SIZE], reference[:, SIZE:]
    ref_energy = (ref_band * ref_band).T
    out = np.empty((len(query), len(reference)), np.float32)
    for start in range(0, len(query), BLOCK):
        band, fov = query[start : start + BLOCK, :SIZE], query[start : start + BLOCK, SIZE:]
        dot = band @ ref_band.T
        energy = np.maximum((band * band) @ ref_fov.T, 1e-12) * np.maximum(fov @ ref_energy, 1e-12)
        out[start : start + BLOCK] = 1.0 - dot / np.sqrt(energy)
    return out


def find_duplicates(
    query: Sequence[Path],
    reference: Sequence[Path],
    cache_dir: Path | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> list[DuplicatePair]:
    """Every (query, reference) pair showing one photograph, closest first.

    Byte-identical files score 0; a file is not its own duplicate (one resolved path skipped).
    """
    query, reference = [Path(p) for p in query], [Path(p) for p in reference]
    if not query or not reference:
        return []
    scores = _scores(query, reference, cache_dir)
    return _pairs(query, reference, scores, threshold)


def within_duplicates(
    paths: Sequence[Path], cache_dir: Path | None = None, threshold: float = DEFAULT_THRESHOLD
) -> list[DuplicatePair]:
    """Pairs inside one list (each once, the earlier path as ``query``), closest first."""
    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        return []
    scores = _scores(paths, paths, cache_dir)
    scores[np.tril_indices(len(paths))] = np.inf
    return _pairs(paths, paths, scores, threshold)


def _scores(query: list[Path], reference: list[Path], cache_dir: Path | None) -> np.ndarray:
    query_prints, query_digests = _fingerprints_and_digests(query, cache_dir)
    reference_prints, reference_digests = _fingerprints_and_digests(reference, cache_dir)
    scores = np.maximum(distances(query_prints, reference_prints), 0.0)
    identical = np.asarray(query_digests)[:, None] == np.asarray(reference_digests)[None, :]
    scores[identical] = 0.0  # even a blank image, which has no detail to compare
    return scores


def _pairs(
    query: list[Path], reference: list[Path], scores: np.ndarray, threshold: float
) -> list[DuplicatePair]:
    pairs = [
        DuplicatePair(query[i], reference[j], float(scores[i, j]))
        for i, j in zip(*np.nonzero(scores <= threshold), strict=True)
        if query[i].resolve() != reference[j].resolve()
    ]
    return sorted(pairs, key=lambda p: (p.score, str(p.query), str(p.reference)))


def match_one_to_one(pairs: Sequence[DuplicatePair]) -> list[DuplicatePair]:
    """Keep each query and each reference in at most one pair, closest pairs first."""
    used_query, used_reference, kept = set(), set(), []
    for pair in sorted(pairs, key=lambda p: (p.score, str(p.query), str(p.reference))):
        if pair.query not in used_query and pair.reference not in used_reference:
            kept.append(pair)
            used_query.add(pair.query)
            used_reference.add(pair.reference)
    return kept


def folder_images(folder: Path) -> list[Path]:
    """The images of a canonical dataset folder (``images/``) or of a plain folder, sorted."""
    folder = Path(folder)
    source = folder / "images" if (folder / "images").is_dir() else folder
    if not source.is_dir():
        raise DatasetError(f"{folder}: folder not found. Pass a dataset folder or image folder.")
    return sorted(
        p
        for p in source.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )
