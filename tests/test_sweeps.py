"""Sweeps as a user runs them: subprocesses, the sweep layout, resume, launchers, DDP, report."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_dataset
from scipy import stats

REPO = Path(__file__).resolve().parents[1]
FAST = [
    "data.image_size=32",
    "data.batch_size=4",
    "data.num_folds=2",
    "net.base_width=4",
    "net.depth=2",
    "steps.localize=4",
    "steps.segment=4",
    "val_every=2",
    "threads=1",
    "logger=csv",
    "callbacks.progress_bar=null",
    "callbacks.overlays=null",
]


def locseg(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def metrics_files(sweep: Path) -> dict[str, Path]:
    return {str(p.parent.relative_to(sweep)): p for p in sweep.rglob("metrics.json")}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "d", n_masked=12, n_centre_only=12)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, data_root) -> Path:
    """Localize once, then 2 fractions x 2 folds x the three default arms, then the report."""
    sweep = tmp_path_factory.mktemp("sweep")
    common = [f"sweep_dir={sweep}", f"data.root={data_root}", *FAST]
    locseg("locseg.train", "-m", "+sweep=localize", *common)
    locseg(
        "locseg.train", "-m", "+sweep=segment", *common, "data.fraction=0.5,1.0", "data.fold=0,1"
    )
    locseg("locseg.report", str(sweep), "--no-wandb")
    return sweep


def test_sweep_layout_and_report(sweep):
    files = metrics_files(sweep)
    assert "localize/shared" in files and (sweep / "localize/shared/encoder.pt").is_file()
    segment = sorted(k for k in files if k.startswith("segment/"))
    assert len(segment) == 12
    arms = {k.rsplit("/", 1)[1] for k in segment}
    assert arms == {"scratch", "localizer-frozen", "localizer-finetune"}
    for name in ("results.csv", "report.md", "dice_vs_fraction.png"):
        assert (sweep / name).is_file(), name
    rows = list(csv.DictReader((sweep / "results.csv").open()))
    assert sum(row["phase"] == "segment" for row in rows) == 12
    assert all(row["status"] == "ok" for row in rows)


def test_report_ttest_equals_scipy(sweep):
    def fold_dice(arm: str, fraction: float) -> list[float]:
        jobs = [
            json.loads(p.read_text())
            for p in sweep.glob(f"segment/frac_{fraction}/fold_*/{arm}/metrics.json")
        ]
        return [job["test"]["dice"] for job in sorted(jobs, key=lambda job: job["fold"])]

    report = (sweep / "report.md").read_text()
    a, b = fold_dice("localizer-frozen", 1.0), fold_dice("scratch", 1.0)
    expected = stats.ttest_rel(a, b)
    if expected.pvalue == expected.pvalue:  # NaN when both folds tie exactly
        assert f"{expected.statistic:.3f}" in report or f"{expected.statistic:.2f}" in report


def test_resume_reruns_exactly_the_missing_jobs(sweep, data_root):
    files = metrics_files(sweep)
    removed = ["segment/frac_0.5/fold_0/scratch", "segment/frac_1.0/fold_1/localizer-frozen"]
    before = {k: p.stat().st_mtime_ns for k, p in files.items()}
    for name in removed:
        files[name].unlink()
    common = [f"sweep_dir={sweep}", f"data.root={data_root}", *FAST]
    result = locseg(
        "locseg.train", "-m", "+sweep=segment", *common, "data.fraction=0.5,1.0", "data.fold=0,1"
    )
    after = {k: p.stat().st_mtime_ns for k, p in metrics_files(sweep).items()}
    assert set(after) == set(before)
    changed = sorted(k for k in after if after[k] != before[k])
    assert changed == sorted(removed)
    assert (result.stdout + result.stderr).count("skipping") == 10


def test_failing_jobs_do_not_stop_the_sweep_and_are_reported(tmp_path, data_root):
    """No localizer in this sweep: the localizer arm fails fast, scratch still runs."""
    sweep = tmp_path / "sweep"
    locseg(
        "locseg.train",
        "-m",
        "+sweep=segment",
        f"sweep_dir={sweep}",
        f"data.root={data_root}",
        *FAST,
        "data.fraction=1.0",
        "data.fold=0",
        "init=scratch,localizer-frozen",
    )
    jobs = {k: json.loads(p.read_text()) for k, p in metrics_files(sweep).items()}
    assert jobs["segment/frac_1.0/fold_0/scratch"]["status"] == "ok"
    failed = jobs["segment/frac_1.0/fold_0/localizer-frozen"]
    assert failed["status"] == "failed" and "no encoder checkpoint for fold 0" in failed["error"]
    locseg("locseg.report", str(sweep), "--no-wandb")
    report = (sweep / "report.md").read_text()
    assert "segment-localizer-frozen-frac1.0-fold0" in report


def test_joblib_launcher_runs_jobs_in_parallel_processes(tmp_path, data_root):
    sweep = tmp_path / "sweep"
    result = locseg(
        "locseg.train",
        "-m",
        "+sweep=segment",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        f"sweep_dir={sweep}",
        f"data.root={data_root}",
        *FAST,
        "data.fraction=0.5,1.0",
        "data.fold=0",
        "init=scratch",
    )
    jobs = [json.loads(p.read_text()) for p in sweep.rglob("metrics.json")]
    assert sorted(job["fraction"] for job in jobs) == [0.5, 1.0]
    assert all(job["status"] == "ok" for job in jobs)
    output = result.stdout + result.stderr  # worker processes are quiet too
    assert "litlogger" not in output and "LeafSpec" not in output, output[-2000:]


def test_submitit_local_launcher(tmp_path, data_root):
    sweep = tmp_path / "sweep"
    locseg(
        "locseg.train",
        "-m",
        "+sweep=segment",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        f"sweep_dir={sweep}",
        f"data.root={data_root}",
        *FAST,
        "data.fraction=1.0",
        "data.fold=0",
        "init=scratch",
    )
    (metrics,) = sweep.rglob("metrics.json")
    assert json.loads(metrics.read_text())["status"] == "ok"
    assert list(sweep.rglob("*_submitted.pkl")) or list(sweep.rglob(".submitit"))


def test_ddp_fit_with_two_cpu_processes(tmp_path):
    run_dir = tmp_path / "ddp"
    odd_root = make_dataset(tmp_path / "odd", n_masked=14)
    result = locseg(
        "locseg.train",
        "+phase=segment",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        f"data.root={odd_root}",
        f"hydra.run.dir={run_dir}",
        *FAST,
        "data.batch_size=2",
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "ok" and 0 <= metrics["test"]["dice"] <= 1
    per_image = metrics["per_image_test_dice"]  # an odd test fold: DistributedSampler pads one
    assert len(per_image) == metrics["n_test"] == 7
    assert metrics["test"]["dice"] == pytest.approx(sum(per_image.values()) / 7, abs=1e-6)
    assert "world_size=2" in (result.stdout + result.stderr).replace(
        " ", ""
    ) or "GLOBAL_RANK: 1" in (result.stdout + result.stderr)


def test_optuna_search_goes_on_past_failed_and_diverged_trials(tmp_path, data_root):
    """#16.6: a diverged trial (val/dist_px NaN after one absurd step) used to end the study
    (Optuna 2 refuses to tell NaN, then refuses the FAIL with values); a failed one (lr < 0:
    the optimizer refuses it) must be recorded as FAIL too, and the search go on."""
    import yaml

    sweep = tmp_path / "opt"
    done = locseg(
        "locseg.train",
        "-m",
        "+phase=localize",
        "hparams_search=localize_optuna",
        *FAST,
        "hydra.sweeper.n_trials=6",
        "hydra.sweeper.sampler.n_startup_trials=6",  # seeded random draws: all three values
        "lr.localize=choice(1e30,-1.0,1e-3)",  # diverges, fails, trains
        "steps.localize=1",  # one step: the divergence guard never sees the NaN weights
        f"hydra.sweep.dir={sweep}",
        f"data.root={data_root}",
    )
    trials = {}
    for k in range(6):  # every trial ran
        overrides = yaml.safe_load((sweep / str(k) / ".hydra" / "overrides.yaml").read_text())
        lr = float(next(o for o in overrides if o.startswith("lr.localize=")).split("=")[1])
        trials[k] = (lr, json.loads((sweep / str(k) / "metrics.json").read_text()))
    by_lr = {lr: [m for v, m in trials.values() if v == lr] for lr in (1e30, -1.0, 1e-3)}
    assert all(by_lr.values()), {lr: len(m) for lr, m in by_lr.items()}  # seeded: every case
    assert all(m["status"] == "failed" for m in by_lr[-1.0])
    assert all(m["status"] == "ok" for m in by_lr[1e30] + by_lr[1e-3])
    assert all(m["val"]["dist_px"] is None for m in by_lr[1e30])  # NaN, written as null
    failed = len(by_lr[-1.0]) + len(by_lr[1e30])
    assert (done.stdout + done.stderr).count("Failed experiment") == failed  # Optuna: FAIL
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_params"] == {"lr.localize": 1e-3}
    assert best["best_value"] == pytest.approx(min(m["val"]["dist_px"] for m in by_lr[1e-3]))


def test_optuna_searches_record_failed_trials_and_go_on():
    """The sweeper's default max_failure_rate=0.0 ends a study at the first job that raises."""
    import yaml

    for name in ("segment_optuna", "localize_optuna"):
        config = yaml.safe_load((REPO / "conf" / "hparams_search" / f"{name}.yaml").read_text())
        assert config["hydra"]["sweeper"]["max_failure_rate"] == 1.0, name
