"""Drishti-GS1 -> canonical layout.

Published layout (sources: the file lists of bioidiap/bob.ip.binseg
``data/drishtigs1/optic-disc.json`` and several public Drishti-GS1 loaders on GitHub)::

    Drishti-GS1_files/
      Training/Images/drishtiGS_002.png
      Training/GT/drishtiGS_002/SoftMap/drishtiGS_002_ODsegSoftmap.png
      Training/GT/drishtiGS_002/AvgBoundary/drishtiGS_002_diskCenter.txt
      Test/Images/drishtiGS_001.png
      Test/Test_GT/drishtiGS_001/...                (same files as Training/GT)

Labels:
- the soft map is the mean of 4 experts' disc masks, grey = 255 * k / 4 where k experts agree
  (bob.ip.binseg thresholds it at > 254 for "all" and > 0 for "any"); ``--min-experts K``
  keeps the pixels at least K experts marked (default 2 of 4);
- ``*_diskCenter.txt`` holds two integers read as "row col" by the public loaders
  (``--center-order xy`` for the other reading); a wrong reading shows up as disagreements.

Variations handled: the layout may be nested (``Drishti-GS1_files/Drishti-GS1_files``) or
RAW_DIR may be ``Drishti-GS1_files`` itself; names match case-insensitively; the ground-truth
folder is any child of a split whose name contains "GT"; the soft map and centre file may lie
anywhere in the image's ground-truth folder (or flat in the GT folder); a soft map stored as
expert counts (0..4) is read as such.
A split without ground truth (the test labels ship separately in some copies) is skipped
with a note. Drishti-GS1 does not identify patients, so no group is written.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np

from locseg.data.converters.common import (
    Item,
    add_common_arguments,
    by_stem,
    child_dir,
    convert,
    find_dirs,
    find_files,
    list_images,
    parse_numbers,
    read_gray,
)
from locseg.data.dataset import DatasetError

HELP = "Drishti-GS1 (Training/Test; 4-expert soft disc maps, published disc centres)"
N_EXPERTS = 4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(
        parser,
        raw_help="the unzipped Drishti-GS1 download (holding Drishti-GS1_files/Training, /Test)",
        centre_default="published",
    )
    parser.add_argument(
        "--min-experts",
        type=int,
        default=2,
        choices=range(1, N_EXPERTS + 1),
        metavar="K",
        help="disc = pixels marked by at least K of the 4 experts (1-4, default 2)",
    )
    parser.add_argument(
        "--center-order",
        choices=("rowcol", "xy"),
        default="rowcol",
        help="order of the two numbers in *_diskCenter.txt (default rowcol)",
    )


def prepare(args: argparse.Namespace) -> dict:
    splits = find_splits(args.raw_dir)
    items, notes = [], []
    for split_dir in splits:
        items += split_items(split_dir, args, notes)
    extra = {"min_experts": args.min_experts, "center_order": args.center_order}
    return convert("drishti", items, args, notes, extra)


def find_splits(raw_dir: Path) -> list[Path]:
    """The Training and Test folders: the ones holding an Images folder."""
    if not raw_dir.is_dir():
        raise DatasetError(f"{raw_dir}: folder not found. Point RAW_DIR at the Drishti-GS1 files.")
    splits = [d for d in find_dirs(raw_dir, r"training|test") if child_dir(d, "images")]
    if not splits:
        raise DatasetError(
            f"{raw_dir}: no Drishti-GS1 split found (expected Drishti-GS1_files/Training/Images "
            "and Drishti-GS1_files/Test/Images). Point RAW_DIR at the unzipped download."
        )
    return splits


def split_items(split_dir: Path, args: argparse.Namespace, notes: list[str]) -> list[Item]:
    images = by_stem(list_images(child_dir(split_dir, "images")))
    gt_root = child_dir(split_dir, r".*gt.*")
    if gt_root is None:
        notes.append(f"{split_dir}: no ground-truth folder (GT or Test_GT); {len(images)} skipped")
        return []
    items = []
    for stem, image_path in images.items():
        gt_dir = child_dir(gt_root, re.escape(stem)) or gt_root  # per-image folder, or flat
        softmaps = find_files(gt_dir, rf"{re.escape(stem)}_ODsegSoftmap\.(png|tif|tiff|bmp)")
        centre_files = find_files(gt_dir, rf"{re.escape(stem)}_diskCenter\.txt")
        centre = read_centre(centre_files[0], args.center_order, notes) if centre_files else None
        if not softmaps and centre is None:
            notes.append(f"{stem}: no soft map and no disc centre in {gt_root}; skipped")
            continue
        load = _mask_loader(softmaps[0], args.min_experts) if softmaps else None
        items.append(Item(stem, image_path, load, centre, split=split_dir.name))
    return items


def _mask_loader(path: Path, min_experts: int):
    return lambda: soft_map_mask(read_gray(path), min_experts)


def soft_map_mask(soft: np.ndarray, min_experts: int) -> np.ndarray:
    """Pixels marked by at least ``min_experts`` experts.

    Grey levels sit at 255 * k / 4 (rounded either way), so k is recovered to the nearest
    expert; a map that stores the counts themselves (max <= 4) is read directly.
    """
    levels = soft.astype(np.float32)
    experts = levels if levels.max() <= N_EXPERTS else levels * N_EXPERTS / 255.0
    return experts >= min_experts - 0.5


def read_centre(path: Path, order: str, notes: list[str]) -> tuple[float, float] | None:
    """The published disc centre as (x, y), or None (with a note) if the file is malformed."""
    numbers = parse_numbers(path.read_text(errors="replace"))
    if len(numbers) < 2:
        notes.append(f"{path}: expected two numbers (row col) for the disc centre; ignored")
        return None
    first, second = numbers[:2]
    return (second, first) if order == "rowcol" else (first, second)
