"""IDRiD -> canonical layout: Part C disc centres (516 images), Part A disc masks (81 images).

This is the paper's setting in public: many cheap centre labels, few expert masks.

Published layout (sources: idrid.grand-challenge.org/Data and public IDRiD loaders on GitHub
that spell out these paths)::

    A. Segmentation/
      1. Original Images/a. Training Set/IDRiD_01.jpg ... IDRiD_54.jpg
                         b. Testing Set/IDRiD_55.jpg ... IDRiD_81.jpg
      2. All Segmentation Groundtruths/a. Training Set/5. Optic Disc/IDRiD_01_OD.tif
                                       b. Testing Set/5. Optic Disc/IDRiD_55_OD.tif
    C. Localization/
      1. Original Images/a. Training Set/IDRiD_001.jpg ... IDRiD_413.jpg
                         b. Testing Set/IDRiD_001.jpg ... IDRiD_103.jpg
      2. Groundtruths/1. Optic Disc Center Location/
           a. IDRiD_OD_Center_Training Set_Markups.csv     Image No, X- Coordinate, Y - Coordinate
           b. IDRiD_OD_Center_Testing Set_Markups.csv
      (2. Groundtruths/2. Fovea Center Location/ is ignored)

Ids. Part C numbering restarts in its test set (train IDRiD_001..413 and test IDRiD_001..103
are different photographs), so Part C images become ``train_IDRiD_001`` / ``test_IDRiD_001``.
Part A ids (IDRiD_01..81) are unique and kept as they are.

Overlap between the parts. The two parts number their images differently and no published
table maps one onto the other (IDRiD_01 is not IDRiD_001). The challenge describes the 516
images as the whole dataset, so Part A's 81 may be among them; left as two images, such a
photograph could land in two folds. So by default (``--match content``) every Part A image is
compared with every Part C image by the data layer's content fingerprint
(:mod:`locseg.data.fingerprints`, the one pools and ``check_data`` use): identical bytes, or a
score up to ``--match-tolerance`` (default ``DEFAULT_THRESHOLD``, 0.15; re-encoded, resized or
re-exposed copies score below 0.04, different photographs above 0.3). Pairs are taken one to one,
closest first. A match becomes ONE canonical image: Part A's id, file and mask, Part C's centre,
and that centre is checked against the mask (disagreements). An unmatched Part A image gets its
mask centroid as centre; ``--match none`` keeps the parts apart. The matches found are listed in
prepare_summary.json.

Variations handled: CSV with a BOM, a header row (the X and Y columns are found by name,
default columns 2 and 3), padding columns and blank rows; OD masks 0/1, 0/255 or coloured
(foreground = above half the brightest level); names matched case-insensitively; a nested unzip
(``C. Localization/C. Localization``); either part alone. IDRiD does not identify patients, so
no group is written.
"""

from __future__ import annotations

import argparse
import csv
import re
from dataclasses import replace
from pathlib import Path

from locseg.data.converters.common import (
    Item,
    add_common_arguments,
    binarize,
    by_stem,
    child_dir,
    convert,
    find_dirs,
    list_images,
    read_gray,
)
from locseg.data.dataset import DatasetError
from locseg.data.fingerprints import DEFAULT_THRESHOLD, find_duplicates, match_one_to_one

HELP = "IDRiD (Part C disc centres for 516 images, Part A disc masks for 81)"
PART_A = r"a[\s._-]*segmentation"
PART_C = r"c[\s._-]*locali[sz]ation"
ORIGINALS = r".*original\s*images.*"
GROUNDTRUTHS = r".*ground\s*truths?.*"
OPTIC_DISC = r".*optic\s*dis[ck].*"
SPLITS = {"train": r".*training.*", "test": r".*testing.*"}
IDRID_ID = r"idrid_\d+"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(
        parser,
        raw_help="the unzipped IDRiD download (holding 'A. Segmentation' and/or 'C. Localization')",
        centre_default="published",
    )
    parser.add_argument(
        "--match",
        choices=("content", "none"),
        default="content",
        help="find Part A photographs that are also in Part C and merge them (default content)",
    )
    parser.add_argument(
        "--match-tolerance",
        type=float,
        default=DEFAULT_THRESHOLD,
        metavar="T",
        help="content-fingerprint score up to which two photos are one "
        f"(0 = identical; default {DEFAULT_THRESHOLD})",
    )


def prepare(args: argparse.Namespace) -> dict:
    raw = args.raw_dir
    if not raw.is_dir():
        raise DatasetError(f"{raw}: folder not found. Point RAW_DIR at the IDRiD download.")
    part_a, part_c = find_part(raw, PART_A), find_part(raw, PART_C)
    if part_a is None and part_c is None:
        raise DatasetError(
            f"{raw}: neither 'A. Segmentation' nor 'C. Localization' (each with a "
            "'1. Original Images' folder) found. Point RAW_DIR at the unzipped IDRiD download."
        )
    notes: list[str] = []
    a_items = part_a_items(part_a, notes) if part_a else []
    c_items = part_c_items(part_c, notes) if part_c else []
    matches = match_parts(a_items, c_items, args.match_tolerance) if args.match == "content" else {}
    items = merge(a_items, c_items, matches)
    extra = {"part_a_images": len(a_items), "part_c_images": len(c_items), "matched": len(matches)}
    details = {"matched_a_to_c": {a: c.image_id for a, c in sorted(matches.items())}}
    return convert("idrid", items, args, notes, extra, details)


def find_part(raw: Path, pattern: str) -> Path | None:
    """The shallowest folder named like the part that holds its '1. Original Images'."""
    for folder in find_dirs(raw, pattern):
        if child_dir(folder, ORIGINALS):
            return folder
    return None


def _require_child(parent: Path | None, pattern: str, what: str) -> Path:
    found = child_dir(parent, pattern)
    if found is None:
        raise DatasetError(
            f"{parent}: no {what} folder inside. The published IDRiD layout is expected; "
            "re-extract the download without renaming its folders."
        )
    return found


# --------------------------------------------------------------------------- Part A: masks


def part_a_items(part: Path, notes: list[str]) -> list[Item]:
    originals = _require_child(part, ORIGINALS, "'1. Original Images'")
    truths = _require_child(part, GROUNDTRUTHS, "'2. All Segmentation Groundtruths'")
    items = []
    for split, pattern in SPLITS.items():
        image_dir = child_dir(originals, pattern)
        if image_dir is None:
            continue
        disc_dir = child_dir(child_dir(truths, pattern), OPTIC_DISC)
        masks = by_stem(list_images(disc_dir), key=_image_id_of_mask)
        for stem, path in by_stem(list_images(image_dir)).items():
            if stem not in masks:
                notes.append(f"{stem}: no optic-disc mask in {disc_dir}; Part A image skipped")
                continue
            items.append(Item(stem, path, _mask_loader(masks[stem]), split=f"A_{split}"))
    if not items:
        raise DatasetError(
            f"{truths}: no optic-disc mask found (expected 'a. Training Set/5. Optic Disc/"
            "IDRiD_01_OD.tif'). Re-extract the Part A download."
        )
    return items


def _image_id_of_mask(path: Path) -> str:
    return re.sub(r"_od$", "", path.stem, flags=re.IGNORECASE)


def _mask_loader(path: Path):
    return lambda: binarize(read_gray(path))


# --------------------------------------------------------------------------- Part C: centres


def part_c_items(part: Path, notes: list[str]) -> list[Item]:
    originals = _require_child(part, ORIGINALS, "'1. Original Images'")
    truths = _require_child(part, GROUNDTRUTHS, "'2. Groundtruths'")
    disc = _require_child(truths, OPTIC_DISC, "'1. Optic Disc Center Location'")
    items = []
    for split, pattern in SPLITS.items():
        image_dir = child_dir(originals, pattern)
        if image_dir is None:
            continue
        table = markup_table(disc, split)
        centres = read_markups(table, notes)
        images = by_stem(list_images(image_dir))
        for stem, path in images.items():
            centre = centres.get(stem.lower())
            if centre is None:
                notes.append(f"{path}: no row in {table.name}; skipped")
                continue
            items.append(Item(f"{split}_{stem}", path, published=centre, split=f"C_{split}"))
        orphans = sorted(set(centres) - {stem.lower() for stem in images})
        if orphans:
            notes.append(f"{table}: rows without an image in {image_dir}: {orphans[:5]}")
    return items


def markup_table(folder: Path, split: str) -> Path:
    """The CSV of one split's disc centres: the one whose name says Training / Testing."""
    word = "train" if split == "train" else "test"
    files = sorted(p for p in folder.iterdir() if p.is_file() and word in p.name.lower())
    tables = [p for p in files if p.suffix.lower() == ".csv"]
    if tables:
        return tables[0]
    hint = f" Found {[p.name for p in files]}: save it as CSV." if files else ""
    raise DatasetError(
        f"{folder}: no CSV of {split} disc centres (expected "
        f"'IDRiD_OD_Center_{'Training' if word == 'train' else 'Testing'} Set_Markups.csv').{hint}"
    )


def read_markups(path: Path, notes: list[str]) -> dict[str, tuple[float, float]]:
    """Map lower-case image id -> (x, y) from a markup CSV; the X/Y columns found by name."""
    centres: dict[str, tuple[float, float]] = {}
    x_col, y_col = 1, 2
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
        for line, row in enumerate(csv.reader(handle), start=1):
            cells = [cell.strip() for cell in row]
            if not cells or not cells[0]:
                continue
            if not re.fullmatch(IDRID_ID, cells[0], re.IGNORECASE):
                x_col, y_col = _header_columns(cells, x_col, y_col)
                continue
            try:
                centres[cells[0].lower()] = (float(cells[x_col]), float(cells[y_col]))
            except (IndexError, ValueError):
                notes.append(f"{path}:{line}: centre {cells[1:3]} is not two numbers; ignored")
    return centres


def _header_columns(cells: list[str], x_col: int, y_col: int) -> tuple[int, int]:
    for index, cell in enumerate(cells):
        name = cell.lower()
        if name.startswith("x"):
            x_col = index
        elif name.startswith("y"):
            y_col = index
    return x_col, y_col


# --------------------------------------------------------------------------- A <-> C overlap


def match_parts(a_items: list[Item], c_items: list[Item], tolerance: float) -> dict[str, Item]:
    """Part A id -> the Part C item showing the same photograph (one-to-one, closest first)."""
    if not a_items or not c_items:
        return {}
    c_by_path = {item.image_path: item for item in c_items}
    a_by_path = {item.image_path: item for item in a_items}
    pairs = find_duplicates(list(a_by_path), list(c_by_path), threshold=tolerance)
    return {a_by_path[p.query].image_id: c_by_path[p.reference] for p in match_one_to_one(pairs)}


def merge(a_items: list[Item], c_items: list[Item], matches: dict[str, Item]) -> list[Item]:
    """One item per photograph: a matched Part A item takes its Part C centre."""
    merged = [
        replace(a, published=matches[a.image_id].published) if a.image_id in matches else a
        for a in a_items
    ]
    used = {c.image_id for c in matches.values()}
    return merged + [c for c in c_items if c.image_id not in used]
