"""Any folder of photographs plus a masks folder and/or a centre CSV -> canonical layout.

Examples::

    python -m locseg.prepare folder RAW OUT --images photos --masks gt --mask-suffix _mask
    python -m locseg.prepare folder RAW OUT --centers labels.csv --id-col file \\
        --x-col cx --y-col cy --group-col patient

``--images``, ``--masks`` and ``--centers`` are relative to RAW_DIR (or absolute). The defaults
are the canonical layout: images/, masks/ and centers.csv (columns image, x, y[, group]), the
last two used when present.

- Ids are image file stems; CSV ids may carry a suffix or folders (their stem is used).
- The mask of image ``a.jpg`` is ``<masks>/a<--mask-suffix>.<any image suffix>``. A mask with
  0 and one other level is taken as it is; any other mask needs ``--mask-threshold T``
  (foreground > T), else the error names the file: silently binarising a soft or
  JPEG-damaged mask would hide a data problem.
- The CSV delimiter is sniffed among comma, semicolon and tab; x is the column and y the row,
  in native pixels; a bad row is an error naming the file and line.
- Where a CSV centre and a mask both exist they are checked against each other
  (``disagreements``); ``--center-source`` picks the one written (default: the CSV's).
- Photographs with neither label are skipped with a note, as are CSV rows without a photograph.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
from pathlib import Path

import numpy as np

from locseg.data.converters.common import (
    Item,
    add_common_arguments,
    by_stem,
    convert,
    list_images,
    read_gray,
    require_dir,
)
from locseg.data.dataset import CENTERS_FILE, IMAGE_SUFFIXES, DatasetError

HELP = "any images folder plus a masks folder and/or a centre CSV (configurable columns)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(
        parser,
        raw_help="root of the raw folder (other paths are relative to it)",
        centre_default="published",
    )
    parser.add_argument("--images", default="images", help="photographs folder (default images)")
    parser.add_argument("--masks", default=None, help="disc masks folder (default masks/ if any)")
    parser.add_argument(
        "--centers", default=None, help=f"centre CSV (default {CENTERS_FILE} if present)"
    )
    parser.add_argument("--id-col", default="image", help="CSV column of image ids (default image)")
    parser.add_argument("--x-col", default="x", help="CSV column of centre x = column (default x)")
    parser.add_argument("--y-col", default="y", help="CSV column of centre y = row (default y)")
    parser.add_argument(
        "--group-col", default=None, help="CSV column of patient/eye ids (default group if present)"
    )
    parser.add_argument(
        "--mask-suffix", default="", help="mask stem = image stem + this (e.g. _mask; default none)"
    )
    parser.add_argument(
        "--mask-threshold", type=int, default=None, metavar="T", help="mask foreground = grey > T"
    )


def prepare(args: argparse.Namespace) -> dict:
    raw = require_dir(args.raw_dir, "raw folder", "Point RAW_DIR at the folder to convert.")
    images_dir = require_dir(
        raw / args.images, "images folder", "Pass --images DIR (relative to RAW_DIR or absolute)."
    )
    masks_dir = _optional(raw, args.masks, "masks", "masks folder", "--masks DIR")
    table = _optional(raw, args.centers, CENTERS_FILE, "centre CSV", "--centers CSV")
    if masks_dir is None and table is None:
        raise DatasetError(
            f"{raw}: no labels (no masks/ folder and no {CENTERS_FILE}). "
            "Pass --masks DIR and/or --centers CSV."
        )
    notes: list[str] = []
    images = by_stem(list_images(images_dir))
    masks = mask_files(masks_dir, args.mask_suffix) if masks_dir else {}
    rows = read_centre_table(table, args) if table else {}
    items = []
    for stem, path in images.items():
        if stem not in masks and stem not in rows:
            notes.append(f"{path}: no mask and no centre row; skipped")
            continue
        centre, group = rows.get(stem, (None, None))
        load = _mask_loader(masks[stem], args.mask_threshold) if stem in masks else None
        items.append(Item(stem, path, load, centre, group))
    for name, found in (("mask", masks), ("centre row", rows)):
        orphans = sorted(set(found) - set(images))
        if orphans:
            notes.append(f"{name}(s) without a photograph in {images_dir}: {orphans[:5]}")
    inputs = [p for p in (images_dir, masks_dir) if p is not None]
    return convert("folder", items, args, notes, inputs=inputs)


def _optional(raw: Path, given: str | None, default: str, what: str, option: str) -> Path | None:
    """A path named by an option (must exist), or the default name if it exists, or None."""
    if given is None:
        path = raw / default
        return path if path.exists() else None
    path = raw / given
    if not path.exists():
        raise DatasetError(f"{path}: {what} not found. Check {option} (relative to RAW_DIR).")
    return path


def mask_files(folder: Path, suffix: str) -> dict[str, Path]:
    """Image stem -> mask file, for the files whose stem ends with ``suffix``."""
    size = len(suffix)
    chosen = [p for p in list_images(folder) if p.stem.lower().endswith(suffix.lower())]
    return by_stem(chosen, key=lambda p: p.stem[: len(p.stem) - size] if size else p.stem)


def _mask_loader(path: Path, threshold: int | None):
    return lambda: read_folder_mask(path, threshold)


def read_folder_mask(path: Path, threshold: int | None) -> np.ndarray:
    gray = read_gray(path)
    if threshold is not None:
        return gray > threshold
    levels = np.unique(gray)
    if len(levels) > 2 or (len(levels) == 2 and levels[0] != 0):
        raise DatasetError(
            f"{path}: mask is not binary ({len(levels)} grey levels, e.g. "
            f"{levels[:5].tolist()}). Pass --mask-threshold 127 to binarise it."
        )
    return gray > 0


def read_centre_table(
    path: Path, args: argparse.Namespace
) -> dict[str, tuple[tuple[float, float], str | None]]:
    """Image stem -> ((x, y), group) from a CSV with the configured column names."""
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    try:
        dialect = csv.Sniffer().sniff(text.splitlines()[0] if text else "", delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.DictReader(io.StringIO(text), dialect=dialect)
    fields = [name.strip() for name in reader.fieldnames or []]
    reader.fieldnames = fields
    group_col = args.group_col or ("group" if "group" in fields else None)
    missing = [c for c in (args.id_col, args.x_col, args.y_col, group_col) if c and c not in fields]
    if missing:
        raise DatasetError(
            f"{path}: no column(s) {missing}; its columns are {fields}. "
            "Name them with --id-col, --x-col, --y-col and --group-col."
        )
    rows: dict[str, tuple[tuple[float, float], str | None]] = {}
    for line, row in enumerate(reader, start=2):
        stem = image_stem(row[args.id_col] or "")
        if not stem:
            continue
        where = f"{path}:{line}"
        if stem in rows:
            raise DatasetError(f"{where}: second row for image '{stem}'; keep one.")
        rows[stem] = (_centre(row[args.x_col], row[args.y_col], where), _group(row, group_col))
    return rows


def image_stem(value: str) -> str:
    """'dir/a.jpg' -> 'a'; 'a' and 'a.01' stay as they are (only image suffixes are dropped)."""
    name = Path(value.strip()).name
    return Path(name).stem if Path(name).suffix.lower() in IMAGE_SUFFIXES else name


def _centre(x_text: str | None, y_text: str | None, where: str) -> tuple[float, float]:
    try:
        x, y = float(x_text), float(y_text)
    except (TypeError, ValueError):
        raise DatasetError(
            f"{where}: centre ({x_text!r}, {y_text!r}) is not a pair of numbers. "
            "Fix or delete the row."
        ) from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise DatasetError(f"{where}: centre ({x}, {y}) is not finite. Fix or delete the row.")
    return x, y


def _group(row: dict, group_col: str | None) -> str | None:
    value = (row.get(group_col) or "").strip() if group_col else ""
    return value or None
