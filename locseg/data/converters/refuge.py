"""REFUGE -> canonical layout (disc masks; centre = mask centroid).

Published layout of the 2018 challenge (source: the file lists of bioidiap/bob.ip.binseg
``data/refuge/default.json``)::

    Training400/Glaucoma/g0001.jpg              Training400/Non-Glaucoma/n0001.jpg
    Annotation-Training400/Disc_Cup_Masks/Glaucoma/g0001.bmp   (.../Non-Glaucoma/n0001.bmp)
    Annotation-Training400/Disc_Cup_Fovea_Illustration/...     (ignored)
    REFUGE-Validation400/V0001.jpg
    REFUGE-Validation400-GT/Disc_Cup_Masks/V0001.bmp
    Test400/T0001.jpg
    REFUGE-Test-GT/Disc_Cup_Masks/G/T0001.bmp   (.../N/...)
    Fovea_location.xlsx and the like beside them (fovea: ignored)

Masks: 255 background, 128 rim, 0 cup; the disc is rim + cup, i.e. every pixel darker than
the background by more than 64 grey levels (bob.ip.binseg uses <= 150). A mask whose border
is dark (a 0-background relabelling such as 0/1/2) is read as disc = above the background.
REFUGE publishes no disc centre, so the centre is the mask centroid and there is nothing to
disagree with: ``disagreements`` is always empty here.

Rather than fixed paths, every file is found by walking RAW_DIR: files under a folder whose
name has a token "mask(s)", "gt(s)", "groundtruth" or "annotation(s)" are mask candidates
(.bmp/.png), every other image file is a photograph, folders naming an "illustration" are
ignored, and photographs meet their mask by file stem (REFUGE stems are unique across
splits: g/n/V/T + number). This also covers the later re-packagings (train/Images +
train/Masks ...). Photographs without a mask (e.g. the test set without its GT) are skipped
with a note. REFUGE does not identify patients, so no group is written.
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
    convert,
    list_images,
    read_gray,
)
from locseg.data.dataset import DatasetError

HELP = "REFUGE (disc = rim + cup of the Disc_Cup_Masks; fovea ignored)"
MASK_TOKENS = {"mask", "masks", "gt", "gts", "groundtruth", "groundtruths"}
MASK_TOKENS |= {"annotation", "annotations"}
MASK_SUFFIXES = (".bmp", ".png")
SPLIT_WORDS = (("train", "train"), ("valid", "validation"), ("test", "test"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(
        parser, raw_help="the unzipped REFUGE download(s) (images and Disc_Cup_Masks beneath)"
    )


def prepare(args: argparse.Namespace) -> dict:
    raw = args.raw_dir
    if not raw.is_dir():
        raise DatasetError(f"{raw}: folder not found. Point RAW_DIR at the REFUGE download.")
    photos, masks = sort_files(raw)
    if not masks:
        raise DatasetError(
            f"{raw}: no disc/cup masks found (expected e.g. "
            "Annotation-Training400/Disc_Cup_Masks/Glaucoma/g0001.bmp). "
            "Unzip the annotation archives into RAW_DIR as well."
        )
    images, labels = by_stem(photos), by_stem(masks)
    notes, items = [], []
    for stem, path in images.items():
        if stem not in labels:
            notes.append(f"{path}: no disc/cup mask; skipped")
            continue
        items.append(Item(stem, path, _disc_loader(labels[stem]), split=split_of(path, raw)))
    orphans = sorted(set(labels) - set(images))
    if orphans:
        notes.append(f"masks without a photograph: {orphans[:5]} ({len(orphans)} in all)")
    return convert("refuge", items, args, notes)


def _tokens(name: str) -> set[str]:
    return set(re.split(r"[^a-z0-9]+", name.lower())) - {""}


def sort_files(raw: Path) -> tuple[list[Path], list[Path]]:
    """(photographs, masks) under ``raw``, told apart by the folders they sit in."""
    photos, masks = [], []
    for path in list_images(raw, recursive=True):
        folders = path.relative_to(raw).parts[:-1]
        if any("illustration" in part.lower() for part in folders):
            continue
        in_mask_folder = any(_tokens(part) & MASK_TOKENS for part in folders)
        if in_mask_folder:
            if path.suffix.lower() in MASK_SUFFIXES:
                masks.append(path)
        else:
            photos.append(path)
    return photos, masks


def split_of(path: Path, raw: Path) -> str:
    for part in path.relative_to(raw).parts[:-1]:
        for word, split in SPLIT_WORDS:
            if word in part.lower():
                return split
    return ""


def _disc_loader(path: Path):
    return lambda: disc_from_labels(read_gray(path))


def disc_from_labels(gray: np.ndarray) -> np.ndarray:
    """Disc (rim + cup) from a REFUGE label map, with the background read off the border."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = int(np.bincount(border.astype(np.int64)).argmax())
    if background >= 128:
        return gray <= background - 64
    return gray > background
