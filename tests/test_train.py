"""Both phases through the real Hydra config: what comes out, not only that nothing crashed."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import torch
from conftest import make_dataset
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


def compose_job(phase: str, run_dir: Path, root: Path, *overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_module("locseg.conf", version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[f"+phase={phase}", f"data.root={root}", f"paths.output_dir={run_dir}"]
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
    import locseg.train

    monkeypatch.setattr(locseg.train, "train", lambda *a: pytest.fail("should have skipped"))
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
