"""Folds and nested label fractions: pure functions plus one persisted splits file.

The design is paired: for a given fold every fraction and every arm sees the same test images and
the same validation images, and the 10% training subset lies inside the 20% one, and so on. The
training images of a fold are stored in one fixed random order; a fraction is a prefix of it.
Like nnU-Net's ``splits_final.json``, the file is computed once and reused by every run.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from locseg.data.dataset import DatasetError, FundusDataset, Sample
from locseg.data.fingerprints import DEFAULT_THRESHOLD, within_duplicates
from locseg.io import write_json_atomic

SPLITS_FILE = "splits_final.json"


def grouped_folds(
    ids: Sequence[str], groups: Sequence[str], num_folds: int, seed: int
) -> list[list[str]]:
    """Partition ``ids`` into ``num_folds`` folds; images of one group never straddle two folds.

    Groups are shuffled, then placed largest first into the currently smallest fold.
    """
    members: dict[str, list[str]] = defaultdict(list)
    for image_id, group in zip(ids, groups, strict=True):
        members[group].append(image_id)
    if len(members) < num_folds:
        raise DatasetError(
            f"{len(members)} patient groups cannot fill {num_folds} folds; "
            f"set data.num_folds <= {len(members)} or add images."
        )
    rng = np.random.default_rng(seed)
    order = [list(members)[i] for i in rng.permutation(len(members))]
    order.sort(key=lambda group: -len(members[group]))  # stable: ties keep the shuffled order
    folds: list[list[str]] = [[] for _ in range(num_folds)]
    for group in order:
        smallest = min(range(num_folds), key=lambda k: len(folds[k]))
        folds[smallest].extend(members[group])
    return [sorted(fold) for fold in folds]


def split_validation(
    ids: Sequence[str], groups: Sequence[str], val_fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Carve a grouped validation set (at least one group) from training ids: (train, val)."""
    by_group: dict[str, list[str]] = defaultdict(list)
    for image_id, group in zip(ids, groups, strict=True):
        by_group[group].append(image_id)
    names = sorted(by_group)
    rng = np.random.default_rng(seed)
    wanted = max(1, round(val_fraction * len(ids)))
    val: list[str] = []
    for index in rng.permutation(len(names)):
        if len(val) >= wanted or len(val) + 1 >= len(ids):
            break
        val.extend(by_group[names[index]])
    val_set = set(val)
    return [i for i in ids if i not in val_set], sorted(val)


def fraction_prefix(ordered_train: Sequence[str], fraction: float) -> list[str]:
    """The nested subset for ``fraction``: a prefix of a fixed order (the localizer's pool)."""
    if not 0 < fraction <= 1:
        raise DatasetError(f"data.fraction={fraction} must lie in (0, 1].")
    count = math.ceil(round(fraction * len(ordered_train), 6))
    if count == 0:
        raise DatasetError(
            f"data.fraction={fraction} leaves no training image (the fold has "
            f"{len(ordered_train)}); raise the fraction or add masked images."
        )
    return list(ordered_train[:count])


def validation_groups(
    ordered: Sequence[str], val_fraction: float, groups: Mapping[str, str] | None = None
) -> dict[str, bool]:
    """Each group's role in a budget order: True for validation, False for training.

    A group is decided at its first image, at place ``n`` of the order with ``v`` validation
    images before it: validation if ``v <= floor(n x val_fraction)``, i.e. while validation is
    not ahead of its share. A role depends only on the order before the group, so a smaller
    budget's train and validation sets lie inside every larger budget's (nested fractions), and
    all images of a patient share one role. Ungrouped (every image its own group), this is every
    ``1/val_fraction``-th place starting at 0, as before groups were honoured.
    """
    groups = groups or {}
    roles: dict[str, bool] = {}
    seen = in_val = 0
    for image_id in ordered:
        group = groups.get(image_id, image_id)
        if group not in roles:
            roles[group] = in_val <= math.floor(seen * val_fraction + 1e-9)
        seen += 1
        in_val += roles[group]
    return roles


def budget_split(
    ordered: Sequence[str],
    fraction: float,
    val_fraction: float,
    groups: Mapping[str, str] | None = None,
) -> tuple[list[str], list[str]]:
    """(train, val) for a label budget: together ``ceil(fraction x the fold's masks)`` images.

    The honest budget: every mask a job touches, for training or for choosing its checkpoint and
    stopping early, counts against the fraction. Validation is assigned by patient ``groups``
    (image id -> group; an id missing from it is its own group): a patient's images are all
    train or all validation (see :func:`validation_groups`). A group cut by the budget's edge
    keeps its role with the images inside the budget; the rest of it stays unused, so the
    budget holds exactly and a larger budget only adds that group's other images to its side.
    """
    budget = fraction_prefix(ordered, fraction)
    groups = groups or {}
    roles = validation_groups(budget, val_fraction, groups)
    slots = [roles[groups.get(i, i)] for i in budget]
    train = [i for i, val in zip(budget, slots, strict=True) if not val]
    if not train:
        first = groups.get(ordered[0], ordered[0])
        needed = sum(groups.get(i, i) == first for i in ordered) + 1
        raise DatasetError(
            f"data.fraction={fraction} gives a budget of {len(budget)} mask(s) (of "
            f"{len(ordered)}), all needed for validation (a patient's images are never split "
            f"between train and validation); raise the fraction to at least "
            f"{needed / len(ordered):.2f} or lower data.val_fraction."
        )
    return train, [i for i, val in zip(budget, slots, strict=True) if val]


def evaluation_pool(dataset: FundusDataset) -> list:
    """The images folds are made of: the masked ones, or the centred ones of a centre-only set."""
    return dataset.masked() or dataset.centred()


# Up to this many pairs every pair of the evaluation pool is registered (DRIONS-DB's 109 photos:
# 5886 pairs, about 10 s once per split request): the fingerprint that picks candidates is not
# shift-tolerant, and 6 of DRIONS-DB's 8 consecutive film frames of one eye are no candidates.
SAME_EYE_EXHAUSTIVE_PAIRS = 20_000
GROUPING = "patients+same-eye"


def same_eye_groups(samples: Sequence[Sample], cache_dir: Path | None = None) -> dict[str, str]:
    """Each image's patient group, joined with every photograph of the same eye.

    The duplicate guard's registration (copies, re-encodings, second shots of one eye) decides
    which photographs are one eye; the ``group`` column alone would let two film frames of one eye
    sit in a test fold and in its training images. A joined group is named by its smallest member
    group, so the names are stable.
    """
    groups = {s.image_id: s.group_id for s in samples}
    n = len(samples)
    threshold = math.inf if n * (n - 1) // 2 <= SAME_EYE_EXHAUSTIVE_PAIRS else DEFAULT_THRESHOLD
    by_path = {Path(s.image_path): s.image_id for s in samples}
    parent = {g: g for g in groups.values()}

    def root(g: str) -> str:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    for pair in within_duplicates(list(by_path), cache_dir, threshold=threshold):
        a, b = root(groups[by_path[pair.query]]), root(groups[by_path[pair.reference]])
        if a != b:
            parent[max(a, b)] = min(a, b)
    return {i: root(g) for i, g in groups.items()}


def make_splits(
    dataset: FundusDataset,
    num_folds: int,
    val_fraction: float,
    seed: int,
    cache_dir: Path | None = None,
) -> dict:
    """Folds over the evaluation pool: test ids and the rest in a fixed, patient-grouped order.

    Patients are the ``group`` column joined with the photographs of one eye found by content
    (:func:`same_eye_groups`); ``joined`` records the images whose group that changed. A job's
    label budget is a prefix of ``order`` (see :func:`budget_split`).
    """
    samples = evaluation_pool(dataset)
    if len(samples) < num_folds:
        raise DatasetError(
            f"{dataset.root}: {len(samples)} labelled image(s) cannot fill {num_folds} folds; "
            "add images or lower data.num_folds."
        )
    groups = same_eye_groups(samples, cache_dir)
    joined = {s.image_id: groups[s.image_id] for s in samples if groups[s.image_id] != s.group_id}
    ids = [s.image_id for s in samples]
    folds = grouped_folds(ids, [groups[i] for i in ids], num_folds, seed)
    entries = []
    for k, test in enumerate(folds):
        test_set = set(test)
        members: dict[str, list[str]] = defaultdict(list)
        for i in ids:
            if i not in test_set:
                members[groups[i]].append(i)
        names = sorted(members)
        order = [
            i
            for g in np.random.default_rng([seed, k]).permutation(len(names))
            for i in members[names[g]]
        ]
        entries.append({"test": test, "order": order})
    return {
        "num_folds": num_folds,
        "val_fraction": val_fraction,
        "seed": seed,
        "grouping": GROUPING,
        "joined": joined,
        "folds": entries,
    }


def _writable(folder: Path) -> bool:
    """Writable for us and meant to be: root passes ``os.access`` even on a read-only share."""
    return os.access(folder, os.W_OK) and bool(folder.stat().st_mode & stat.S_IWUSR)


def splits_name(num_folds: int, val_fraction: float, seed: int) -> str:
    """One file per request, so a run with other fold settings never rewrites finished folds."""
    return f"splits_k{num_folds}_val{val_fraction:g}_seed{seed}.json"


def splits_path(
    dataset: FundusDataset, cache_dir: Path, num_folds: int, val_fraction: float, seed: int
) -> Path:
    """The request's splits file in the dataset folder, or in the cache if that is read-only."""
    name = splits_name(num_folds, val_fraction, seed)
    if _writable(dataset.root):
        return dataset.root / name
    tag = hashlib.sha256(str(dataset.root).encode()).hexdigest()[:12]
    return Path(cache_dir) / f"{dataset.root.name}-{tag}-{name}"


def pool_hash(dataset: FundusDataset) -> str:
    """Identity of what folds are made of: the masked ids and their patient groups."""
    pairs = sorted(f"{s.image_id}|{s.group_id}" for s in evaluation_pool(dataset))
    return hashlib.sha256("\n".join(pairs).encode()).hexdigest()[:16]


# Where some patient has several images, validation is drawn by whole patients (see
# budget_split); before that it took every fifth image, so a job's train and val sets changed
# under unchanged folds. The rule is part of such a pool's splits identity, so a finished job
# of the old rule is rerun rather than reused; ungrouped pools split as before and keep theirs.
VALIDATION_RULE = {"validation": "whole-groups"}


def validation_rule(dataset: FundusDataset) -> dict:
    """The validation rule to record for ``dataset``'s pool: empty unless patients repeat."""
    groups = [s.group_id for s in evaluation_pool(dataset)]
    return dict(VALIDATION_RULE) if len(set(groups)) < len(groups) else {}


def splits_digest(splits: dict) -> str:
    """A short hash of the folds themselves (and of a grouped pool's validation rule): part of
    every job's identity."""
    text = json.dumps(splits["folds"], sort_keys=True)
    if splits.get("validation"):
        text += f"\nvalidation={splits['validation']}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def load_or_make_splits(
    dataset: FundusDataset,
    num_folds: int,
    val_fraction: float,
    seed: int,
    path: Path,
    cache_dir: Path | None = None,
) -> dict:
    """Reuse the persisted splits of this request; make them once if absent.

    Folds never move under finished runs: if the masked images or their groups changed since the
    file was made, the old folds could put one patient in both test and train, and new folds would
    silently change every finished result, so this refuses and says what to do.
    """
    current = pool_hash(dataset)
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored.get("pool_hash") == current and stored.get("grouping") != GROUPING:
            stored = _check_same_eye(stored, dataset, path, cache_dir)  # an older file
        if stored.get("pool_hash") == current:
            return {**stored, **validation_rule(dataset)}  # files made before the rule
        raise DatasetError(
            f"{path}: these folds were made for other masked images or patient groups "
            f"(pool hash {stored.get('pool_hash')}, now {current}). Finished runs used the old "
            f"folds. To start over with new folds, delete {path} and re-run every sweep on "
            "this dataset; to keep the old folds, restore the dataset as it was."
        )
    splits = {
        **make_splits(dataset, num_folds, val_fraction, seed, cache_dir),
        "pool_hash": current,
        **validation_rule(dataset),
    }
    write_json_atomic(path, splits)
    return splits


def _check_same_eye(
    stored: dict, dataset: FundusDataset, path: Path, cache_dir: Path | None
) -> dict:
    """Folds made before same-eye grouping stand only if no two photographs of one eye exist."""
    groups = same_eye_groups(evaluation_pool(dataset), cache_dir)
    joined = {i: g for i, g in groups.items() if g != dataset.by_id()[i].group_id}
    if joined:
        raise DatasetError(
            f"{path}: these folds were made before photographs of one eye were grouped, and "
            f"{len(joined)} image(s) of {dataset.root} share an eye with another "
            f"({', '.join(sorted(joined)[:4])}{' ...' if len(joined) > 4 else ''}), so a test fold "
            f"may hold an eye its training images also show. Delete {path} and re-run every sweep "
            "on this dataset."
        )
    checked = {**stored, "grouping": GROUPING, "joined": {}}  # the same folds, now marked
    if os.access(path, os.W_OK):
        write_json_atomic(path, checked)  # so the next job does not register every pair again
    return checked


def dataset_splits(
    dataset: FundusDataset, num_folds: int, val_fraction: float, seed: int, cache_dir: Path
) -> dict:
    """The persisted folds of ``dataset`` for this request (made once, then only read)."""
    path = splits_path(dataset, cache_dir, num_folds, val_fraction, seed)
    return load_or_make_splits(dataset, num_folds, val_fraction, seed, path, cache_dir)


def check_fold(fold: int, num_folds: int) -> None:
    if not 0 <= fold < num_folds:
        raise DatasetError(f"data.fold={fold} is out of range; use 0..{num_folds - 1}.")


def localization_pool(dataset: FundusDataset, splits: dict, fold: int) -> tuple[list[str], bool]:
    """Images the localizer may train on for ``fold``, and whether that pool depends on the fold.

    The candidates are the centre-only images beside the masked ones, or, where there are none
    (DRIONS-DB; a centre-only folder on its own), every centred image. If no candidate shares a
    patient group with an evaluated image (the paper's setting, the synthetic set), one
    localizer serves every fold. Otherwise the localizer of fold k trains only outside fold k's
    test groups: a centre-only photo of a patient whose masked photo is a test image stays out.
    """
    evaluated = evaluation_pool(dataset)
    evaluated_ids = {s.image_id for s in evaluated}
    candidates = [s for s in dataset.centred() if s.image_id not in evaluated_ids]
    candidates = candidates or dataset.centred()
    evaluated_groups = {s.group_id for s in evaluated}
    if not any(s.group_id in evaluated_groups for s in candidates):
        return [s.image_id for s in candidates], False
    by_id = dataset.by_id()
    test_groups = {by_id[i].group_id for i in splits["folds"][fold]["test"]}
    return [s.image_id for s in candidates if s.group_id not in test_groups], True


def excluded_ids_hash(ids: list[str]) -> str:
    """Identity of the images a localizer promises never to have trained on."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]
