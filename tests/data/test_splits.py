"""Folds partition the masked pool, fractions nest, groups stay whole, test images never leak."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import draw_disc_image, make_dataset

from locseg.data.dataset import DatasetError, load_dataset
from locseg.data.splits import (
    budget_split,
    dataset_splits,
    fraction_prefix,
    grouped_folds,
    load_or_make_splits,
    localization_pool,
    make_splits,
    splits_digest,
    splits_path,
)


def test_folds_partition_the_pool_exactly():
    ids = [f"i{k}" for k in range(23)]
    folds = grouped_folds(ids, ids, 5, seed=3)
    flat = [i for fold in folds for i in fold]
    assert sorted(flat) == sorted(ids) and len(flat) == len(set(flat))
    assert max(map(len, folds)) - min(map(len, folds)) <= 1


def test_groups_never_split():
    ids = [f"i{k}" for k in range(30)]
    groups = [f"p{k // 3}" for k in range(30)]
    folds = grouped_folds(ids, groups, 5, seed=0)
    where = {i: k for k, fold in enumerate(folds) for i in fold}
    for patient in set(groups):
        members = [i for i, g in zip(ids, groups, strict=True) if g == patient]
        assert len({where[i] for i in members}) == 1


def test_fractions_are_nested_and_never_empty():
    order = [f"i{k}" for k in range(17)]
    previous: set[str] = set()
    for fraction in [0.1, 0.2, 0.3, 0.5, 0.7, 1.0]:
        subset = set(fraction_prefix(order, fraction))
        assert previous <= subset
        previous = subset
    assert previous == set(order)
    with pytest.raises(DatasetError, match="fraction"):
        fraction_prefix(order, 0.0)
    with pytest.raises(DatasetError, match="leaves no training image"):
        fraction_prefix([], 0.5)


def test_splits_keep_test_out_of_train_val_and_localization(tmp_path):
    root = make_dataset(tmp_path / "d", n_masked=15, groups=5)
    dataset = load_dataset(root)
    splits = make_splits(dataset, num_folds=5, val_fraction=0.2, seed=1)
    for k, fold in enumerate(splits["folds"]):
        test = set(fold["test"])
        assert not test & set(fold["order"])
        assert sorted(test | set(fold["order"])) == sorted(dataset.ids)
        pool, per_fold = localization_pool(dataset, splits, k)
        assert per_fold and not test & set(pool)


def test_disjoint_centre_only_pool_serves_every_fold(tiny_dataset):
    dataset = load_dataset(tiny_dataset)
    splits = make_splits(dataset, num_folds=3, val_fraction=0.2, seed=1)
    pools = [localization_pool(dataset, splits, k) for k in range(3)]
    assert all(not per_fold for _, per_fold in pools)
    assert all(pool == pools[0][0] for pool, _ in pools)
    assert all(i.startswith("loc_") for i in pools[0][0])


def test_splits_are_persisted_and_reused(tmp_path):
    root = make_dataset(tmp_path / "d", n_masked=10)
    dataset = load_dataset(root)
    path = tmp_path / "splits_final.json"
    first = load_or_make_splits(dataset, 5, 0.2, 7, path)
    stored = json.loads(path.read_text())
    assert stored == first
    stored["folds"][0]["val"] = ["edited-by-hand"]
    path.write_text(json.dumps(stored))
    assert load_or_make_splits(dataset, 5, 0.2, 7, path)["folds"][0]["val"] == ["edited-by-hand"]


def test_too_few_masks_for_the_folds(tmp_path):
    dataset = load_dataset(make_dataset(tmp_path / "d", n_masked=3))
    with pytest.raises(DatasetError, match="cannot fill 5 folds"):
        make_splits(dataset, 5, 0.2, 0)


def test_read_only_dataset_keeps_its_splits_in_the_cache(tmp_path):
    root = make_dataset(tmp_path / "d", n_masked=10)
    dataset = load_dataset(root)
    root.chmod(0o555)
    try:
        path = splits_path(dataset, tmp_path / "cache", 5, 0.2, 1)
    finally:
        root.chmod(0o755)
    assert path.parent == tmp_path / "cache" and path.name.endswith("splits_k5_val0.2_seed1.json")
    assert (
        splits_path(dataset, tmp_path / "cache", 5, 0.2, 1) == root / "splits_k5_val0.2_seed1.json"
    )


# ----------------------------------------------------------------- splits never move (#11.4, #12.3)


def test_each_request_keeps_its_own_splits_file(tmp_path):
    root = make_dataset(tmp_path / "d", n_masked=10)
    dataset = load_dataset(root)
    five = dataset_splits(dataset, 5, 0.2, 7, tmp_path / "c")
    before = {p.name: p.read_text() for p in root.glob("splits_*.json")}
    three = dataset_splits(dataset, 3, 0.2, 7, tmp_path / "c")
    assert len(five["folds"]) == 5 and len(three["folds"]) == 3
    for name, text in before.items():
        assert (root / name).read_text() == text, "another request rewrote finished folds"
    assert dataset_splits(dataset, 5, 0.2, 7, tmp_path / "c") == five


def test_changed_groups_refuse_the_old_folds(tmp_path):
    """A group column added after the folds were made: patients would straddle test and train."""
    root = make_dataset(tmp_path / "d", n_masked=10)
    dataset_splits(load_dataset(root), 5, 0.2, 7, tmp_path / "c")
    csv_path = root / "centers.csv"
    lines = csv_path.read_text().splitlines()
    header = lines[0] + ",group" if "group" not in lines[0] else lines[0]
    rows = [
        f"{line.split(',')[0]},{line.split(',')[1]},{line.split(',')[2]},p{i % 3}"
        for i, line in enumerate(lines[1:])
    ]
    csv_path.write_text("\n".join([header.replace(",group,group", ",group"), *rows]) + "\n")
    regrouped = load_dataset(root)
    assert {s.group for s in regrouped.masked()} == {"p0", "p1", "p2"}
    with pytest.raises(DatasetError, match="other masked images or patient groups") as caught:
        dataset_splits(regrouped, 5, 0.2, 7, tmp_path / "c")
    assert "delete" in str(caught.value) and "splits_k5_val0.2_seed7.json" in str(caught.value)


def test_pool_patients_of_test_images_are_kept_from_their_fold_localizer(tmp_path):
    """A centre-only photo of a patient whose masked photo is a test image of fold k must not
    train fold k's localizer (it used to join the shared pool)."""
    from locseg.data.dataset import DatasetWriter

    rng = np.random.default_rng(0)
    root = tmp_path / "d"
    with DatasetWriter(root) as writer:
        for i in range(10):
            image, mask, center = draw_disc_image(rng, 48)
            writer.add(f"seg_{i:03d}", image, mask, center, f"p{i}")
        for i in range(6):
            image, _, center = draw_disc_image(rng, 48)
            writer.add(f"loc_{i:03d}", image, None, center, f"p{i}" if i < 2 else f"q{i}")
    dataset = load_dataset(root)
    splits = make_splits(dataset, num_folds=5, val_fraction=0.2, seed=1)
    groups = {s.image_id: s.group_id for s in dataset.samples}
    for k, fold in enumerate(splits["folds"]):
        pool, per_fold = localization_pool(dataset, splits, k)
        test_groups = {groups[i] for i in fold["test"]}
        assert per_fold and all(i.startswith("loc_") for i in pool)
        assert not {groups[i] for i in pool} & test_groups
        assert {"loc_002", "loc_003", "loc_004", "loc_005"} <= set(pool)


# ----------------------------------------------------------------- validation by patient (#16.7)


def _whole_patient_modules(root, fractions, tmp_path):
    from locseg.data.datamodules import SegmentationDataModule

    for fraction in fractions:
        module = SegmentationDataModule(
            root=str(root),
            image_size=32,
            num_folds=5,
            fraction=fraction,
            augment={"enabled": False},
            cache_dir=str(tmp_path / "cache"),
        )
        module.setup("fit")
        yield fraction, module


def test_validation_takes_whole_patients_at_every_fraction(tmp_path):
    """Two images per patient: validation used to take every fifth image of the budget order,
    so at 100% 35 of 40 patients had one image in train and the other in validation."""
    root = make_dataset(tmp_path / "d", n_masked=80, groups=40)
    groups = {s.image_id: s.group_id for s in load_dataset(root).samples}
    previous = {"train": set(), "val": set()}
    fractions = [0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0]
    for fraction, module in _whole_patient_modules(root, fractions, tmp_path):
        train, val = (set(module.selection[part]) for part in ("train", "val"))
        both = {groups[i] for i in train} & {groups[i] for i in val}
        assert not both, f"{fraction}: patients {sorted(both)} in both train and validation"
        others = 80 - len(module.selection["test"])
        assert len(train) + len(val) == math.ceil(fraction * others)  # the honest budget
        assert train and val and not train & val
        assert previous["train"] <= train and previous["val"] <= val  # nested fractions
        previous = {"train": train, "val": val}
    assert 0.15 <= len(val) / (len(train) + len(val)) <= 0.25


def test_ungrouped_budgets_split_as_before():
    """An image that is its own patient: every 1/val_fraction-th place from 0, as before."""
    order = [f"i{k:02d}" for k in range(23)]
    for val_fraction in (0.1, 0.2, 0.25, 0.3, 1 / 3):
        old = [
            math.floor(p * val_fraction + 1e-9) != math.floor((p - 1) * val_fraction + 1e-9)
            for p in range(len(order))
        ]
        for fraction in (0.1, 0.5, 1.0):
            train, val = budget_split(order, fraction, val_fraction)
            budget = fraction_prefix(order, fraction)
            assert val == [i for i, slot in zip(budget, old, strict=False) if slot]
            assert train == [i for i in budget if i not in val]
    assert budget_split(order, 1.0, 0.2)[1] == ["i00", "i05", "i10", "i15", "i20"]


def test_a_patient_cut_by_the_budget_edge_keeps_its_side():
    """Patients of three images; a budget that ends inside one uses only its images inside the
    budget, all on the patient's side, and a larger budget adds the rest to the same side."""
    order = [f"i{k:02d}" for k in range(30)]
    groups = {i: f"p{k // 3}" for k, i in enumerate(order)}
    for count in range(4, 31):
        fraction = count / 30
        train, val = budget_split(order, fraction, 0.2, groups)
        assert len(train) + len(val) == count
        assert not {groups[i] for i in train} & {groups[i] for i in val}
        bigger_train, bigger_val = budget_split(order, min(1.0, (count + 1) / 30), 0.2, groups)
        assert set(train) <= set(bigger_train) and set(val) <= set(bigger_val)
    with pytest.raises(DatasetError, match=r"never split.*at least 0\.13"):
        budget_split(order, 3 / 30, 0.2, groups)  # the first patient is validation


def test_grouped_pools_version_their_splits_identity(tmp_path):
    """Validation by patient changes a grouped pool's train/val under unchanged folds: its
    splits identity changes with it (finished jobs rerun, also from a file made before the rule);
    an ungrouped pool splits as before and keeps its identity."""
    import hashlib

    def folds_only(splits):
        text = json.dumps(splits["folds"], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    plain = load_dataset(make_dataset(tmp_path / "plain", n_masked=10))
    splits = dataset_splits(plain, 5, 0.2, 7, tmp_path / "c")
    assert "validation" not in splits and splits_digest(splits) == folds_only(splits)

    grouped = load_dataset(make_dataset(tmp_path / "grouped", n_masked=10, groups=5))
    path = tmp_path / "grouped" / "splits_k5_val0.2_seed7.json"
    made = dataset_splits(grouped, 5, 0.2, 7, tmp_path / "c")
    assert json.loads(path.read_text())["validation"] == "whole-groups"
    assert splits_digest(made) != folds_only(made)
    old_file = {k: v for k, v in made.items() if k != "validation"}  # written before the rule
    path.write_text(json.dumps(old_file))
    reloaded = dataset_splits(grouped, 5, 0.2, 7, tmp_path / "c")
    assert reloaded["folds"] == made["folds"] and splits_digest(reloaded) == splits_digest(made)


def write_fundus_set(root: Path, n: int, copies: dict[int, int]) -> Path:
    """``n`` procedural photographs with masks; ``copies[i] = j``: image i is a re-encoded,
    brightened copy of image j (the same eye), with no ``group`` column to say so."""
    from locseg.data.dataset import DatasetWriter
    from locseg.data.synthetic import draw_fundus

    drawn = [draw_fundus(np.random.default_rng([i, 3]), 128) for i in range(n)]
    with DatasetWriter(root) as writer:
        for i in range(n):
            image, mask, centre = drawn[copies.get(i, i)][:3]
            if i in copies:
                image = np.clip(image.astype(int) + 20, 0, 255).astype(np.uint8)
            writer.add(f"img_{i:02d}", image, mask, centre)
    return root


def test_photographs_of_one_eye_share_a_fold_without_a_group_column(tmp_path):
    """Two film frames of one eye (DRIONS-DB has 8 such pairs) must not sit in a test fold and
    in its training images: the duplicate guard's registration joins them into one patient."""
    root = write_fundus_set(tmp_path / "set", 12, copies={5: 2, 9: 7})
    dataset = load_dataset(root)
    splits = make_splits(dataset, num_folds=4, val_fraction=0.2, seed=3, cache_dir=tmp_path / "c")
    assert splits["joined"] == {"img_05": "img_02", "img_09": "img_07"}
    for fold in splits["folds"]:
        test = set(fold["test"])
        for a, b in [("img_02", "img_05"), ("img_07", "img_09")]:
            assert (a in test) == (b in test), f"{a} and {b} split across a test fold"


def test_folds_made_before_same_eye_grouping_are_refused_when_an_eye_repeats(tmp_path):
    root = write_fundus_set(tmp_path / "set", 10, copies={4: 1})
    dataset = load_dataset(root)
    path = tmp_path / "splits.json"
    old = load_or_make_splits(dataset, 5, 0.2, 7, path, tmp_path / "c")
    old.pop("grouping"), old.pop("joined")
    path.write_text(json.dumps(old))
    with pytest.raises(DatasetError, match="before photographs of one eye were grouped.*img_04"):
        load_or_make_splits(dataset, 5, 0.2, 7, path, tmp_path / "c")
    clean = write_fundus_set(tmp_path / "clean", 10, copies={})
    path = tmp_path / "clean_splits.json"
    old = load_or_make_splits(load_dataset(clean), 5, 0.2, 7, path, tmp_path / "c")
    old.pop("grouping"), old.pop("joined")
    path.write_text(json.dumps(old))
    reused = load_or_make_splits(load_dataset(clean), 5, 0.2, 7, path, tmp_path / "c")
    assert reused["folds"] == old["folds"], "no eye repeats: the older folds stand"
