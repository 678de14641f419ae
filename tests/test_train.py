"""Both phases through the real Hydra config: what comes out, not only that nothing crashed."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_dataset, make_fov_dataset
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from locseg.io import json_safe
from locseg.train import run_job

FAST = [
    "data.image_size=32",
    "data.batch_size=4",
    "data.num_folds=3",
    "net.base_width=4",
    "net.depth=2",
    "logger=csv",
    "callbacks.progress_bar=null",
    "val_every=2",
    "threads=1",
]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "d", n_masked=12, n_centre_only=16)


def compose_job(phase: str | None, run_dir: Path, root: Path, *overrides: str):
    """A tiny job's config; ``phase=None`` when an override picks it (e.g. ``+sweep=...``)."""
    GlobalHydra.instance().clear()
    chosen = [f"+phase={phase}"] if phase else []
    with initialize_config_module("locseg.conf", version_base="1.3"):
        cfg = compose(
            "train",
            overrides=chosen
            + [f"data.root={root}", f"paths.output_dir={run_dir}"]
            + FAST
            + list(overrides),
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def run(phase, run_dir, root, *overrides) -> dict:
    metrics = run_job(compose_job(phase, run_dir, root, *overrides))
    stored = json.loads((run_dir / "metrics.json").read_text())
    assert stored["status"] == "ok"
    assert stored["test"] == json_safe(metrics["test"])
    return stored


def test_fast_dev_run_both_phases(tmp_path, data_root):
    loc = run("localize", tmp_path / "L", data_root, "+trainer.fast_dev_run=true")
    assert (tmp_path / "L" / "encoder.pt").is_file()
    assert {"dist_px", "mse_px2", "baseline_dist_px", "dist_frac_width"} <= set(loc["test"])
    seg = run(
        "segment",
        tmp_path / "S",
        data_root,
        "+trainer.fast_dev_run=true",
        "model.init=localizer",
        f"model.encoder_ckpt={tmp_path / 'L' / 'encoder.pt'}",
    )
    expected = {
        "phase",
        "fold",
        "fraction",
        "init",
        "freeze_encoder",
        "arm",
        "val",
        "test",
        "per_image_test_dice",
        "wall_time_s",
        "config_hash",
        "n_train",
        "n_test",
    }
    assert expected <= set(seg)
    assert seg["arm"] == "localizer-frozen" and seg["init"] == "localizer"
    assert len(seg["per_image_test_dice"]) == seg["n_test"] == 4
    assert all(key.startswith("seg_") for key in seg["per_image_test_dice"])


def test_handoff_frozen_encoder_is_bit_identical(tmp_path, data_root):
    run("localize", tmp_path / "L", data_root, "steps.localize=4")
    encoder = torch.load(tmp_path / "L" / "encoder.pt", weights_only=True)["state_dict"]
    seg = run(
        "segment",
        tmp_path / "S",
        data_root,
        "steps.segment=6",
        "data.fraction=0.5",
        "model.init=localizer",
        f"model.encoder_ckpt={tmp_path / 'L' / 'encoder.pt'}",
    )
    best = torch.load(seg["best_checkpoint"], weights_only=False)["state_dict"]
    for name, tensor in encoder.items():
        assert torch.equal(best[f"encoder.{name}"], tensor), name
    assert seg["fraction"] == 0.5 and seg["n_train"] < 8


def test_wrong_architecture_fails_at_start_with_both_shapes(tmp_path, data_root):
    run("localize", tmp_path / "L", data_root, "+trainer.fast_dev_run=true")
    cfg = compose_job(
        "segment",
        tmp_path / "S",
        data_root,
        "net.base_width=8",
        "model.init=localizer",
        f"model.encoder_ckpt={tmp_path / 'L' / 'encoder.pt'}",
    )
    with pytest.raises(ValueError) as raised:
        run_job(cfg)
    message = str(raised.value)
    assert "base_width" in message and "(4, 1, 3, 3)" in message and "(8, 1, 3, 3)" in message
    failed = json.loads((tmp_path / "S" / "metrics.json").read_text())
    assert failed["status"] == "failed" and "encoder" in failed["error"].lower()


def test_missing_encoder_names_the_fix(tmp_path, data_root):
    cfg = compose_job("segment", tmp_path / "S", data_root, "model.init=localizer")
    with pytest.raises(FileNotFoundError, match="model.encoder_ckpt"):
        run_job(cfg)


def test_finished_job_is_skipped(tmp_path, data_root, monkeypatch):
    first = run("segment", tmp_path / "S", data_root, "+trainer.fast_dev_run=true")
    import locseg.training.job

    monkeypatch.setattr(locseg.training.job, "train", lambda *a: pytest.fail("should have skipped"))
    again = run_job(compose_job("segment", tmp_path / "S", data_root, "+trainer.fast_dev_run=true"))
    assert again["config_hash"] == first["config_hash"]


def logged_value(run_file: Path, key: str) -> float:
    """Read a history value from an offline W&B run file (protobuf: key, then value_json).

    The W&B service may still be flushing the file just after ``wandb.finish()``: poll briefly.
    """
    pattern = re.compile(re.escape(key.encode()) + rb"\x82\x01(.)", re.DOTALL)
    for _ in range(50):
        blob = run_file.read_bytes()
        if match := pattern.search(blob):
            start = match.end()
            return float(blob[start : start + match.group(1)[0]].decode())
        time.sleep(0.2)
    raise AssertionError(f"{key} not found in {run_file}")


def test_wandb_offline_run_holds_the_metrics(tmp_path, data_root):
    seg = run("segment", tmp_path / "S", data_root, "steps.segment=2", "logger=default")
    (run_file,) = (tmp_path / "S" / "wandb").glob("offline-run-*/run-*.wandb")
    assert logged_value(run_file, "test/loss") == pytest.approx(seg["test"]["loss"])
    assert (tmp_path / "S" / "csv" / "metrics.csv").is_file()


def test_segment_metrics_hold_native_resolution_scores(tmp_path, data_root):
    seg = run("segment", tmp_path / "S", data_root, "steps.segment=4")
    test = seg["test"]
    assert {"dice_native", "iou_native", "hd95_native_px"} <= set(test)
    native = seg["per_image_test_dice_native"]
    assert set(native) == set(seg["per_image_test_dice"])
    assert test["dice_native"] == pytest.approx(sum(native.values()) / len(native))


def test_rerun_overwrites_best_checkpoint(tmp_path, data_root):
    """A re-run in the same folder used to save best-v1.ckpt beside the best.ckpt predict reads."""
    run("segment", tmp_path / "S", data_root, "steps.segment=2")
    run("segment", tmp_path / "S", data_root, "steps.segment=2", "skip_done=false")
    names = sorted(p.name for p in (tmp_path / "S" / "checkpoints").iterdir())
    assert names == ["best.ckpt", "last.ckpt"]


def test_retrained_localizer_makes_segment_jobs_rerun(tmp_path, data_root, monkeypatch):
    """The encoder's bytes are part of the job identity (encoder_ckpt is null in sweeps)."""
    encoder = f"model.encoder_ckpt={tmp_path / 'L' / 'encoder.pt'}"
    run("localize", tmp_path / "L", data_root, "steps.localize=2")
    first = run(
        "segment", tmp_path / "S", data_root, "steps.segment=2", "model.init=localizer", encoder
    )
    run("localize", tmp_path / "L", data_root, "steps.localize=3", "seed=7")
    again = run(
        "segment", tmp_path / "S", data_root, "steps.segment=2", "model.init=localizer", encoder
    )
    assert again["config_hash"] != first["config_hash"]
    assert again["identity"]["encoder"] != first["identity"]["encoder"]
    assert again["identity"]["splits"] == first["identity"]["splits"]


def test_encoder_of_another_fold_is_refused(tmp_path):
    """Without a centre-only pool each fold has its own localizer; another fold's saw our tests."""
    root = make_dataset(tmp_path / "masked_only", n_masked=12)
    run("localize", tmp_path / "L", root, "+trainer.fast_dev_run=true", "data.fold=0")
    cfg = compose_job(
        "segment",
        tmp_path / "S",
        root,
        "data.fold=1",
        "model.init=localizer",
        f"model.encoder_ckpt={tmp_path / 'L' / 'encoder.pt'}",
    )
    with pytest.raises(ValueError, match="may have seen this fold's test images"):
        run_job(cfg)


def test_sweeper_objective_is_the_validation_metric(tmp_path, data_root):
    from locseg.train import objective

    cfg = compose_job("segment", tmp_path / "S", data_root, "steps.segment=4")
    metrics = run_job(cfg)
    assert objective(cfg, metrics) == metrics["val"]["dice"]
    loc_cfg = compose_job("localize", tmp_path / "L", data_root, "steps.localize=2")
    loc = run_job(loc_cfg)
    assert objective(loc_cfg, loc) == loc["val"]["dist_px"]


def test_shared_localizer_is_tested_on_every_fold(tmp_path, data_root):
    loc = run("localize", tmp_path / "L", data_root, "steps.localize=4")
    folds = loc["test_folds"]
    assert sorted(folds) == ["0", "1", "2"] and not loc["per_fold"]
    assert folds["0"] == loc["test"]
    assert len({round(f["baseline_dist_px"], 6) for f in folds.values()}) == 3  # other images


def test_centre_only_folder_localizes_on_its_own(tmp_path):
    """Validation and test are carved from its centres; segmenting it says why it cannot."""
    from locseg.data.synthetic import generate_dataset

    root = generate_dataset(tmp_path / "centres", 15, 0, size=64, progress=False)
    loc = run("localize", tmp_path / "L", root, "steps.localize=4")
    assert loc["per_fold"] and loc["n_test"] == 5 and loc["n_train"] + loc["n_val"] == 10
    with pytest.raises(ValueError, match="no image has a mask"):
        run_job(compose_job("segment", tmp_path / "S", root, "steps.segment=2"))


def test_pool_trains_one_localizer_without_copies_of_masked_images(tmp_path):
    """A pool folder holding a re-encoded copy of a masked image: the copy is dropped and named."""
    import cv2

    from locseg.data.dataset import load_dataset, read_image, write_image
    from locseg.data.synthetic import generate_dataset

    root = generate_dataset(tmp_path / "root", 0, 12, size=64, seed=1, progress=False)
    masked = load_dataset(root).masked()[0]
    pool = generate_dataset(tmp_path / "pool", 10, 0, size=96, seed=2, progress=False)
    copy = cv2.resize(read_image(masked.image_path), (96, 96), interpolation=cv2.INTER_AREA)
    write_image(pool / "images" / "copy_of_seg.jpg", copy)  # resized and re-encoded
    with (pool / "centers.csv").open("a") as handle:
        handle.write("copy_of_seg,48.0,48.0\n")
    loc = run("localize", tmp_path / "L", root, "steps.localize=4", f"data.pool=[{pool}]")
    assert loc["pool_dropped"] == 1 and not loc["per_fold"]
    assert loc["n_train"] + loc["n_val"] == 10  # the pool only, without the copy
    dropped = (tmp_path / "L" / "pool_dropped.csv").read_text().splitlines()
    assert len(dropped) == 2 and "copy_of_seg" in dropped[1] and masked.image_id in dropped[1]
    assert sorted(loc["test_folds"]) == ["0", "1", "2"]


# --------------------------------------------------------------------------- field-of-view frames


@pytest.fixture(scope="module")
def fov_root(tmp_path_factory) -> Path:
    return make_fov_dataset(tmp_path_factory.mktemp("fov") / "d", n_masked=12, n_centre_only=8)


def test_crop_fov_segment_native_dice_goes_back_through_the_frame(tmp_path, fov_root):
    """Photograph -> FOV square -> network -> back through the frame -> vs the mask file; the
    same numbers from training's metrics, ``locseg.evaluate`` and ``locseg.predict``."""
    from locseg.data.dataset import load_dataset, read_image, read_mask
    from locseg.data.frames import mask_from_frame
    from locseg.data.preprocess import preprocess_framed
    from locseg.evaluate import evaluate
    from locseg.evaluation.metrics import dice
    from locseg.inference.batches import forward
    from locseg.inference.checkpoints import load_model
    from locseg.predict import predict

    seg = run(
        "segment",
        tmp_path / "S",
        fov_root,
        "steps.segment=6",
        "model.lr=1e-2",
        "data.preprocess.crop_fov=true",
        "postprocess.tta=false",
        "postprocess.largest=false",
        "postprocess.fill=false",
    )
    model = load_model(Path(seg["best_checkpoint"]), torch.device("cpu"))
    assert model.preprocess.crop_fov
    by_id = load_dataset(fov_root).by_id()
    for image_id, value in seg["per_image_test_dice_native"].items():
        photo = read_image(by_id[image_id].image_path)
        pixels, frame = preprocess_framed(photo, model.preprocess)
        assert not frame.is_identity((64, 48)) and frame.width == frame.height
        prob = forward(model.module, pixels[None], torch.device("cpu"))[0]
        pred = mask_from_frame(prob, frame, (64, 48)) > 0.5
        assert value == pytest.approx(dice(pred, read_mask(by_id[image_id].mask_path)), abs=1e-9)
    assert seg["postprocess_choice"]["steps"][0]["source"] == "config"
    assert seg["test"]["dice_native_post"] == seg["test"]["dice_native"]  # every switch off
    evaluated = evaluate(seg["best_checkpoint"], fov_root, tmp_path / "E", device="cpu")
    assert evaluated["metrics"]["dice_native"] == pytest.approx(seg["test"]["dice_native"])
    photos = tmp_path / "photos"
    photos.mkdir()
    image_id = next(iter(seg["per_image_test_dice_native"]))
    (photos / f"{image_id}.png").write_bytes(by_id[image_id].image_path.read_bytes())
    predict(seg["best_checkpoint"], photos, tmp_path / "P", device="cpu")
    written = read_mask(tmp_path / "P" / "masks" / f"{image_id}.png")
    truth = read_mask(by_id[image_id].mask_path)
    assert dice(written, truth) == pytest.approx(seg["per_image_test_dice_native"][image_id])


def test_crop_fov_localizer_distance_is_in_native_pixels(tmp_path, fov_root):
    """``dist_px`` of a crop_fov localizer: its frame-normalised output mapped to native px
    (``from_frame``), compared with the centre of centers.csv."""
    from locseg.data.dataset import load_dataset
    from locseg.data.frames import from_frame
    from locseg.data.preprocess import PreprocessConfig, preprocess_dataset
    from locseg.inference.batches import forward
    from locseg.inference.checkpoints import load_model

    loc = run("localize", tmp_path / "L", fov_root, "steps.localize=4", *FOV)
    model = load_model(Path(loc["best_checkpoint"]), torch.device("cpu"))
    dataset = load_dataset(fov_root)
    config = PreprocessConfig(image_size=32, crop_fov=True)
    data = preprocess_dataset(dataset, config, tmp_path / "cache")
    by_id, index_of = dataset.by_id(), data.index_of()
    for fold, tested in loc["test_folds"].items():
        test_ids = splits_test_ids(fov_root, int(fold))
        rows = [index_of[i] for i in test_ids]
        uv = forward(model.module, np.asarray(data.images[rows]), torch.device("cpu"))
        dists = []
        for image_id, row, point in zip(test_ids, rows, uv, strict=True):
            frame = data.frame(row)
            assert not frame.is_identity((64, 48))
            xy = from_frame(point, frame)
            dists.append(float(np.hypot(*(xy - np.asarray(by_id[image_id].center)))))
        assert tested["dist_px"] == pytest.approx(np.mean(dists), abs=1e-3)


FOV = ["data.preprocess.crop_fov=true"]


def splits_test_ids(root: Path, fold: int) -> list[str]:
    splits = json.loads((root / "splits_k3_val0.2_seed1234.json").read_text())
    return list(splits["folds"][fold]["test"])


# --------------------------------------------------------------------------- disc-centred crops

ROI = ["roi=disc", "data.image_size=32"]


@pytest.fixture(scope="module")
def roi_jobs(tmp_path_factory, data_root) -> dict:
    """A shared localizer (4 steps) and a scratch crop segmenter placed by it."""
    tmp = tmp_path_factory.mktemp("roi_jobs")
    run("localize", tmp / "L", data_root, "steps.localize=4", "data.image_size=32")
    localizer = tmp / "L" / "checkpoints" / "best.ckpt"
    seg = run(
        "segment",
        tmp / "S",
        data_root,
        "steps.segment=6",
        "model.lr=1e-2",
        *ROI,
        f"roi.localizer_ckpt={localizer}",
    )
    return {"tmp": tmp, "localizer": localizer, "seg": seg}


def test_roi_job_scores_crops_around_the_localizer_centres(roi_jobs, data_root):
    """Native Dice of a roi=disc job: crop around the *predicted* centre, segment, paste back."""
    from locseg.data.dataset import load_dataset, read_image, read_mask
    from locseg.evaluation.metrics import dice
    from locseg.inference.batches import forward, predict_centres, segment
    from locseg.inference.checkpoints import load_model
    from locseg.inference.postprocess import PostProcess
    from locseg.roi.geometry import box_around, crop_input, paste_back

    seg, localizer = roi_jobs["seg"], roi_jobs["localizer"]
    roi = seg["roi"]
    assert roi["localizer"] == str(localizer) and roi["test_centres"] == "predicted"
    assert roi["crop_size"] == 32 and roi["side_px"] > 0
    assert seg["identity"]["localizer"] == hashlib.sha256(localizer.read_bytes()).hexdigest()
    loc = load_model(localizer, torch.device("cpu"))
    dataset = load_dataset(data_root)
    from locseg.data.preprocess import preprocess_dataset

    loc_data = preprocess_dataset(dataset, loc.preprocess, roi_jobs["tmp"] / "cache")
    test_ids = sorted(seg["per_image_test_dice_native"])
    centres = predict_centres(loc.module, loc_data, test_ids)
    segmenter = load_model(Path(seg["best_checkpoint"]), torch.device("cpu"))
    assert segmenter.roi_side == roi["side_px"]
    choice = seg["postprocess_choice"]  # chosen on the validation crops, applied to the test
    assert choice["n_val"] == seg["n_val"]
    assert [step["source"] for step in choice["steps"]] == ["validation"] * 3
    chosen = PostProcess(choice["largest"], choice["fill"], choice["tta"])
    by_id = dataset.by_id()
    for image_id in test_ids:
        sample = by_id[image_id]
        truth_xy = np.asarray(sample.center)
        error = float(np.hypot(*(np.asarray(centres[image_id]) - truth_xy)))
        assert seg["per_image_test_centre_dist_px"][image_id] == pytest.approx(error, abs=1e-3)
        box = box_around(centres[image_id], roi["side_px"])
        pixels = crop_input(read_image(sample.image_path), box, segmenter.preprocess)
        prob = forward(segmenter.module, pixels[None], torch.device("cpu"))[0]
        pred = paste_back(prob, box, (48, 48)) > 0.5
        truth = read_mask(sample.mask_path)
        expected = dice(pred, truth)
        assert seg["per_image_test_dice_native"][image_id] == pytest.approx(expected, abs=1e-9)
        prob = segment(segmenter.module, pixels[None], torch.device("cpu"), chosen.tta)[0]
        posted = dice(chosen.apply(paste_back(prob, box, (48, 48)) > 0.5), truth)
        assert seg["per_image_test_dice_native_post"][image_id] == pytest.approx(posted, abs=1e-9)
    errors = seg["per_image_test_centre_dist_px"].values()
    assert roi["centre_dist_px"] == pytest.approx(sum(errors) / len(errors))


def test_roi_job_identity_follows_the_localizer_bytes(roi_jobs, data_root, tmp_path):
    """Retraining the localizer reruns every roi job (its centres place the test crops)."""
    first = roi_jobs["seg"]
    (tmp_path / "L").mkdir()
    shutil.copytree(roi_jobs["tmp"] / "L", tmp_path / "L", dirs_exist_ok=True)
    localizer = tmp_path / "L" / "checkpoints" / "best.ckpt"
    overrides = ["steps.segment=2", *ROI, f"roi.localizer_ckpt={localizer}"]
    same = run("segment", tmp_path / "S", data_root, *overrides)
    assert same["identity"]["localizer"] == first["identity"]["localizer"]
    run("localize", tmp_path / "L", data_root, "steps.localize=3", "seed=7", "data.image_size=32")
    again = run("segment", tmp_path / "S", data_root, *overrides)
    assert again["identity"]["localizer"] != same["identity"]["localizer"]
    assert again["config_hash"] != same["config_hash"]


def test_roi_localizer_of_another_fold_is_refused(tmp_path):
    """Without a centre-only pool each fold has its own localizer; fold 0's saw fold 1's tests.
    The scratch arm is refused too: its test crops would come from that localizer."""
    root = make_dataset(tmp_path / "masked_only", n_masked=12)
    run("localize", tmp_path / "L", root, "+trainer.fast_dev_run=true", "data.image_size=32")
    localizer = tmp_path / "L" / "checkpoints" / "last.ckpt"
    cfg = compose_job(
        "segment", tmp_path / "S", root, "data.fold=1", *ROI, f"roi.localizer_ckpt={localizer}"
    )
    with pytest.raises(ValueError, match="may have seen this fold's test images"):
        run_job(cfg)


def test_roi_in_a_segment_sweep_finds_the_localizer_beside_the_encoder(roi_jobs, data_root):
    """``+sweep=segment roi=disc``: SWEEP/localize/shared/checkpoints/best.ckpt places the crops."""
    sweep = roi_jobs["tmp"] / "sweep"
    shared = sweep / "localize" / "shared"
    shutil.copytree(roi_jobs["tmp"] / "L", shared)
    GlobalHydra.instance().clear()
    with initialize_config_module("locseg.conf", version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "+sweep=segment",
                f"sweep_dir={sweep}",
                f"data.root={data_root}",
                f"paths.output_dir={sweep / 'segment' / 'job'}",
                "init=localizer-frozen",
                *FAST,
                *ROI,
                "steps.segment=2",
            ],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    metrics = run_job(cfg)
    assert metrics["status"] == "ok" and metrics["arm"] == "localizer-frozen"
    assert metrics["roi"]["localizer"] == str(shared / "checkpoints" / "best.ckpt")
    assert (
        metrics["identity"]["encoder"]
        == hashlib.sha256((shared / "encoder.pt").read_bytes()).hexdigest()
    )


def test_budget_shorter_than_val_every_still_checkpoints(tmp_path, data_root):
    """20 steps with val_every=40 used to end without a validation, so without best.ckpt."""
    seg = run("segment", tmp_path / "S", data_root, "steps.segment=3", "val_every=40")
    assert seg["best_checkpoint"] and Path(seg["best_checkpoint"]).name == "best.ckpt"
    assert (tmp_path / "S" / "checkpoints" / "best.ckpt").is_file()
