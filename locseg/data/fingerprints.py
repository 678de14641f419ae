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

Why a second, registered check. A threshold on that score alone, tuned to one pair of sets,
fails on the next: a photograph processed differently (IDRiD's masked segmentation copy against
the localization copy: a slight rotation, another tone curve) scores 0.12-0.16 and a second shot
of one eye, shifted by a few per cent, 0.5-0.7, while different photographs start at 0.31. So the
score only picks candidates: every pair up to ``CANDIDATE_THRESHOLD`` (0.6, loose) and each
image's nearest neighbour on the other side, whatever its score. Each candidate is then
registered (:func:`registered_score`): both images at ``REGISTER_SIZE`` px, band-passed to the
vessels and contrast-normalised, aligned (cross-correlation peak, then ECC: small shift, scale,
rotation), and compared by correlation over both FOVs. ``registered`` = 1 - that correlation;
up to ``REGISTERED_THRESHOLD`` the two are one photograph or one eye. Second shots of one eye
(same patient) count as duplicates: they are dropped from pools like copies.

How the values were chosen, without looking at any evaluated image: on procedural photographs
(:func:`locseg.data.synthetic.draw_fundus`, 12 seeds) and copies made of them (gamma 0.6 / 1.5,
unsharp mask, colour balance, JPEG quality 40, 0.8x and 0.5x resizing, all at once, and a
simulated second shot: 3 % shift, 2 degrees, 0.85 gain), copies register at most 0.114 (JPEG 40)
and different photographs at least 0.80. ``REGISTERED_THRESHOLD`` = 0.25 is about twice the
worst copy. ``CANDIDATE_THRESHOLD`` = 0.6 is four times the old decision value (0.15), and
``ECC_GATE`` = 0.6 lets ECC refine any alignment that could come under the decision value
(on the real pairs below, ECC gained at most 0.22).

Checked on real data afterwards (tests/data/test_fingerprints.py; nothing was tuned on it):
copies and second shots register at most 0.19, different photographs at least 0.38. IDRiD: the
60 plain copies <= 0.005, idrid_c_0306 / IDRiD_39 0.045 and idrid_c_0338 / IDRiD_26 0.05
(processed differently), second shots idrid_c_0361 / IDRiD_56 0.09 and idrid_c_0075 / IDRiD_11
0.08; the nearest different photographs among the candidates 0.50 (idrid-centres x idrid-od),
0.38 (inside idrid-centres), 0.61 (inside idrid-od). DRIONS-DB, every one of its 5886 pairs
registered: 8 pairs of consecutive film frames (one eye, moved) at 0.04-0.19, then nothing
below 0.63.

Known gap: the candidates come from the thumbnail score, which does not tolerate shifts, so a
second shot moved by more than a few per cent is found only when it is a nearest neighbour:
of those 8 DRIONS-DB pairs, only image_002 / 003 and image_022 / 023 are (the other six score
0.87-1.23 on the thumbnails). Copies of one exposure are not affected.

Byte-identical files (also one file named twice, or through a symlink) always score 0 and are
duplicates; only ``within_duplicates`` leaves an entry's pair with itself out. Fingerprints are
cached per file content (a hash of the bytes), so renaming or moving a folder keeps its cache,
and a changed file is recomputed; registration images are made anew for candidate pairs only.
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
CANDIDATE_THRESHOLD = 0.6  # fingerprint scores up to this are registered (a loose net)
DEFAULT_THRESHOLD = CANDIDATE_THRESHOLD  # the ``threshold`` argument's default (older name)
REGISTER_SIZE = 128  # longer side of the images aligned and compared
REGISTER_BAND = (0.7, 3.0)  # difference-of-Gaussians sigmas (px at REGISTER_SIZE): vessels
REGISTER_CONTRAST = 12.0  # sigma (px) of the local contrast normalisation
REGISTER_RIM = 3  # px dropped inside the FOV edge
MIN_DETAIL = 0.5  # grey levels of band-passed detail below which an image has none to align
MIN_FOV_PIXELS = 400  # FOV pixels (at REGISTER_SIZE) needed to align at all
MIN_COVERAGE = 0.4  # share of the FOV with detail (|z| > 0.25) needed to align at all
CONTRAST_FLOOR = 0.25  # local contrast is divided by at least this fraction of the global one
MAX_SHIFT = 0.15  # largest translation searched, as a fraction of each side
MIN_OVERLAP = 0.5  # aligned FOVs must overlap this much of the smaller one
ECC_ITERATIONS = 20
ECC_GATE = 0.6  # ECC refines only alignments already scoring up to this
REGISTERED_THRESHOLD = 0.25  # registered scores up to this are one photograph or one eye
REGISTER_PROGRESS_MIN = 300  # show a progress bar when at least this many pairs are registered
PROGRESS_MIN = 50  # show a progress bar when at least this many images are fingerprinted
BLOCK = 512  # query rows per block of the distance matrix (bounded memory)
SIZE = THUMB * THUMB  # a fingerprint is [band-passed thumbnail | FOV mask], 2 * SIZE floats


@dataclass(frozen=True)
class DuplicatePair:
    """``query`` shows the same photograph (or eye) as ``reference``.

    ``score``: the fingerprint score (0 = identical); ``registered``: 1 - correlation once
    aligned (0 for identical files), the value that decided.
    """

    query: Path
    reference: Path
    score: float
    registered: float = 0.0


# --------------------------------------------------------------------------- one image


def _working_gray(gray: np.ndarray, longest: int) -> np.ndarray:
    """Grey float32 pixels with the longest side resized to ``longest`` (area when shrinking)."""
    if gray.ndim == 3:
        gray = cv2.cvtColor(gray, cv2.COLOR_RGB2GRAY)
    height, width = gray.shape
    scale = longest / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(gray, size, interpolation=interpolation).astype(np.float32)


def fingerprint_image(gray: np.ndarray) -> np.ndarray:
    """Fingerprint of grey uint8 pixels: float32 [band-passed thumbnail | FOV mask] (2*SIZE)."""
    work = _working_gray(gray, WORK)
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


REDUCED = {8: cv2.IMREAD_REDUCED_GRAYSCALE_8, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4}
REDUCED[2] = cv2.IMREAD_REDUCED_GRAYSCALE_2


def read_gray(path: Path, min_side: int = 2 * WORK, factors: tuple[int, ...] = (8,)) -> np.ndarray:
    """Grey uint8 pixels, decoded at the strongest reduction of ``factors`` (8, 4, 2: fast
    JPEG) that still leaves ``min_side`` px on the longer side, else in full.

    Fingerprints keep the default (1/8 or full), so cached ones match newly computed ones.
    """
    buffer = np.fromfile(path, dtype=np.uint8) if path.is_file() else np.zeros(0, np.uint8)
    gray = cv2.imdecode(buffer, REDUCED[8]) if buffer.size else None
    if gray is not None and max(gray.shape) < min_side:
        longest = 8 * max(gray.shape)  # about the full size
        fits = [f for f in sorted(factors, reverse=True) if f < 8 and longest // f >= min_side]
        gray = cv2.imdecode(buffer, REDUCED[fits[0]]) if fits else None
    if gray is None or max(gray.shape) < min_side:
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


# --------------------------------------------------------------------------- registration


def registration_image(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grey pixels -> (band-passed, contrast-normalised image, FOV weight), float32, at
    ``REGISTER_SIZE`` px on the longer side: what :func:`registered_score` aligns and compares.

    Band-pass (difference of Gaussians, normalised convolution inside the eroded FOV) keeps the
    vessels; dividing by the local standard deviation and z-scoring inside the FOV removes what
    gamma, brightness, colour balance, sharpening and exposure change. An image without detail
    spread over its field of view (flat, tiny, or one bright disc on a flat field: less than
    ``MIN_COVERAGE`` of it with detail; procedural photographs >= 0.69, toy test images <= 0.17,
    real fundus and colonoscopy photographs >= 0.61) gets an empty FOV: :func:`registered_score`
    never matches it, only identical files match it.
    """
    work = _working_gray(gray, REGISTER_SIZE)
    fov = field_of_view(work).astype(np.uint8)
    kernel = np.ones((2 * REGISTER_RIM + 1,) * 2, np.uint8)
    inside = cv2.erode(fov, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    inside = inside.astype(np.float32)

    def smooth(values: np.ndarray, sigma: float) -> np.ndarray:
        blurred = cv2.GaussianBlur(values * inside, (0, 0), sigma)
        return blurred / np.maximum(cv2.GaussianBlur(inside, (0, 0), sigma), 1e-6)

    fine, coarse = REGISTER_BAND
    band = (smooth(work, fine) - smooth(work, coarse)) * inside
    detail = float(band[inside > 0].std()) if inside.sum() >= MIN_FOV_PIXELS else 0.0
    if detail < MIN_DETAIL:  # a flat field (or a tiny one): nothing to align, never a match
        return np.zeros_like(band), np.zeros_like(inside)
    spread = np.sqrt(np.maximum(smooth(band * band, REGISTER_CONTRAST), 0.0))
    floor = CONTRAST_FLOOR * detail  # flat patches are not blown up to full contrast
    band = np.where(inside > 0, band / np.maximum(spread, floor), 0.0).astype(np.float32)
    values = band[inside > 0]
    band[inside > 0] = (values - values.mean()) / max(float(values.std()), 1e-6)
    if (np.abs(band[inside > 0]) > 0.25).mean() < MIN_COVERAGE:  # one edge, flat elsewhere
        return np.zeros_like(band), np.zeros_like(inside)
    return band * inside, inside


def registered_score(
    first: tuple[np.ndarray, np.ndarray],
    second: tuple[np.ndarray, np.ndarray],
    spectra: dict | None = None,
    keys: tuple[str, str] | None = None,
) -> float:
    """``1 - correlation`` of two :func:`registration_image` results once aligned: 0 = same.

    Alignment: the best of no motion and the cross-correlation peak within ``MAX_SHIFT`` of each
    side, refined by ECC (affine: small shift, scale and rotation) unless that start already
    scores above ``ECC_GATE`` (a different photograph). The correlation is taken over both
    FOVs' overlap, which must cover ``MIN_OVERLAP`` of the smaller FOV (else 1). The best
    alignment tried counts, so a refinement that goes astray cannot hide a copy. ``spectra``
    (a dict) with ``keys`` (one per image, e.g. its digest) keeps each image's Fourier
    transform for its next pair.
    """
    (a, a_fov), (b, b_fov) = first, second
    shape = (max(a.shape[0], b.shape[0]), max(a.shape[1], b.shape[1]))
    a, a_fov, b, b_fov = (_padded(x, shape) for x in (a, a_fov, b, b_fov))
    if not a_fov.any() or not b_fov.any():
        return 1.0
    transforms = [_spectrum(a, spectra, keys and keys[0]), _spectrum(b, spectra, keys and keys[1])]
    dx, dy = _correlation_peak(*transforms, a.shape)
    warps = [np.eye(2, 3, dtype=np.float32), np.array([[1, 0, dx], [0, 1, dy]], np.float32)]
    scores = [_aligned_correlation(a, a_fov, b, b_fov, warp) for warp in warps]
    start = warps[int(np.argmax(scores))].copy()
    if 1.0 - max(scores) > ECC_GATE:
        return float(min(1.0, 1.0 - max(scores)))
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, ECC_ITERATIONS, 1e-4)
    try:
        _, refined = cv2.findTransformECC(
            a, b, start, cv2.MOTION_AFFINE, criteria, (a_fov > 0).astype(np.uint8), 3
        )
        scores.append(_aligned_correlation(a, a_fov, b, b_fov, refined))
    except cv2.error:
        pass  # ECC did not converge: the other alignments stand
    return float(max(0.0, 1.0 - max(scores)))


def _padded(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, np.float32)
    out[: values.shape[0], : values.shape[1]] = values
    return out


def _spectrum(values: np.ndarray, spectra: dict | None, key: str | None) -> np.ndarray:
    """Fourier transform of ``values`` zero-padded to twice its size (no wrap-around)."""
    if spectra is None or key is None:
        return np.fft.rfft2(values, (2 * values.shape[0], 2 * values.shape[1]))
    if (key, values.shape) not in spectra:
        spectra[key, values.shape] = _spectrum(values, None, None)
    return spectra[key, values.shape]


def _correlation_peak(
    a_spectrum: np.ndarray, b_spectrum: np.ndarray, shape: tuple[int, int]
) -> tuple[int, int]:
    """Shift (dx, dy) with ``b(x + d) ~ a(x)``: the cross-correlation peak within MAX_SHIFT.

    Plain (not phase-whitened) correlation: the band-pass has already weighted the
    frequencies, and whitening would let the ones it removed (noise) pick the peak.
    """
    height, width = shape
    size = (2 * height, 2 * width)
    spectrum = np.conj(a_spectrum) * b_spectrum
    correlation = np.fft.fftshift(np.fft.irfft2(spectrum, size))
    reach_y, reach_x = int(MAX_SHIFT * height) + 1, int(MAX_SHIFT * width) + 1
    window = correlation[
        height - reach_y : height + reach_y + 1, width - reach_x : width + reach_x + 1
    ]
    y, x = np.unravel_index(int(np.argmax(window)), window.shape)
    return int(x) - reach_x, int(y) - reach_y


def _aligned_correlation(
    a: np.ndarray, a_fov: np.ndarray, b: np.ndarray, b_fov: np.ndarray, warp: np.ndarray
) -> float:
    """Correlation of ``a`` and ``b`` warped onto it, over both FOVs (-1 if they barely meet)."""
    height, width = a.shape
    flags = cv2.WARP_INVERSE_MAP
    moved = cv2.warpAffine(b, warp, (width, height), flags=cv2.INTER_LINEAR | flags)
    moved_fov = cv2.warpAffine(b_fov, warp, (width, height), flags=cv2.INTER_NEAREST | flags)
    both = (a_fov > 0) & (moved_fov > 0)
    if both.sum() < MIN_OVERLAP * min((a_fov > 0).sum(), (b_fov > 0).sum()):
        return -1.0
    x, y = a[both].astype(np.float64), moved[both].astype(np.float64)
    x, y = x - x.mean(), y - y.mean()
    denominator = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denominator) if denominator > 1e-12 else -1.0


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
    registered_threshold: float = REGISTERED_THRESHOLD,
) -> list[DuplicatePair]:
    """Every (query, reference) pair showing one photograph or one eye, closest first.

    Candidates: fingerprint score up to ``threshold``, and each image's nearest neighbour on the
    other side; a candidate is a duplicate when its ``registered`` score is at most
    ``registered_threshold``. Byte-identical files (one file given twice, a symlink, a copied
    file) are duplicates with both scores 0, without registration.
    """
    query, reference = [Path(p) for p in query], [Path(p) for p in reference]
    if not query or not reference:
        return []
    scores, identical, digests = _scores(query, reference, cache_dir)
    return _confirmed(query, reference, scores, identical, digests, threshold, registered_threshold)


def within_duplicates(
    paths: Sequence[Path],
    cache_dir: Path | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    registered_threshold: float = REGISTERED_THRESHOLD,
) -> list[DuplicatePair]:
    """Pairs inside one list (each once, the earlier path as ``query``), closest first.

    An entry is never paired with itself, but two entries naming one file (twice the same path,
    or symlinks to one file) are a pair like any other copy.
    """
    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        return []
    scores, identical, digests = _scores(paths, paths, cache_dir)
    lower = np.tril_indices(len(paths))
    scores[lower], identical[lower] = np.inf, False
    return _confirmed(paths, paths, scores, identical, digests, threshold, registered_threshold)


def _scores(
    query: list[Path], reference: list[Path], cache_dir: Path | None
) -> tuple[np.ndarray, np.ndarray, tuple[list[str], list[str]]]:
    """Fingerprint scores, the byte-identical mask, and the files' digests."""
    query_prints, query_digests = _fingerprints_and_digests(query, cache_dir)
    reference_prints, reference_digests = _fingerprints_and_digests(reference, cache_dir)
    scores = np.maximum(distances(query_prints, reference_prints), 0.0)
    identical = np.asarray(query_digests)[:, None] == np.asarray(reference_digests)[None, :]
    scores[identical] = 0.0  # even a blank image, which has no detail to compare
    return scores, identical, (query_digests, reference_digests)


def candidate_pairs(scores: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Index pairs worth registering: score up to ``threshold``, or nearest neighbours (each row's
    and each column's finite minimum), so a shifted shot of one eye, whose thumbnails disagree,
    is still looked at. Infinite scores are never candidates."""
    finite = np.isfinite(scores)
    chosen = finite & (scores <= threshold)
    if finite.any():
        masked = np.where(finite, scores, np.inf)
        rows, cols = np.arange(scores.shape[0]), np.argmin(masked, axis=1)
        keep = finite[rows, cols]
        chosen[rows[keep], cols[keep]] = True
        cols, rows = np.arange(scores.shape[1]), np.argmin(masked, axis=0)
        keep = finite[rows, cols]
        chosen[rows[keep], cols[keep]] = True
    return [(int(i), int(j)) for i, j in zip(*np.nonzero(chosen), strict=True)]


def _confirmed(
    query: list[Path],
    reference: list[Path],
    scores: np.ndarray,
    identical: np.ndarray,
    digests: tuple[list[str], list[str]],
    threshold: float,
    registered_threshold: float,
) -> list[DuplicatePair]:
    """The candidates whose registration confirms them (identical files need none)."""
    images: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # digest -> registration image
    spectra: dict = {}

    def image(path: Path, digest: str) -> tuple[np.ndarray, np.ndarray]:
        if digest not in images:
            images[digest] = registration_image(read_gray(path, 2 * REGISTER_SIZE, (8, 4, 2)))
        return images[digest]

    candidates = candidate_pairs(scores, threshold)
    steps = candidates
    if len(candidates) >= REGISTER_PROGRESS_MIN:
        console = Console(stderr=True)
        steps = track(candidates, "registering candidate pairs", transient=True, console=console)
    pairs = []
    for i, j in steps:
        if identical[i, j]:
            registered = 0.0
        else:
            keys = (digests[0][i], digests[1][j])
            first, second = image(query[i], keys[0]), image(reference[j], keys[1])
            registered = registered_score(first, second, spectra, keys)
        if registered <= registered_threshold:
            pairs.append(DuplicatePair(query[i], reference[j], float(scores[i, j]), registered))
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
