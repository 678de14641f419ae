"""A re-run that fails keeps the job's finished result and the report names its error."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import make_dataset
from test_train import compose_job

from locseg.experiments.report import collect, write_report
from locseg.experiments.sweep import (
    FAILURE_FILE,
    finished_result,
    write_failure,
    write_metrics,
)
from locseg.train import run_job

REFUSAL = "these folds were made for other masked images or patient groups"


def regroup(root: Path, groups: int) -> None:
    """Give the masked images patient groups: the persisted folds no longer fit them."""
    path = root / "centers.csv"
    rows = list(csv.DictReader(path.open()))
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "x", "y", "group"])
        for i, row in enumerate(rows):
            writer.writerow([row["image"], row["x"], row["y"], f"p{i % groups}"])


def test_setup_failure_of_a_rerun_keeps_the_result_and_the_report_shows_its_error(tmp_path):
    root = make_dataset(tmp_path / "d", n_masked=12)
    run_dir = tmp_path / "sweep" / "segment" / "job"
    common = [f"data.cache_dir={tmp_path / 'cache'}", "steps.segment=2", "callbacks.overlays=null"]
    first = run_job(compose_job("segment", run_dir, root, *common))
    assert first["status"] == "ok"
    finished = (run_dir / "metrics.json").read_bytes()

    regroup(root, 3)  # the splits refuse the changed groups in set-up
    with pytest.raises(Exception, match=REFUSAL):
        run_job(compose_job("segment", run_dir, root, *common))
    assert (run_dir / "metrics.json").read_bytes() == finished  # the finished result is intact
    failure = json.loads((run_dir / FAILURE_FILE).read_text())
    assert failure["status"] == "failed" and REFUSAL in failure["error"]
    assert failure["kept_result"] == first["config_hash"]

    (rec,) = collect(tmp_path / "sweep")
    assert rec["status"] == "failed" and REFUSAL in rec["error"]
    assert "test" not in rec  # the kept numbers belong to the old folds: not counted
    text = write_report(tmp_path / "sweep")["report_md"].read_text()
    failed = text.split("## Failed jobs (1)", 1)[1].split("##", 1)[0]
    assert f"`{rec['job']}` (`segment/job`): " in failed and REFUSAL in failed
    assert f"config hash {first['config_hash']}, is kept in metrics.json" in failed
    assert "## Stale jobs (0)" in text


def test_a_finished_or_skipped_run_supersedes_the_recorded_failure(tmp_path):
    ok = {"job": "j", "status": "ok", "error": None, "config_hash": "aaa", "test": {"dice": 0.8}}
    write_metrics(tmp_path, ok)
    write_failure(tmp_path, {"job": "j", "status": "failed", "error": "ValueError: boom"})
    assert json.loads((tmp_path / "metrics.json").read_text()) == ok
    assert (tmp_path / FAILURE_FILE).is_file()
    assert finished_result(tmp_path, "aaa") == ok  # skip-if-done: the result is current again
    assert not (tmp_path / FAILURE_FILE).exists()
    write_failure(tmp_path, {"job": "j", "status": "failed", "error": "ValueError: boom"})
    write_metrics(tmp_path, {**ok, "config_hash": "bbb"})  # a re-run finished
    assert not (tmp_path / FAILURE_FILE).exists()
    # With no finished result there is nothing to keep: metrics.json records the failure.
    write_metrics(tmp_path, {"job": "j", "status": "failed", "error": "old"})
    write_failure(tmp_path, {"job": "j", "status": "failed", "error": "ValueError: new"})
    assert json.loads((tmp_path / "metrics.json").read_text())["error"] == "ValueError: new"
    assert not (tmp_path / FAILURE_FILE).exists()
