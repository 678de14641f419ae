"""The paper's preprocessing (after its authors' lab code) and its on-disk cache.

Per image: grayscale -> z-score -> min-max to [0, 255] -> CLAHE (clip 2.0, 8x8 tiles) -> gamma 1.2
-> resize to the network's input size; stored as uint8, scaled to [0, 1] when loaded.

The lab code z-scores with statistics of the training portion and then min-max rescales every image.
Both are affine maps of the gray values, so in exact arithmetic the per-image min-max cancels the
z-score; in float32 the two roundings can differ by one grey level on a few pixels after
``np.rint``. ``tests/data/test_preprocess.py`` checks the cancellation on its images and bounds the
difference elsewhere. The cache is therefore fold-independent: one cache per dataset and parameter
set serves every fold, fraction and arm.

Images, masks and centres share one pixel grid. Centres are stored normalised in pixel-centre
convention (u = (x + 0.5) / W, so a flip is u -> 1 - u and the stretch to S x S leaves u
unchanged). Masks are area-resized like their images and thresholded at one half, so a resized
mask's centroid sits where the resized image puts the disc (nearest-neighbour sampling shifts it by
half a source pixel). Each image's native size is kept so predictions map back to native pixels.

With ``crop_fov`` each photograph is first cut to the black-padded square around its field of view
(:mod:`locseg.data.frames`), and images, masks and centres live on that square's grid; the frame is
stored per image, so predictions map back exactly. Without it the frame is the whole photograph
and every array is byte-identical to the cache before frames existed.

The cache is keyed by the files' content, checked for size and checksum when opened, and written
to reserved space, so a full disk is a clear error rather than a crash.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import zlib
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
from rich.progress import track

from locseg.data.dataset import FundusDataset, equivalent_radius, load_sample
from locseg.data.frames import (
    Frame,
    crop_to_frame,
    fov_frame,
    identity_frame,
    to_frame,
)
from locseg.io import atomic_path, write_json_atomic

# 2: masks area-resized on the image's grid; content-keyed; checksummed
# 3: gamma before the resize (the lab code's order), not after it
CACHE_VERSION = 3
ARRAYS = ("images", "masks")
log = logging.getLogger(__name__)


class CacheError(OSError):
    """The preprocessing cache cannot be written (e.g. the disk is full)."""


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything that changes the preprocessed pixels; stored with encoders and checkpoints."""

    image_size: int = 64
    clahe_clip: float = 2.0
    clahe_tiles: int = 8
    gamma: float = 1.2
    crop_fov: bool = False  # cut to the square around the field of view first (no distortion)

    def as_dict(self) -> dict:
        """The parameters; options added later appear only when switched on.

        This dict keys the cache and is the compatibility record of encoders and checkpoints, so
        leaving ``crop_fov: False`` out keeps every cache, encoder and sweep made before the
        option valid (the pixels are identical), while ``crop_fov: True`` changes all three.
        """
        values = asdict(self)
        if not self.crop_fov:
            del values["crop_fov"]
        return values


def to_gray(image: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma, as the lab code's rgb2gray."""
    if image.ndim == 2:
        return image.astype(np.float32)
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)


def zscore(gray: np.ndarray, mean: float = 0.0, std: float = 1.0) -> np.ndarray:
    return (gray - mean) / max(std, 1e-8)


def minmax_uint8(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / max(high - low, 1e-8) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


@lru_cache(maxsize=8)
def _clahe(config: PreprocessConfig) -> A.CLAHE:
    return A.CLAHE(
        clip_limit=(config.clahe_clip, config.clahe_clip),
        tile_grid_size=(config.clahe_tiles, config.clahe_tiles),
        p=1.0,
    )


def image_frame(image: np.ndarray, config: PreprocessConfig) -> Frame:
    """The native rectangle the network sees: the FOV square with ``crop_fov``, else all of it."""
    if config.crop_fov:
        return fov_frame(image)
    return identity_frame((image.shape[1], image.shape[0]))


def preprocess_image(
    image: np.ndarray,
    config: PreprocessConfig,
    mean: float = 0.0,
    std: float = 1.0,
    frame: Frame | None = None,
) -> np.ndarray:
    """One photograph -> uint8 (S, S) network input, at native resolution until the resize.

    The lab code's order: gray -> (z-score) -> min-max -> CLAHE -> gamma -> resize. Gamma is a
    non-linear map of the grey values, so it does not commute with the area resize's averaging:
    applied after the resize it changes most pixels by a few grey levels.

    The photograph is first cut to ``frame`` (found with :func:`image_frame` when not given), so
    every caller feeds a ``crop_fov`` model what it was trained on.
    """
    frame = frame if frame is not None else image_frame(image, config)
    image = crop_to_frame(image, frame)
    normalised = minmax_uint8(zscore(to_gray(image), mean, std))
    equalised = _clahe(config)(image=normalised)["image"]
    corrected = apply_gamma(equalised, config.gamma)
    return cv2.resize(
        corrected, (config.image_size, config.image_size), interpolation=cv2.INTER_AREA
    )


def preprocess_framed(image: np.ndarray, config: PreprocessConfig) -> tuple[np.ndarray, Frame]:
    """Network input and its frame: what inference needs to map the outputs back."""
    frame = image_frame(image, config)
    return preprocess_image(image, config, 0.0, 1.0, frame), frame


def apply_gamma(image: np.ndarray, gamma: float) -> np.ndarray:
    """The lab code's gamma: out = 255 * (in / 255) ** (1 / gamma), via a lookup table."""
    table = (np.linspace(0, 1, 256) ** (1.0 / gamma) * 255.0).round().astype(np.uint8)
    return cv2.LUT(image, table)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Binary mask -> uint8 {0, 1} (S, S) on the image's grid: area-resize, threshold at one half.

    ``INTER_AREA`` is the images' resampling, so mask and image stay aligned pixel for pixel.
    """
    area = cv2.resize(mask.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    return (area >= 0.5).astype(np.uint8)


def normalise_center(center: tuple[float, float], size_wh: tuple[float, float]) -> list[float]:
    """Native pixel (x, y) -> normalised (u, v) in [0, 1]."""
    return [(center[0] + 0.5) / size_wh[0], (center[1] + 0.5) / size_wh[1]]


def native_center(uv: np.ndarray, size_wh: np.ndarray) -> np.ndarray:
    """Normalised (u, v) -> native pixel (x, y); works on (..., 2) arrays."""
    return np.asarray(uv) * np.asarray(size_wh) - 0.5


# --------------------------------------------------------------------------- the cache


@dataclass
class PreprocessedSet:
    """Arrays for every labelled image of a dataset, row i = ``ids[i]``."""

    ids: list[str]
    images: np.ndarray  # uint8 (N, S, S), memory-mapped
    masks: np.ndarray  # uint8 (N, S, S), all zero where has_mask is False
    has_mask: np.ndarray  # bool (N,)
    centers: np.ndarray  # float32 (N, 2) normalised (x / W, y / H), NaN where unknown
    native_sizes: np.ndarray  # float32 (N, 2) (W, H)
    radii: np.ndarray  # float32 (N,) disc radius in native px, NaN where no mask
    config: PreprocessConfig
    path: Path
    frames: np.ndarray | None = None  # int64 (N, 4) x0, y0, width, height; None = whole images

    def index_of(self) -> dict[str, int]:
        return {image_id: i for i, image_id in enumerate(self.ids)}

    def frame(self, row: int) -> Frame:
        """Row ``row``'s frame: centres, masks and predictions of that row live on its grid."""
        if self.frames is None:
            return identity_frame(tuple(int(v) for v in self.native_sizes[row]))
        return Frame.from_list(self.frames[row])


def default_cache_dir() -> Path:
    return Path(os.environ.get("LOCSEG_CACHE_DIR", Path.home() / ".cache" / "locseg"))


def file_digest(path: Path) -> str:
    """Fast content hash: a replaced file restored with the old size and mtime still differs."""
    return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()


def cache_key(dataset: FundusDataset, config: PreprocessConfig, mask_threshold: int | None) -> str:
    """Hash of the source files' content, the labels and the parameters."""
    digest = hashlib.sha256()
    header = {"v": CACHE_VERSION, "config": config.as_dict(), "mask_threshold": mask_threshold}
    digest.update(json.dumps(header, sort_keys=True).encode())
    for sample in dataset.centred():
        for path in (sample.image_path, sample.mask_path):
            if path is not None:
                digest.update(f"{path.name}|{file_digest(path)}".encode())
        digest.update(f"{sample.image_id}|{sample.center}".encode())
    return digest.hexdigest()[:16]


def preprocess_dataset(
    dataset: FundusDataset,
    config: PreprocessConfig,
    cache_dir: str | Path | None = None,
    mask_threshold: int | None = None,
) -> PreprocessedSet:
    """Preprocess every labelled image once; later calls with the same inputs load the cache."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    folder = cache_dir / f"{dataset.root.name}-{cache_key(dataset, config, mask_threshold)}"
    problem = _cache_problem(folder)
    if problem is not None:
        if problem != "absent":
            log.warning("preprocessing cache %s is damaged (%s); rebuilding it", folder, problem)
        _build_cache(dataset, config, folder, mask_threshold)
    return _load_cache(folder, config)


def _build_cache(
    dataset: FundusDataset, config: PreprocessConfig, folder: Path, mask_threshold: int | None
) -> None:
    samples = dataset.centred()
    size, count = config.image_size, len(samples)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"ids": [], "has_mask": [], "centers": [], "native_sizes": [], "radii": [], "frames": []}
    (folder / "meta.json").unlink(missing_ok=True)  # a rebuild: the old entry is invalid from now
    with (
        atomic_path(folder / "images.npy") as images_tmp,
        atomic_path(folder / "masks.npy") as masks_tmp,
    ):
        images = _reserved_memmap(images_tmp, (count, size, size), folder / "images.npy")
        masks = _reserved_memmap(masks_tmp, (count, size, size), folder / "masks.npy")
        for i, sample in enumerate(
            track(samples, description=f"Preprocessing {dataset.root.name}")
        ):
            loaded = load_sample(sample, mask_threshold)
            height, width = loaded.image.shape[:2]
            frame = image_frame(loaded.image, config)
            images[i] = preprocess_image(loaded.image, config, 0.0, 1.0, frame)
            has_mask = loaded.mask is not None
            if has_mask:
                masks[i] = resize_mask(crop_to_frame(loaded.mask, frame), size)
            meta["ids"].append(sample.image_id)
            meta["has_mask"].append(has_mask)
            meta["centers"].append(to_frame(sample.center, frame).tolist())
            meta["native_sizes"].append([width, height])
            meta["frames"].append(frame.as_list())
            meta["radii"].append(equivalent_radius(loaded.mask) if has_mask else float("nan"))
        images.flush()
        masks.flush()
        del images, masks
        temps = (images_tmp, masks_tmp)
        meta["files"] = {name: _file_record(t) for name, t in zip(ARRAYS, temps, strict=True)}
    meta["config"] = config.as_dict()
    write_json_atomic(folder / "meta.json", meta)  # written last: its presence marks a full cache


def _reserved_memmap(path: Path, shape: tuple[int, ...], final: Path) -> np.memmap:
    """A writable .npy memmap whose blocks are allocated up front.

    Writing into a sparse memmap on a full disk kills the process with SIGBUS; reserving the
    space first turns that into ENOSPC here, which becomes a :class:`CacheError`.
    """
    array = np.lib.format.open_memmap(path, "w+", np.uint8, shape)
    size = path.stat().st_size
    try:
        fd = os.open(path, os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, size)
        finally:
            os.close(fd)
    except OSError as error:
        del array
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CacheError(
                error.errno,
                f"no space for the preprocessing cache in {final.parent}: {final.name} needs "
                f"{size:,} bytes. Free disk space there, or point LOCSEG_CACHE_DIR "
                "(paths.cache_dir) at a disk with room.",
            ) from error
        if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # file systems without fallocate
            raise
    return array


def _file_record(path: Path) -> dict:
    """Size and CRC-32 of a cache file: cheap enough to check on every open."""
    return {"bytes": path.stat().st_size, "crc32": zlib.crc32(path.read_bytes())}


def _cache_problem(folder: Path) -> str | None:
    """None for a complete, intact cache entry; else why not ("absent", or what is damaged)."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except FileNotFoundError:
        return "absent"
    except (OSError, json.JSONDecodeError) as error:
        return f"meta.json unreadable: {error}"
    for name, expected in meta.get("files", {}).items():
        path = folder / f"{name}.npy"
        if not path.is_file():
            return f"{path.name} is missing"
        if path.stat().st_size != expected["bytes"]:
            return f"{path.name} has {path.stat().st_size:,} bytes, expected {expected['bytes']:,}"
        if zlib.crc32(path.read_bytes()) != expected["crc32"]:
            return f"{path.name} fails its checksum"
    return None if "files" in meta else "meta.json lacks the file records"


def _load_cache(folder: Path, config: PreprocessConfig) -> PreprocessedSet:
    meta = json.loads((folder / "meta.json").read_text())
    return PreprocessedSet(
        ids=meta["ids"],
        images=np.load(folder / "images.npy", mmap_mode="r"),
        masks=np.load(folder / "masks.npy", mmap_mode="r"),
        has_mask=np.asarray(meta["has_mask"], dtype=bool),
        centers=np.asarray(meta["centers"], dtype=np.float32),
        native_sizes=np.asarray(meta["native_sizes"], dtype=np.float32),
        radii=np.asarray(meta["radii"], dtype=np.float32),
        config=config,
        path=folder,
        frames=np.asarray(meta["frames"], dtype=np.int64) if meta.get("frames") else None,
    )
