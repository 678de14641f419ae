"""The template's debug group and the Optuna search: each asserts what it is for."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_train import compose_job, data_root, run  # noqa: F401  (fixture)

from locseg.train import run_job


def _train_losses(run_dir: Path) -> list[float]:
    with (run_dir / "csv" / "metrics.csv").open() as handle:
        return [float(r["train/loss"]) for r in csv.DictReader(handle) if r.get("train/loss")]


def test_overfit_debug_drives_the_loss_down(tmp_path, data_root):  # noqa: F811
    run(
        "segment", tmp_path / "S", data_root, "debug=overfit", "steps.segment=60", "lr.segment=1e-2"
    )
    losses = _train_losses(tmp_path / "S")
    assert len(losses) >= 30
    assert losses[-1] < 0.3 * losses[0], losses[::10]


def test_fast_debug_runs_one_batch_per_stage(tmp_path, data_root):  # noqa: F811
    metrics = run_job(compose_job("segment", tmp_path / "S", data_root, "debug=fast"))
    assert metrics["status"] == "ok" and metrics["epochs"] == 1
    assert not (tmp_path / "S" / "csv").exists()  # debug=fast logs nowhere


def test_limit_debug_tests_only_a_few_batches(tmp_path, data_root):  # noqa: F811
    seg = run("segment", tmp_path / "S", data_root, "debug=limit", "data.batch_size=1")
    assert seg["n_test"] == 4 and len(seg["per_image_test_dice"]) == 2


def test_profile_debug_writes_the_profile(tmp_path, data_root):  # noqa: F811
    run("segment", tmp_path / "S", data_root, "debug=profile", "steps.segment=5")
    assert "run_training_batch" in (tmp_path / "S" / "fit-profile.txt").read_text()


@pytest.mark.slow
def test_optuna_search_optimises_the_validation_dice(tmp_path, data_root):  # noqa: F811
    sweep = tmp_path / "opt"
    command = [
        sys.executable,
        "-m",
        "locseg.train",
        "+phase=segment",
        "hparams_search=segment_optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=2",
        "trainer.max_steps=3",  # pins the budget the sweeper samples: a test-sized trial
        f"hydra.sweep.dir={sweep}",
        f"data.root={data_root}",
        "data.image_size=32",
        "data.num_folds=3",
        "net.base_width=4",
        "net.depth=2",
        "logger=csv",
        "callbacks.progress_bar=null",
        "val_every=1",
        "threads=1",
    ]
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())["best_value"]
    trials = [json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")]
    assert len(trials) == 2
    assert best == pytest.approx(max(t["val"]["dice"] for t in trials))
    assert all(t["test"]["dice"] is not None for t in trials)
