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


def _md_rows(text: str, heading: str) -> list[dict[str, str]]:
    """Rows of the first markdown table after ``heading``, keyed by the header."""
    lines = text.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i, line in enumerate(lines[start:], start) if not line.startswith("|")), None)
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[start:end]]
    return [dict(zip(cells[0], row, strict=True)) for row in cells[2:]]


def test_report_ttest_equals_scipy(sweep, tmp_path):
    """The fold table's t and p of one comparison are scipy's paired t-test of the Dice the report
    compares (test.dice_native): on a copy of the sweep whose 100% folds are set to differ
    unequally (a finite p; equal differences would make it NaN)."""
    import shutil

    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy, ignore=shutil.ignore_patterns("*.ckpt", "*.pt", "*.png"))
    chosen = {"localizer-frozen": [0.80, 0.84], "scratch": [0.70, 0.71]}
    for arm, values in chosen.items():
        for fold, value in enumerate(values):
            path = copy / f"segment/frac_1.0/fold_{fold}/{arm}/metrics.json"
            metrics = json.loads(path.read_text())
            metrics["test"]["dice_native"] = value
            path.write_text(json.dumps(metrics))
    locseg("locseg.report", str(copy), "--no-wandb")
    expected = stats.ttest_rel(chosen["localizer-frozen"], chosen["scratch"])
    assert 0 < expected.pvalue < 1  # t = 7.667, p = 0.0826
    report = (copy / "report.md").read_text()
    rows = _md_rows(report, "### Over folds")
    (row,) = [r for r in rows if (r["labels"], r["arm"]) == ("100%", "localizer-frozen")]
    assert row["folds"] == "2" and row["Δ Dice"] == "+0.115"
    assert row["t"] == f"{expected.statistic:.3f}" == "7.667"
    assert row["p (paired t)"] == f"{expected.pvalue:.3g}"


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
    """Each job logs its process id and the time it ended (its log format), metrics.json its wall
    time, the launcher its own process id: two worker processes, not the launcher, that overlap."""
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
        "hydra.job_logging.formatters.simple.format='JOB %(process)d %(created)f %(message)s'",
        "hydra.hydra_logging.formatters.simple.format='LAUNCHER %(process)d %(message)s'",
    )
    jobs = [json.loads(p.read_text()) for p in sweep.rglob("metrics.json")]
    assert sorted(job["fraction"] for job in jobs) == [0.5, 1.0]
    assert all(job["status"] == "ok" for job in jobs)
    output = result.stdout + result.stderr  # worker processes are quiet too
    assert "litlogger" not in output and "LeafSpec" not in output, output[-2000:]
    runs = []
    for job in jobs:
        log = (Path(job["run_dir"]) / "train.log").read_text()
        (line,) = [line for line in log.splitlines() if "test dice=" in line]
        _, pid, ended, _ = line.split(" ", 3)
        runs.append((int(pid), float(ended) - job["wall_time_s"], float(ended)))
    (pid_a, start_a, end_a), (pid_b, start_b, end_b) = runs
    assert pid_a != pid_b, "both jobs ran in one process"
    launcher = {int(line.split()[1]) for line in output.splitlines() if line.startswith("LAUNCHER")}
    assert len(launcher) == 1 and launcher.isdisjoint({pid_a, pid_b}), (launcher, runs)
    assert max(start_a, start_b) < min(end_a, end_b), f"the jobs ran one after the other: {runs}"


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
