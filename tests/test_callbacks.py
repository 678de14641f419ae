"""Validation overlays: the saved PNG carries a legend, and each mark sits where it should."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from locseg.callbacks import (
    GREEN,
    RED,
    TILE,
    PredictionOverlays,
    legend_strip,
    legend_text,
    mask_centroid,
    overlay,
)

S = 32


def disc(cx: float, cy: float, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[:S, :S]
    return ((xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2).astype(np.float32)


def has_colour(picture: np.ndarray, colour) -> bool:
    return bool((picture == np.array(colour, np.uint8)).all(axis=2).any())


def save_overlays(tmp_path, batch: dict, pred: torch.Tensor) -> np.ndarray:
    """Run the callback as Lightning would after the first validation batch; read the PNG."""
    trainer = SimpleNamespace(
        sanity_checking=False,
        is_global_zero=True,
        default_root_dir=str(tmp_path),
        loggers=[],
        global_step=3,
    )
    PredictionOverlays(max_images=2).on_validation_batch_end(
        trainer, None, {"pred": pred}, batch, batch_idx=0
    )
    path = tmp_path / "val_overlays.png"
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


@pytest.fixture
def image() -> torch.Tensor:
    return torch.full((3, 1, S, S), 0.5)


def test_segmenter_overlays_carry_a_legend_in_both_colours(tmp_path, image):
    truth = torch.from_numpy(np.stack([disc(10, 12, 5)] * 3))[:, None]
    pred = torch.from_numpy(np.stack([disc(20, 18, 6)] * 3))[:, None]
    picture = save_overlays(tmp_path, {"image": image, "mask": truth}, pred)

    assert picture.shape[1] == 2 * TILE and picture.shape[0] > TILE  # 2 tiles, then a legend
    strip = picture[TILE:]
    assert np.array_equal(strip, legend_strip(2 * TILE, "mask"))
    assert has_colour(strip, GREEN) and has_colour(strip, RED)
    assert (strip.min(axis=2) > 200).sum() > 100  # the labels (anti-aliased near-white text)
    # The centroid diamonds sit on each mask's centroid (diamonds leave their centre empty).
    tile = picture[:TILE, :TILE]
    for mask, colour in ((truth[0, 0].numpy(), GREEN), (pred[0, 0].numpy(), RED)):
        x, y = (round(v * TILE / S) for v in mask_centroid(mask))
        ring = tile[y - 4 : y + 5, x - 4 : x + 5]
        assert has_colour(ring, colour), (colour, x, y)


def test_localizer_overlays_name_the_true_and_predicted_centres(tmp_path, image):
    center = torch.tensor([[0.25, 0.25]] * 3)
    pred = torch.tensor([[0.75, 0.5]] * 3)
    picture = save_overlays(tmp_path, {"image": image, "center": center}, pred)

    assert picture.shape[0] > TILE
    assert np.array_equal(picture[TILE:], legend_strip(2 * TILE, "centre"))
    assert tuple(picture[32, 32]) == GREEN and tuple(picture[64, 96]) == RED  # the crosses
    assert legend_text("centre") == "true centre: green cross; predicted centre: red cross"


def test_the_legend_wraps_to_fit_one_tile():
    one_line = legend_strip(4 * TILE, "mask")
    wrapped = legend_strip(TILE, "mask")
    assert wrapped.shape[1] == TILE and wrapped.shape[0] > one_line.shape[0]
    assert has_colour(wrapped, GREEN) and has_colour(wrapped, RED)


def test_an_empty_predicted_mask_has_no_centroid_and_still_draws():
    assert mask_centroid(np.zeros((S, S))) is None
    assert mask_centroid(disc(10, 12, 3)) == pytest.approx((10.0, 12.0))
    tile = overlay(np.full((S, S), 0.5), disc(10, 12, 5), np.zeros((S, S)))
    assert has_colour(tile, GREEN) and not has_colour(tile, RED)
