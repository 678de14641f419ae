"""RIM-ONE DL -> canonical layout.

Published layout (sources: github.com/miag-ull/rim-one-dl, its README and its scripts
``generate_dir_binary_masks.py`` / ``dcseg_to_binary_mask.py``, and public loaders)::

    RIM-ONE_DL_images/
      partitioned_by_hospital/{training_set,test_set}/{glaucoma,normal}/r1_Im001.png
      partitioned_randomly/{training_set,test_set}/{glaucoma,normal}/...  (the same 485 images)
    RIM-ONE_DL_reference_segmentations/{glaucoma,normal}/
      r1_Im001-1-Disc-T.png  r1_Im001-1-Cup-T.png    binary PNG masks (expert 1)
      r1_Im001-1-Disc-T.txt  r1_Im001-1-Cup-T.txt    the same contours in DCSeg TXT

Both partitions hold the same photographs; ``--partition`` picks the one whose training/test
membership the summary records (``splits``). The disc mask is ``<stem>-<E>-Disc-T.png``
(``--expert E``, default 1), foreground above half its brightest level.

Centre. The DCSeg TXT of a disc has an informative first line, then (lines 2 and 3) "the
coordinates of the center", then 16 contour points as x, y lines, 1-based (the authors' script
subtracts 1 and reads x before y). The centre is read the same way (x, y, 1-based) and checked
against the PNG mask. That reading is inferred from the script's comment; were it wrong, every
image would show up in ``disagreements``. The mask centroid is written by default
(``--center-source mask``): DCSeg's centre is the tool's reference point, not a curated label.

Groups. RIM-ONE r3 images are named ``r3_<G|N|S>-<patient>-<L|R>``: the eyes of one patient
share group ``r3_<G|N|S>-<patient>``. r1/r2 names (``r1_Im001``) identify no patient, so
those images get no group.

Variations handled: masks and TXT files are found anywhere under RAW_DIR by stem, whatever
class folder they sit in, case-insensitively (``-1-DISC-T.png`` occurs); reference files that
were unzipped among the images are not taken for photographs.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from locseg.data.converters.common import (
    Item,
    add_common_arguments,
    binarize,
    by_stem,
    convert,
    find_dirs,
    find_files,
    list_images,
    read_gray,
)
from locseg.data.dataset import DatasetError

HELP = "RIM-ONE DL (485 disc-centred images; expert disc masks; r3 patients grouped)"
PARTITIONS = {"by_hospital": "partitioned_by_hospital", "randomly": "partitioned_randomly"}
REFERENCE = re.compile(r"(?P<stem>.+)-(?P<expert>\d+)-(?P<kind>disc|cup)-t", re.IGNORECASE)
R3_PATIENT = re.compile(r"(r3_[a-z]+-\d+)-[lr](?![a-z0-9])", re.IGNORECASE)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(
        parser,
        raw_help="folder holding RIM-ONE_DL_images and RIM-ONE_DL_reference_segmentations",
        centre_default="mask",
    )
    parser.add_argument(
        "--partition",
        choices=tuple(PARTITIONS),
        default="by_hospital",
        help="published partition whose training/test split is recorded (default by_hospital)",
    )
    parser.add_argument(
        "--expert", type=int, default=1, help="reference segmentation to use (default 1)"
    )


def prepare(args: argparse.Namespace) -> dict:
    raw = args.raw_dir
    if not raw.is_dir():
        raise DatasetError(f"{raw}: folder not found. Point RAW_DIR at the RIM-ONE DL download.")
    partition = find_partition(raw, args.partition)
    masks, contours = reference_files(raw, args.expert)
    if not masks:
        raise DatasetError(
            f"{raw}: no reference disc mask '<image>-{args.expert}-Disc-T.png' found. Download "
            "RIM-ONE_DL_reference_segmentations (https://bit.ly/rim-one-dl-reference-segmentations)"
            " and unzip it into RAW_DIR."
        )
    photos = [p for p in list_images(partition, recursive=True) if not REFERENCE.match(p.stem)]
    notes, items = [], []
    for stem, path in by_stem(photos).items():
        key = stem.lower()
        if key not in masks:
            notes.append(f"{path}: no '{stem}-{args.expert}-Disc-T.png'; skipped")
            continue
        centre = read_dcseg_centre(contours[key], notes) if key in contours else None
        split = split_of(path, partition)
        items.append(Item(stem, path, _mask_loader(masks[key]), centre, group_of(stem), split))
    extra = {"partition": args.partition, "expert": args.expert}
    return convert("rimone", items, args, notes, extra)


def find_partition(raw: Path, partition: str) -> Path:
    found = find_dirs(raw, PARTITIONS[partition])
    if not found:
        raise DatasetError(
            f"{raw}: no '{PARTITIONS[partition]}' folder found (expected RIM-ONE_DL_images/"
            f"{PARTITIONS[partition]}/training_set/...). Unzip the RIM-ONE DL images into RAW_DIR."
        )
    return found[0]


def reference_files(raw: Path, expert: int) -> tuple[dict[str, Path], dict[str, Path]]:
    """Lower-case stem -> disc mask PNG, and -> disc DCSeg TXT, for one expert."""
    masks: dict[str, Path] = {}
    contours: dict[str, Path] = {}
    for path in find_files(raw, r".+-\d+-disc-t\.(png|txt)"):
        match = REFERENCE.fullmatch(path.stem)
        if match is None or int(match["expert"]) != expert:
            continue
        table = masks if path.suffix.lower() == ".png" else contours
        key = match["stem"].lower()
        if key in table:
            raise DatasetError(f"{path}: second reference file for '{key}' (first {table[key]}).")
        table[key] = path
    return masks, contours


def read_dcseg_centre(path: Path, notes: list[str]) -> tuple[float, float] | None:
    """The centre in lines 2-3 of a DCSeg TXT, as 0-based (x, y); None with a note if unreadable."""
    lines = path.read_text(errors="replace").splitlines()
    try:
        return float(lines[1]) - 1, float(lines[2]) - 1
    except (IndexError, ValueError):
        notes.append(f"{path}: no centre in lines 2-3; centre check skipped")
        return None


def split_of(path: Path, partition: Path) -> str:
    parts = path.relative_to(partition).parts
    top = parts[0].lower() if len(parts) > 1 else ""
    return {"training_set": "train", "test_set": "test"}.get(top, top)


def group_of(stem: str) -> str | None:
    match = R3_PATIENT.match(stem)
    return match.group(1) if match else None


def _mask_loader(path: Path):
    return lambda: binarize(read_gray(path))
