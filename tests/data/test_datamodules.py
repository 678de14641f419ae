"""Augmentation moves targets with the image; the DataModules serve the right images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_dataset

from locseg.data.augment import apply_augmentation, build_augmentation, seed_augmentation
from locseg.data.datamodules import LocalizationDataModule, SegmentationDataModule
from locseg.data.dataset import DatasetError


@pytest.mark.parametrize("flip", ["hflip", "vflip"])
def test_keypoint_and_mask_follow_flips(flip):
    pipeline = build_augmentation(
        **{"hflip": 0.0, "vflip": 0.0, flip: 1.0},
        affine_p=0,
        brightness_contrast_p=0,
        gamma_p=0,
    )
    image = np.zeros((32, 32), np.uint8)
    image[6, 21] = 255
    mask = (image > 0).astype(np.uint8)
    out_image, out_mask, centre = apply_augmentation(pipeline, image, mask, np.array([21.0, 6.0]))
    y, x = np.argwhere(out_image == 255)[0]
    assert (x, y) == (10, 6) if flip == "hflip" else (x, y) == (21, 25)
    assert tuple(centre) == (x, y)
    assert out_mask[y, x] == 1


def test_affine_moves_the_centre_with_the_disc():
    pipeline = build_augmentation(
        hflip=0,
        affine_p=1.0,
        rotate=30,
        scale=0.2,
        translate=0.1,
        brightness_contrast_p=0,
        gamma_p=0,
    )
    rng = np.random.default_rng(0)
    for _ in range(10):
        image = np.zeros((64, 64), np.uint8)
        cy, cx = rng.integers(20, 44, 2)
        image[cy - 3 : cy + 4, cx - 3 : cx + 4] = 255
        out, _, centre = apply_augmentation(
            pipeline, image, image.copy(), np.array([cx, cy], float)
        )
        ys, xs = np.nonzero(out > 127)
        assert np.hypot(xs.mean() - centre[0], ys.mean() - centre[1]) < 1.0


def _module(cls, root, **kwargs):
    options = dict(
        root=str(root), image_size=32, batch_size=4, num_folds=3, augment={"enabled": False}
    )
    module = cls(**{**options, **kwargs})
    module.prepare_data()
    module.setup("fit")
    return module


def test_segmentation_batches_and_nested_fractions(tiny_dataset):
    small = _module(SegmentationDataModule, tiny_dataset, fraction=0.3)
    full = _module(SegmentationDataModule, tiny_dataset, fraction=1.0)
    assert set(small.selection["train"]) < set(full.selection["train"])
    assert small.selection["test"] == full.selection["test"]
    assert set(small.selection["val"]) <= set(full.selection["val"])
    batch = next(iter(full.train_dataloader()))
    assert batch["image"].shape == (4, 1, 32, 32) and batch["mask"].shape == (4, 1, 32, 32)
    assert 0 <= batch["image"].min() and batch["image"].max() <= 1
    assert set(torch.unique(batch["mask"]).tolist()) <= {0.0, 1.0}


def test_localization_uses_centre_only_pool_and_fold_test(tiny_dataset):
    module = _module(LocalizationDataModule, tiny_dataset, fold=1)
    segment = _module(SegmentationDataModule, tiny_dataset, fold=1)
    assert all(i.startswith("loc_") for i in module.selection["train"] + module.selection["val"])
    assert module.selection["test"] == segment.selection["test"]
    batch = next(iter(module.val_dataloader()))
    assert batch["center"].shape == (len(batch["image"]), 2)
    assert torch.all((batch["center"] > 0) & (batch["center"] < 1))
    u, v = module.mean_train_center()
    assert 0.25 < u < 0.75 and 0.25 < v < 0.75


def test_fold_out_of_range_and_empty_fraction(tiny_dataset, tmp_path):
    with pytest.raises(DatasetError, match=r"data.fold=5 is out of range; use 0..4"):
        SegmentationDataModule(root=str(tiny_dataset), fold=5)
    tiny = make_dataset(tmp_path / "t", n_masked=6)
    with pytest.raises(DatasetError, match="fraction"):
        _module(SegmentationDataModule, tiny, fraction=0.0)


# ----------------------------------------------------------------- seeded augmentation (#12.2)

_AUGMENT = {"enabled": True, "affine_p": 1.0, "rotate": 30, "translate": 0.1}


def _first_batch(root, seed: int, **kwargs) -> dict:
    import pytorch_lightning as pl

    pl.seed_everything(seed, verbose=False)
    module = _module(SegmentationDataModule, root, augment=_AUGMENT, seed=seed, **kwargs)
    return next(iter(module.train_dataloader()))


def test_one_seed_gives_identical_augmented_batches(tiny_dataset):
    first, again = _first_batch(tiny_dataset, 3), _first_batch(tiny_dataset, 3)
    for key in ("image", "mask", "center", "index"):
        assert torch.equal(first[key], again[key]), key
    other = _first_batch(tiny_dataset, 4)
    assert not torch.equal(first["image"], other["image"])


def test_loader_workers_draw_different_augmentations(tmp_path):
    """Forked workers used to share one generator state and apply one sequence."""
    import pytorch_lightning as pl

    root = make_dataset(tmp_path / "d", n_masked=12)
    pl.seed_everything(0, verbose=False)
    module = _module(
        SegmentationDataModule, root, augment=_AUGMENT, batch_size=1, num_workers=2, seed=0
    )
    loader = module.test_dataloader()  # fixed order; swap in one row repeated, augmented
    samples = loader.dataset
    samples.items = [samples.items[0]] * 4
    samples.augmentation = build_augmentation(**_AUGMENT)
    batches = list(loader)  # worker 0 serves items 0, 2; worker 1 items 1, 3
    assert not torch.equal(batches[0]["image"], batches[1]["image"])
    assert not torch.equal(batches[0]["center"], batches[1]["center"])


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5, 1.0])
def test_label_budget_counts_validation_masks(tmp_path, fraction):
    """Train + validation masks never exceed ceil(fraction x the fold's non-test masks); at 10%
    the validation set used to hold more masks than training."""
    import math

    root = make_dataset(tmp_path / "d", n_masked=60)
    module = _module(SegmentationDataModule, root, fraction=fraction, num_folds=5)
    others = 60 - len(module.selection["test"])
    n_train, n_val = len(module.selection["train"]), len(module.selection["val"])
    assert n_train + n_val == math.ceil(fraction * others)
    assert 1 <= n_val <= n_train
    assert not set(module.selection["train"]) & set(module.selection["val"])


def _preset(name: str) -> dict:
    from locseg.conf import __file__ as conf_init
    from omegaconf import OmegaConf

    path = Path(conf_init).parent / "augment" / f"{name}.yaml"
    return dict(OmegaConf.to_container(OmegaConf.load(path)))


def test_position_preset_breaks_the_position_prior_and_the_centre_follows():
    """Under augment=position a constant guess misses by far more; the centre stays on the disc."""
    spreads = {}
    for name in ("default", "position"):
        pipeline = build_augmentation(**_preset(name))
        seed_augmentation(pipeline, 0)
        centres = []
        for _ in range(200):
            image = np.zeros((64, 64), np.uint8)
            image[29:36, 29:36] = 255
            out, _, centre = apply_augmentation(pipeline, image, image.copy(), np.array([32.0, 32]))
            ys, xs = np.nonzero(out > 127)
            if len(xs):
                assert np.hypot(xs.mean() - centre[0], ys.mean() - centre[1]) < 1.0
            centres.append(centre)
        spreads[name] = float(np.linalg.norm(np.std(centres, axis=0)))
    assert spreads["position"] > 8.0 > 2.5 * spreads["default"]
