"""The paper's preprocessing: order of operations, the cancelled z-score, the cache."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import make_dataset

from locseg.data.dataset import load_dataset
from locseg.data.preprocess import (
    PreprocessConfig,
    apply_gamma,
    minmax_uint8,
    preprocess_dataset,
    preprocess_image,
    to_gray,
)


def test_pipeline_is_gray_minmax_clahe_gamma_resize_in_that_order():
    rng = np.random.default_rng(0)
    image = rng.integers(40, 200, (96, 80, 3), dtype=np.uint8)
    config = PreprocessConfig(image_size=32)
    expected = minmax_uint8(to_gray(image))
    expected = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(expected)
    expected = cv2.resize(expected, (32, 32), interpolation=cv2.INTER_AREA)
    expected = apply_gamma(expected, 1.2)
    np.testing.assert_array_equal(preprocess_image(image, config), expected)


def test_gamma_brightens_mid_tones_like_the_lab_code():
    values = np.array([[0, 64, 128, 255]], np.uint8)
    out = apply_gamma(values, 1.2)
    assert out[0, 0] == 0 and out[0, 3] == 255 and out[0, 2] > 128
    assert out[0, 1] == round(255 * (64 / 255) ** (1 / 1.2))


def test_training_zscore_is_cancelled_by_per_image_minmax():
    """Why one fold-independent cache is exact: any mean/std gives identical output."""
    image = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    config = PreprocessConfig(image_size=32)
    reference = preprocess_image(image, config)
    for mean, std in [(10.0, 3.0), (120.5, 55.2), (-4.0, 0.5)]:
        np.testing.assert_array_equal(preprocess_image(image, config, mean, std), reference)


def test_cache_hit_and_invalidation(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "d", n_masked=4, n_centre_only=2)
    dataset = load_dataset(root)
    calls = []
    import locseg.data.preprocess as module

    original = module.preprocess_image
    monkeypatch.setattr(module, "preprocess_image", lambda *a: calls.append(1) or original(*a))
    first = preprocess_dataset(dataset, PreprocessConfig(image_size=32), tmp_path / "cache")
    assert len(calls) == 6
    second = preprocess_dataset(dataset, PreprocessConfig(image_size=32), tmp_path / "cache")
    assert len(calls) == 6, "second run must be a cache hit"
    np.testing.assert_array_equal(first.images, second.images)
    preprocess_dataset(dataset, PreprocessConfig(image_size=32, gamma=1.0), tmp_path / "cache")
    assert len(calls) == 12, "a parameter change must invalidate the cache"
    image_path = root / "images" / "loc_000.png"
    cv2.imwrite(str(image_path), np.zeros((48, 48, 3), np.uint8))
    preprocess_dataset(load_dataset(root), PreprocessConfig(image_size=32), tmp_path / "cache")
    assert len(calls) == 18, "a changed source file must invalidate the cache"


def test_masks_and_centres_follow_the_resize(tmp_path):
    root = make_dataset(tmp_path / "d", n_masked=3, size=60)
    data = preprocess_dataset(load_dataset(root), PreprocessConfig(image_size=30), tmp_path / "c")
    assert data.images.shape == (3, 30, 30) and data.masks.shape == (3, 30, 30)
    assert set(np.unique(data.masks)) <= {0, 1}
    for row in range(3):
        ys, xs = np.nonzero(data.masks[row])
        centre_px = data.centers[row] * 30 - 0.5
        assert centre_px == pytest.approx((xs.mean(), ys.mean()), abs=0.6)
    assert np.all(data.native_sizes == 60) and np.all(data.radii > 0)


def test_interrupted_cache_build_leaves_no_cache(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "d", n_masked=3)
    import locseg.data.preprocess as module

    def crash(*args):
        raise RuntimeError("power cut")

    monkeypatch.setattr(module, "preprocess_image", crash)
    with pytest.raises(RuntimeError):
        preprocess_dataset(load_dataset(root), PreprocessConfig(image_size=16), tmp_path / "c")
    leftovers = [p.name for p in (tmp_path / "c").rglob("*") if p.is_file()]
    assert leftovers == []
