"""The canonical dataset format: read it, validate it, describe it, write it.

A dataset is a folder::

    images/       PNG / JPEG / TIFF, RGB or gray
    masks/        binary PNG, same stem as its image (optional, per image)
    centers.csv   image,x,y[,group]   centre in native pixels, x right, y down

An image with a mask and no CSV row gets the mask centroid as its centre. Every problem is
reported as a :class:`DatasetError` whose message names the file and the fix.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from locseg.io import atomic_path, write_text_atomic

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
CENTERS_FILE = "centers.csv"


class DatasetError(ValueError):
    """Bad input data. The message names the offending file or value and how to fix it."""


@dataclass(frozen=True)
class Sample:
    """One image and its labels. Paths are absolute; the centre is in native pixels."""

    image_id: str
    image_path: Path
    mask_path: Path | None = None
    center: tuple[float, float] | None = None
    group: str | None = None

    @property
    def group_id(self) -> str:
        """Patient / eye id for grouped folds; an image is its own group when none is given."""
        return self.group or self.image_id


@dataclass
class FundusDataset:
    """The labelled images of one dataset folder, sorted by id."""

    root: Path
    samples: list[Sample]
    notes: list[str] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [s.image_id for s in self.samples]

    def by_id(self) -> dict[str, Sample]:
        return {s.image_id: s for s in self.samples}

    def masked(self) -> list[Sample]:
        """Images with an expert mask: the segmentation pool."""
        return [s for s in self.samples if s.mask_path is not None]

    def centre_only(self) -> list[Sample]:
        """Images with a centre and no mask: the cheap-label pool."""
        return [s for s in self.samples if s.mask_path is None and s.center is not None]

    def centred(self) -> list[Sample]:
        return [s for s in self.samples if s.center is not None]


# --------------------------------------------------------------------------- reading files


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as uint8 RGB (H, W, 3) or gray (H, W); raise a DatasetError if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: image file not found. Check the path or the images/ folder.")
    buffer = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED) if buffer.size else None
    if image is None or image.size == 0:
        raise DatasetError(
            f"{path}: cannot decode this image (corrupt, truncated or not an image). "
            "Re-export or re-download it, or delete it and its centers.csv row."
        )
    if _is_truncated(path, buffer):
        raise DatasetError(
            f"{path}: image file is truncated (its end-of-image marker is missing). "
            "Re-export or re-download it, or delete it and its centers.csv row."
        )
    if image.dtype != np.uint8:
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image


def _is_truncated(path: Path, buffer: np.ndarray) -> bool:
    """OpenCV silently pads a truncated JPEG/PNG with grey; catch it from the file's tail."""
    tail = buffer[-16:].tobytes()
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        return b"\xff\xd9" not in tail
    if suffix == ".png":
        return b"IEND" not in tail
    return False


def read_mask(
    path: str | Path, image_shape: tuple[int, int] | None = None, threshold: int | None = None
) -> np.ndarray:
    """Read a binary mask as bool (H, W).

    Values must be 0 and one positive level, unless ``threshold`` is given (then ``> threshold``
    is foreground): silently binarising a soft or JPEG-damaged mask would hide a data problem.
    """
    mask = read_image(path)
    if mask.ndim == 3:
        mask = mask.max(axis=2)
    if image_shape is not None and mask.shape != tuple(image_shape[:2]):
        raise DatasetError(
            f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image is "
            f"{image_shape[1]}x{image_shape[0]}. Masks must match their image pixel for pixel; "
            "resize or re-export the mask."
        )
    if threshold is not None:
        return mask > threshold
    levels = np.unique(mask)
    if len(levels) > 2 or (len(levels) == 2 and levels[0] != 0):
        raise DatasetError(
            f"{path}: mask is not binary ({len(levels)} grey levels, e.g. {levels[:5].tolist()}). "
            "Save it as a 0/255 PNG, or set data.mask_threshold=127 to binarise it."
        )
    return mask > 0


def mask_centroid(mask: np.ndarray) -> tuple[float, float]:
    """Centroid (x, y) of a boolean mask in pixel coordinates."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        raise DatasetError("mask is empty, so it has no centroid")
    return float(xs.mean()), float(ys.mean())


def equivalent_radius(mask: np.ndarray) -> float:
    """Radius of the circle with the mask's area: the disc radius used by localization metrics."""
    return math.sqrt(float(mask.sum()) / math.pi)


# --------------------------------------------------------------------------- the folder


def _list_images(folder: Path) -> dict[str, Path]:
    """Map stem -> path for the image files in ``folder``; two files with one stem is an error."""
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if path.stem in found:
            raise DatasetError(
                f"{folder}: two files share the id '{path.stem}' ({found[path.stem].name}, "
                f"{path.name}). Ids are file stems and must be unique; rename or remove one."
            )
        found[path.stem] = path
    return found


def _read_centers(csv_path: Path, images: dict[str, Path]) -> dict[str, tuple[float, float, str]]:
    if not csv_path.is_file():
        return {}
    rows: dict[str, tuple[float, float, str]] = {}
    with csv_path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"image", "x", "y"} - set(reader.fieldnames or [])
        if missing:
            raise DatasetError(
                f"{csv_path}: missing column(s) {sorted(missing)}; the header must be "
                "'image,x,y' (plus an optional 'group')."
            )
        for line, row in enumerate(reader, start=2):
            image_id = Path(row["image"].strip()).stem
            where = f"{csv_path}:{line}"
            if image_id in rows:
                raise DatasetError(f"{where}: duplicate row for image '{image_id}'; keep one.")
            if image_id not in images:
                raise DatasetError(
                    f"{where}: image '{row['image']}' is not in images/. "
                    "Add the image or delete this row."
                )
            try:
                x, y = float(row["x"]), float(row["y"])
            except (TypeError, ValueError):
                raise DatasetError(
                    f"{where}: centre ({row['x']!r}, {row['y']!r}) is not a pair of numbers."
                ) from None
            if not (math.isfinite(x) and math.isfinite(y)):
                raise DatasetError(f"{where}: centre ({x}, {y}) is not finite.")
            rows[image_id] = (x, y, (row.get("group") or "").strip())
    return rows


def load_dataset(root: str | Path, mask_threshold: int | None = None) -> FundusDataset:
    """Index a dataset folder. Cheap: decodes only masks that must supply a centre.

    Per-image content checks (decodable, mask size, centre inside the image) happen where
    the pixels are read anyway: :func:`load_sample` (used by preprocessing and check_data).
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DatasetError(
            f"{root}: dataset folder not found. Create one with "
            f"'python -m locseg.prepare synthetic {root}' or point data.root at your data."
        )
    images = _list_images(root / "images")
    if not images:
        raise DatasetError(
            f"{root}: no images found in {root / 'images'} (expected {', '.join(IMAGE_SUFFIXES)})."
            " Put the photographs there, or convert a public dataset with locseg.prepare."
        )
    masks = _list_images(root / "masks")
    orphans = sorted(set(masks) - set(images))
    if orphans:
        raise DatasetError(
            f"{root / 'masks'}: mask(s) without an image: {orphans[:5]}. "
            "Masks need an image with the same stem in images/; add it or remove the mask."
        )
    centers = _read_centers(root / CENTERS_FILE, images)
    samples, notes = [], []
    for image_id, image_path in images.items():
        mask_path = masks.get(image_id)
        row = centers.get(image_id)
        center, group = ((row[0], row[1]), row[2] or None) if row else (None, None)
        if row is None and mask_path is not None:
            center = mask_centroid(read_mask(mask_path, threshold=mask_threshold))
        if center is None and mask_path is None:
            notes.append(f"{image_id}: no centre and no mask (unlabelled, not used for training)")
        samples.append(Sample(image_id, image_path, mask_path, center, group))
    labelled = [s for s in samples if s.center is not None]
    if not labelled:
        raise DatasetError(
            f"{root}: no labelled image (no {CENTERS_FILE} rows and no masks). "
            f"Add {root / CENTERS_FILE} with columns image,x,y or masks in {root / 'masks'}."
        )
    return FundusDataset(root, samples, notes)


@dataclass
class LoadedSample:
    """The pixels of one sample, validated."""

    image: np.ndarray  # uint8 (H, W, 3) RGB or (H, W)
    mask: np.ndarray | None  # bool (H, W)
    center: tuple[float, float] | None  # native pixels


def load_sample(sample: Sample, mask_threshold: int | None = None) -> LoadedSample:
    """Read and validate one sample's image, mask and centre."""
    image = read_image(sample.image_path)
    height, width = image.shape[:2]
    mask = None
    if sample.mask_path is not None:
        mask = read_mask(sample.mask_path, (height, width), mask_threshold)
        if not mask.any():
            raise DatasetError(
                f"{sample.mask_path}: mask is empty (no foreground pixel). "
                "Re-export it, or delete it to keep the image as centre-only."
            )
    if sample.center is not None:
        x, y = sample.center
        if not (0 <= x < width and 0 <= y < height):
            raise DatasetError(
                f"{sample.image_path}: centre ({x:.1f}, {y:.1f}) lies outside the "
                f"{width}x{height} image. Check {CENTERS_FILE} (x is the column, y the row; "
                "a swapped x/y or a centre from a resized image shows up like this)."
            )
    return LoadedSample(image, mask, sample.center)


def check_dataset(root: str | Path, mask_threshold: int | None = None) -> list[str]:
    """Deep check: every file decoded and validated. Returns one message per problem."""
    try:
        dataset = load_dataset(root, mask_threshold)
    except DatasetError as error:
        return [str(error)]
    problems = []
    for sample in dataset.samples:
        try:
            load_sample(sample, mask_threshold)
        except DatasetError as error:
            problems.append(str(error))
    return problems


def describe(dataset: FundusDataset) -> dict:
    """Counts and ranges for a summary (reads image headers, not whole pipelines)."""
    sizes: dict[str, int] = {}
    for sample in dataset.samples:
        image = cv2.imread(str(sample.image_path), cv2.IMREAD_UNCHANGED)
        key = "unreadable" if image is None else f"{image.shape[1]}x{image.shape[0]}"
        sizes[key] = sizes.get(key, 0) + 1
    centres = np.array([s.center for s in dataset.centred()], dtype=float)
    groups = {s.group_id for s in dataset.samples}
    return {
        "root": str(dataset.root),
        "images": len(dataset.samples),
        "with_mask": len(dataset.masked()),
        "centre_only": len(dataset.centre_only()),
        "unlabelled": len(dataset.samples) - len(dataset.centred()),
        "groups": len(groups),
        "sizes_wxh": sizes,
        "centre_x_range": [float(centres[:, 0].min()), float(centres[:, 0].max())],
        "centre_y_range": [float(centres[:, 1].min()), float(centres[:, 1].max())],
    }


# --------------------------------------------------------------------------- writing


def write_image(path: str | Path, image: np.ndarray) -> Path:
    """Write an RGB or gray uint8 image atomically (format from the suffix)."""
    path = Path(path)
    pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), pixels):
            raise OSError(f"{path}: OpenCV could not write this image")
    return path


class DatasetWriter:
    """Write a dataset in the canonical format; ``centers.csv`` is written last, atomically.

    Use as a context manager: the CSV appears only if every image was written.
    """

    def __init__(self, root: str | Path, image_suffix: str = ".png"):
        self.root = Path(root)
        self.image_suffix = image_suffix
        self.rows: list[tuple[str, float, float, str]] = []
        self.ids: set[str] = set()
        (self.root / "images").mkdir(parents=True, exist_ok=True)

    def add(
        self,
        image_id: str,
        image: np.ndarray,
        mask: np.ndarray | None = None,
        center: tuple[float, float] | None = None,
        group: str | None = None,
    ) -> None:
        if image_id in self.ids:
            raise DatasetError(f"duplicate image id '{image_id}' while writing {self.root}")
        self.ids.add(image_id)
        write_image(self.root / "images" / f"{image_id}{self.image_suffix}", image)
        if mask is not None:
            (self.root / "masks").mkdir(exist_ok=True)
            binary = np.where(np.asarray(mask) > 0, 255, 0).astype(np.uint8)
            write_image(self.root / "masks" / f"{image_id}.png", binary)
        if center is not None:
            self.rows.append((image_id, float(center[0]), float(center[1]), group or ""))

    def close(self) -> Path:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        has_groups = any(row[3] for row in self.rows)
        writer.writerow(["image", "x", "y", "group"] if has_groups else ["image", "x", "y"])
        for image_id, x, y, group in self.rows:
            values = [image_id, f"{x:.3f}", f"{y:.3f}"]
            writer.writerow(values + [group] if has_groups else values)
        return write_text_atomic(self.root / CENTERS_FILE, buffer.getvalue())

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()


def write_dataset(root: str | Path, items: Iterable[tuple]) -> Path:
    """Write ``(image_id, image, mask, center, group)`` tuples as a canonical dataset."""
    with DatasetWriter(root) as writer:
        for item in items:
            writer.add(*item)
    return Path(root)
