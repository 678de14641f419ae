"""Shared machinery of the public-dataset converters (``python -m locseg.prepare NAME``).

A converter finds the files of one published layout and describes each image as an
:class:`Item`: the image file, a disc mask read on demand, the centre the dataset publishes
(if any) and a patient/eye group (if any). :func:`convert` then writes the items in the
canonical layout, checks every published centre against its mask (a swapped x/y or a
row/column mix-up shows up as a disagreement) and returns the summary dict.

Images are copied byte for byte (no re-encoding of JPEGs); masks are written as 0/255 PNGs.
"""

from __future__ import annotations

import argparse
import math
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.progress import track

from locseg.data.dataset import (
    CENTERS_FILE,
    IMAGE_SUFFIXES,
    DatasetError,
    DatasetWriter,
    equivalent_radius,
    mask_centroid,
    read_image,
    write_image,
)
from locseg.io import atomic_path, write_json_atomic

SUMMARY_FILE = "prepare_summary.json"
MAX_LISTED = 20  # notes listed in the printed summary (all are in SUMMARY_FILE)

# --------------------------------------------------------------------------- command line


def add_common_arguments(
    parser: argparse.ArgumentParser, raw_help: str, centre_default: str | None = None
) -> None:
    """The positional RAW_DIR and OUT_DIR and the options every converter shares."""
    parser.add_argument("raw_dir", type=Path, help=raw_help)
    parser.add_argument(
        "out_dir", type=Path, help="canonical dataset folder to write (images/ masks/ centers.csv)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace images/, masks/ and centers.csv in a non-empty OUT_DIR",
    )
    parser.add_argument(
        "--max-offset",
        type=float,
        default=0.5,
        metavar="R",
        help="report a published centre farther than R equivalent disc radii from its mask "
        "centroid (or outside the mask) as a disagreement (default 0.5)",
    )
    if centre_default is not None:
        parser.add_argument(
            "--center-source",
            choices=("published", "mask"),
            default=centre_default,
            help="centre written to centers.csv where both exist: the dataset's published "
            f"centre or the mask centroid (default {centre_default})",
        )


# --------------------------------------------------------------------------- finding files


def require_dir(path: Path, what: str, hint: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{path}: {what} not found. {hint}")
    return path


def _visible_dirs(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def child_dirs(parent: Path | None, pattern: str) -> list[Path]:
    """Immediate sub-folders whose name matches ``pattern`` (a regex, case-insensitive)."""
    if parent is None:
        return []
    return [p for p in _visible_dirs(parent) if re.fullmatch(pattern, p.name, re.IGNORECASE)]


def child_dir(parent: Path | None, pattern: str) -> Path | None:
    """The first immediate sub-folder whose name matches ``pattern``, or None."""
    found = child_dirs(parent, pattern)
    return found[0] if found else None


def find_dirs(root: Path, pattern: str, max_depth: int = 4) -> list[Path]:
    """Folders under ``root`` (itself included) whose name matches ``pattern``, shallowest first.

    Unzipped downloads often nest a folder in a folder of the same name, so layouts are
    searched for rather than assumed to start at ``root``.
    """
    found, level = [], [root]
    for _ in range(max_depth + 1):
        found += [d for d in level if re.fullmatch(pattern, d.name, re.IGNORECASE)]
        level = [child for d in level for child in _visible_dirs(d)]
    return found


def find_files(root: Path | None, pattern: str) -> list[Path]:
    """Files anywhere under ``root`` whose name matches ``pattern`` (case-insensitive), sorted."""
    if root is None or not root.is_dir():
        return []
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and not p.name.startswith(".")
        and re.fullmatch(pattern, p.name, re.IGNORECASE)
    )


def list_images(folder: Path | None, recursive: bool = False) -> list[Path]:
    """Image files (any case of a known suffix) in ``folder``, sorted; hidden files skipped."""
    if folder is None or not folder.is_dir():
        return []
    paths = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p
        for p in paths
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


def by_stem(paths: Iterable[Path], key: Callable[[Path], str] = lambda p: p.stem) -> dict:
    """Map ``key(path)`` -> path; two files with one key is an error naming both."""
    found: dict[str, Path] = {}
    for path in paths:
        name = key(path)
        if name in found:
            raise DatasetError(
                f"{path}: same id '{name}' as {found[name]}. Ids must be unique; "
                "remove the duplicate copy from the raw folder."
            )
        found[name] = path
    return found


# --------------------------------------------------------------------------- reading labels


def read_gray(path: Path) -> np.ndarray:
    """A label image as uint8 (H, W): colour channels collapse to their maximum."""
    image = read_image(path)
    return image.max(axis=2) if image.ndim == 3 else image


def binarize(gray: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Foreground = ``> threshold``, by default above half the brightest level (0/1, 0/255...)."""
    if threshold is None:
        threshold = float(gray.max()) / 2
    return gray > threshold


def parse_numbers(text: str) -> list[float]:
    return [float(n) for n in re.findall(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", text)]


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header; the pixels are decoded only if that fails."""
    try:
        from PIL import Image

        with Image.open(path) as image:
            return image.size
    except Exception:  # noqa: BLE001 - any header failure falls back to a full decode
        pixels = read_image(path)
        return pixels.shape[1], pixels.shape[0]


# --------------------------------------------------------------------------- checking centres


def centre_disagreement(
    image_id: str, centre: tuple[float, float], mask: np.ndarray, max_offset: float
) -> str | None:
    """Why a published centre does not fit its mask, or None when it does.

    It fits when it lies inside the mask and within ``max_offset`` equivalent radii of the
    centroid. The message says when reading it as (y, x) would fit: the usual culprit.
    """
    cx, cy = mask_centroid(mask)
    radius = max(equivalent_radius(mask), 1.0)
    x, y = centre
    height, width = mask.shape
    col, row = int(round(x)), int(round(y))
    inside = 0 <= col < width and 0 <= row < height and bool(mask[row, col])
    offset = math.hypot(x - cx, y - cy)
    if inside and offset <= max_offset * radius:
        return None
    where = "lies outside the disc mask and " if not inside else ""
    text = (
        f"{image_id}: published centre ({x:.1f}, {y:.1f}) {where}is {offset:.1f} px "
        f"({offset / radius:.2f} disc radii) from the mask centroid ({cx:.1f}, {cy:.1f})"
    )
    swapped = math.hypot(y - cx, x - cy)
    if swapped <= max_offset * radius:
        text += f"; read as (y, x) it is {swapped:.1f} px away, so x and y look swapped"
    return text


# --------------------------------------------------------------------------- writing


def prepare_output(out_dir: Path, overwrite: bool, inputs: Iterable[Path] = ()) -> Path:
    """Make ``out_dir`` ready: refuse to mix with an earlier dataset unless ``overwrite``."""
    out_dir = out_dir.expanduser().resolve()
    owned = [out_dir / "images", out_dir / "masks", out_dir / CENTERS_FILE, out_dir / SUMMARY_FILE]
    for source in inputs:
        source = source.expanduser().resolve()
        if source == out_dir or any(source.is_relative_to(p) for p in owned):
            raise DatasetError(
                f"{out_dir}: the output folder would overwrite the raw data in {source}. "
                "Choose another OUT_DIR."
            )
    existing = [p for p in owned if p.exists()]
    if existing and not overwrite:
        raise DatasetError(
            f"{out_dir}: already holds a dataset ({', '.join(p.name for p in existing)}). "
            "Pass --overwrite to replace it, or choose an empty OUT_DIR."
        )
    for path in existing:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


class CanonicalWriter(DatasetWriter):
    """A :class:`DatasetWriter` that copies image files instead of re-encoding pixels."""

    def add_file(
        self,
        image_id: str,
        source: Path,
        mask: np.ndarray | None = None,
        center: tuple[float, float] | None = None,
        group: str | None = None,
    ) -> Path:
        if image_id in self.ids:
            raise DatasetError(f"duplicate image id '{image_id}' while writing {self.root}")
        self.ids.add(image_id)
        target = self.root / "images" / f"{image_id}{source.suffix.lower()}"
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
        if mask is not None:
            binary = np.where(np.asarray(mask) > 0, 255, 0).astype(np.uint8)
            write_image(self.root / "masks" / f"{image_id}.png", binary)
        if center is not None:
            self.rows.append((image_id, float(center[0]), float(center[1]), group or ""))
        return target


@dataclass
class Item:
    """One image of a raw dataset and where its labels come from."""

    image_id: str  # canonical id (the output file stem)
    image_path: Path
    load_mask: Callable[[], np.ndarray] | None = None  # bool (H, W) disc mask, read when written
    published: tuple[float, float] | None = None  # the dataset's own disc centre (x, y)
    group: str | None = None
    split: str = ""


@dataclass
class _Tally:
    images: int = 0
    masks: int = 0
    centres: int = 0


def _centre_in_image(centre: tuple[float, float], size: tuple[int, int]) -> bool:
    return 0 <= centre[0] < size[0] and 0 <= centre[1] < size[1]


def convert(
    name: str,
    items: list[Item],
    args: argparse.Namespace,
    notes: list[str],
    extra: dict | None = None,
    details: dict | None = None,
    inputs: Iterable[Path] = (),
) -> dict:
    """Write ``items`` to ``args.out_dir`` and return the summary.

    The summary, every note and ``details`` (too long to print) are saved as SUMMARY_FILE.
    """
    if not items:
        found = "; ".join(notes[:3]) or "no image files"
        raise DatasetError(
            f"{args.raw_dir}: no image with a disc mask or centre found for {name} ({found}). "
            "Point RAW_DIR at the unzipped download."
        )
    out_dir = prepare_output(args.out_dir, args.overwrite, [args.raw_dir, *inputs])
    tally, groups, splits, disagreements = _Tally(), set(), {}, []
    with CanonicalWriter(out_dir) as writer:
        for item in track(items, description=f"{name}: writing {out_dir}", transient=True):
            mask, centre = _labels(item, args, notes, disagreements)
            if centre is None:
                notes.append(f"{item.image_id}: skipped, no usable mask or centre")
                continue
            writer.add_file(item.image_id, item.image_path, mask, centre, item.group)
            tally.images += 1
            tally.masks += mask is not None
            tally.centres += 1
            groups.add(item.group or item.image_id)
            if item.split:
                splits[item.split] = splits.get(item.split, 0) + 1
    summary = {
        "dataset": name,
        "out_dir": str(out_dir),
        "images": tally.images,
        "masks": tally.masks,
        "centres": tally.centres,
        "groups": len(groups),
        "splits": splits,
        **(extra or {}),
        "notes": len(notes),
        "disagreements": disagreements,
    }
    write_json_atomic(out_dir / SUMMARY_FILE, {**summary, "note_list": notes, **(details or {})})
    if notes:
        more = len(notes) - MAX_LISTED
        summary["note_list"] = notes[:MAX_LISTED] + (
            [f"... and {more} more in {out_dir / SUMMARY_FILE}"] if more > 0 else []
        )
    return summary


def _labels(
    item: Item, args: argparse.Namespace, notes: list[str], disagreements: list[str]
) -> tuple[np.ndarray | None, tuple[float, float] | None]:
    """The item's usable mask and the centre to write; problems go to the two lists."""
    size = image_size(item.image_path)
    mask = _checked_mask(item, size, notes)
    published = item.published
    if published is not None:
        problem = _published_problem(item.image_id, published, mask, size, args)
        if problem:
            (disagreements if mask is not None else notes).append(problem)
        if not _centre_in_image(published, size):
            published = None  # check_dataset would reject it; the mask centroid stands in
    centroid = mask_centroid(mask) if mask is not None else None
    use_published = getattr(args, "center_source", "published") == "published"
    if published is not None and (use_published or centroid is None):
        return mask, published
    return mask, centroid


def _published_problem(
    image_id: str,
    centre: tuple[float, float],
    mask: np.ndarray | None,
    size: tuple[int, int],
    args: argparse.Namespace,
) -> str | None:
    """What is wrong with a published centre: off its mask, or outside its image."""
    problem = (
        centre_disagreement(image_id, centre, mask, args.max_offset) if mask is not None else None
    )
    if _centre_in_image(centre, size):
        return problem
    outside = f"lies outside the {size[0]}x{size[1]} image; not used"
    if problem is None:
        return f"{image_id}: published centre ({centre[0]:.1f}, {centre[1]:.1f}) {outside}"
    return f"{problem}; it {outside}"


def _checked_mask(item: Item, size: tuple[int, int], notes: list[str]) -> np.ndarray | None:
    """The item's mask if it is usable; otherwise None and a note saying why."""
    if item.load_mask is None:
        return None
    mask = np.asarray(item.load_mask(), dtype=bool)
    if mask.shape != (size[1], size[0]):
        notes.append(
            f"{item.image_id}: mask is {mask.shape[1]}x{mask.shape[0]} but its image "
            f"{item.image_path} is {size[0]}x{size[1]}; mask dropped"
        )
        return None
    if not mask.any():
        notes.append(f"{item.image_id}: disc mask is empty; mask dropped")
        return None
    return mask
