"""The paper's preprocessing (after its authors' lab code) and its on-disk cache.

Per image: grayscale -> z-score -> min-max to [0, 255] -> CLAHE (clip 2.0, 8x8 tiles) -> gamma 1.2
-> resize to the network's input size; stored as uint8, scaled to [0, 1] when loaded.

The lab code z-scores with statistics of the training portion and then min-max rescales every image.
Both are affine maps of the gray values, so the per-image min-max cancels the z-score exactly
(``tests/data/test_preprocess.py`` proves it). The cache is therefore fold-independent: one
cache per dataset and parameter set serves every fold, fraction and arm.

Centres and masks follow the resize: centres are stored normalised in pixel-centre convention
(u = (x + 0.5) / W, so a flip is u -> 1 - u and the stretch to S x S leaves u unchanged),
masks are resized with nearest-neighbour, and each image's native size is kept so predictions
map back to native pixels.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
from rich.progress import track

from locseg.data.dataset import FundusDataset, equivalent_radius, load_sample
from locseg.io import atomic_path, write_json_atomic

CACHE_VERSION = 1


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything that changes the preprocessed pixels; stored with encoders and checkpoints."""

    image_size: int = 64
    clahe_clip: float = 2.0
    clahe_tiles: int = 8
    gamma: float = 1.2

    def as_dict(self) -> dict:
        return asdict(self)


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
def _clahe_and_resize(config: PreprocessConfig) -> A.Compose:
    return A.Compose(
        [
            A.CLAHE(
                clip_limit=(config.clahe_clip, config.clahe_clip),
                tile_grid_size=(config.clahe_tiles, config.clahe_tiles),
                p=1.0,
            ),
            A.Resize(config.image_size, config.image_size, interpolation=cv2.INTER_AREA),
        ]
    )


def preprocess_image(
    image: np.ndarray, config: PreprocessConfig, mean: float = 0.0, std: float = 1.0
) -> np.ndarray:
    """One photograph -> uint8 (S, S) network input, at native resolution until the resize."""
    normalised = minmax_uint8(zscore(to_gray(image), mean, std))
    equalised = _clahe_and_resize(config)(image=normalised)["image"]
    return apply_gamma(equalised, config.gamma)


def apply_gamma(image: np.ndarray, gamma: float) -> np.ndarray:
    """The lab code's gamma: out = 255 * (in / 255) ** (1 / gamma), via a lookup table."""
    table = (np.linspace(0, 1, 256) ** (1.0 / gamma) * 255.0).round().astype(np.uint8)
    return cv2.LUT(image, table)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    return cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)


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

    def index_of(self) -> dict[str, int]:
        return {image_id: i for i, image_id in enumerate(self.ids)}


def default_cache_dir() -> Path:
    return Path(os.environ.get("LOCSEG_CACHE_DIR", Path.home() / ".cache" / "locseg"))


def cache_key(dataset: FundusDataset, config: PreprocessConfig, mask_threshold: int | None) -> str:
    """Hash of the source files (path, size, mtime), the labels and the parameters."""
    digest = hashlib.sha256()
    header = {"v": CACHE_VERSION, "config": config.as_dict(), "mask_threshold": mask_threshold}
    digest.update(json.dumps(header, sort_keys=True).encode())
    for sample in dataset.centred():
        for path in (sample.image_path, sample.mask_path):
            if path is not None:
                stat = path.stat()
                digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode())
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
    if not (folder / "meta.json").is_file():
        _build_cache(dataset, config, folder, mask_threshold)
    return _load_cache(folder, config)


def _build_cache(
    dataset: FundusDataset, config: PreprocessConfig, folder: Path, mask_threshold: int | None
) -> None:
    samples = dataset.centred()
    size, count = config.image_size, len(samples)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"ids": [], "has_mask": [], "centers": [], "native_sizes": [], "radii": []}
    with (
        atomic_path(folder / "images.npy") as images_tmp,
        atomic_path(folder / "masks.npy") as masks_tmp,
    ):
        images = np.lib.format.open_memmap(images_tmp, "w+", np.uint8, (count, size, size))
        masks = np.lib.format.open_memmap(masks_tmp, "w+", np.uint8, (count, size, size))
        for i, sample in enumerate(
            track(samples, description=f"Preprocessing {dataset.root.name}")
        ):
            loaded = load_sample(sample, mask_threshold)
            height, width = loaded.image.shape[:2]
            images[i] = preprocess_image(loaded.image, config)
            has_mask = loaded.mask is not None
            if has_mask:
                masks[i] = resize_mask(loaded.mask, size)
            meta["ids"].append(sample.image_id)
            meta["has_mask"].append(has_mask)
            meta["centers"].append(normalise_center(sample.center, (width, height)))
            meta["native_sizes"].append([width, height])
            meta["radii"].append(equivalent_radius(loaded.mask) if has_mask else float("nan"))
        images.flush()
        masks.flush()
        del images, masks
    meta["config"] = config.as_dict()
    write_json_atomic(folder / "meta.json", meta)  # written last: its presence marks a full cache


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
    )
