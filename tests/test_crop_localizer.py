"""A crop-scale localizer end to end: whole-photograph localizer -> crop localizer -> a frozen
crop segmenter that loads the crop localizer's encoder and is placed by the whole one."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from conftest import make_dataset
from test_train import compose_job

from locseg.inference.checkpoints import load_model
from locseg.inference.options import InferenceError
from locseg.models.encoder_io import load_encoder_checkpoint
from locseg.roi.centres import roi_localizer_path
from locseg.train import run_job


def job(run_dir: Path, root: Path, *overrides: str):
    """A tiny roi=disc job; the phase comes from the overrides (+phase=... or +sweep=...)."""
    return compose_job(None, run_dir, root, "roi=disc", *overrides)


def run(run_dir: Path, root: Path, *overrides: str) -> dict:
    run_job(job(run_dir, root, *overrides))
    stored = json.loads((run_dir / "metrics.json").read_text())
    assert stored["status"] == "ok", stored["error"]
    return stored


@pytest.fixture(scope="module")
def jobs(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("crop_loc")
    root = make_dataset(tmp / "d", n_masked=12, n_centre_only=16)  # a centre-only pool inside
    whole = run(tmp / "sweep/localize/shared", root, "+phase=localize", "steps.localize=4")
    # The pool holds centres only: no mask to measure the disc, so the diameter is given.
    crops = run(
        tmp / "sweep/localize/crops",
        root,
        "+sweep=localize_crops",
        "steps.localize=4",
        "roi.localizer_diameter_px=11",
    )
    return {"tmp": tmp, "root": root, "whole": whole, "crops": crops}


def test_crop_localizer_is_validated_on_windows_and_not_tested(jobs):
    crops, run_dir = jobs["crops"], jobs["tmp"] / "sweep/localize/crops"
    assert crops["test"] is None and crops["test_skipped"].startswith("crop-scale localizer")
    assert "test_folds" not in crops and "n_test" not in crops
    val = crops["val"]
    # dist_px is in native px of the 33-px windows (3 diameters of 11 px), not of 32-px inputs.
    assert 0 < val["dist_px"] < 33 and 0 < val["image_centre_dist_px"] <= 0.25 * 33 * 2**0.5 + 2
    assert json.loads(crops["identity"]["roi_localizer"])["side_px"] == 33
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    extra = load_encoder_checkpoint(run_dir / "encoder.pt")["extra"]
    assert extra["roi"]["side_px"] == 33 and extra["roi"]["diameter_px"] == 11.0
    assert extra["roi"]["jitter"] == 0.25 and extra["roi"]["crop_size"] == 32
    assert extra["per_fold"] is False  # a shared localizer: the leakage check holds for it


def test_crop_localizer_cannot_place_test_crops(jobs):
    sweep = jobs["tmp"] / "sweep"
    ckpt = sweep / "localize/crops/checkpoints/best.ckpt"
    with pytest.raises(InferenceError, match="crop-scale localizer .* roi.localizer_ckpt=RUN/"):
        roi_localizer_path(ckpt, None, None, 0)
    with pytest.raises(InferenceError, match="found beside the encoder in use .* crop localizer"):
        roi_localizer_path(None, sweep / "localize/crops/encoder.pt", None, 0)
    with pytest.raises(InferenceError, match="cannot place a disc in a whole photograph"):
        load_model(ckpt, torch.device("cpu"))
    # A segment job on the crop encoder without roi.localizer_ckpt is refused before training.
    cfg = job(
        jobs["tmp"] / "refused",
        jobs["root"],
        "+phase=segment",
        "init=localizer-frozen",
        f"model.encoder_ckpt={sweep / 'localize/crops/encoder.pt'}",
    )
    with pytest.raises(InferenceError, match="when model.encoder_ckpt is a crop localizer's"):
        run_job(cfg)


def test_segmenter_on_the_crop_encoder_placed_by_the_whole_localizer(jobs):
    sweep = jobs["tmp"] / "sweep"
    encoder = sweep / "localize/crops/encoder.pt"
    localizer = sweep / "localize/shared/checkpoints/best.ckpt"
    seg = run(
        jobs["tmp"] / "seg",
        jobs["root"],
        "+phase=segment",
        "init=localizer-frozen",
        "steps.segment=2",
        f"model.encoder_ckpt={encoder}",
        f"roi.localizer_ckpt={localizer}",
    )
    assert seg["arm"] == "localizer-frozen" and 0 <= seg["test"]["dice_native"] <= 1
    assert seg["identity"]["encoder"] == hashlib.sha256(encoder.read_bytes()).hexdigest()
    assert seg["roi"]["localizer"] == str(localizer)
    assert seg["roi"]["side_diameters"] == 3.0 and "localizer_crops" not in seg["roi"]
    # The frozen encoder the segmenter trained with is encoder.pt's, tensor for tensor.
    theirs = load_encoder_checkpoint(encoder)["state_dict"]
    for name in ("best.ckpt", "last.ckpt"):
        state = torch.load(jobs["tmp"] / "seg/checkpoints" / name, weights_only=True)["state_dict"]
        ours = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
        assert set(ours) == set(theirs), name
        for key, tensor in theirs.items():
            assert torch.equal(ours[key], tensor), f"{name}: encoder.{key} differs from encoder.pt"
