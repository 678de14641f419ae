"""The report on fake sweeps (job.json and metrics.json written by hand): tables, tests, CLI."""

from __future__ import annotations

import csv
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fake_sweep import job_record as _job
from fake_sweep import md_table
from fake_sweep import write_job as _write_job
from scipy import stats

from locseg.experiments.report import ReportError, collect, write_report
from locseg.experiments.stats import nadeau_bengio_ttest
from locseg.report import main

FRACTIONS = (0.25, 1.0)
FOLDS = (0, 1)
N_TRAIN = {0.25: 6, 1.0: 24}
N_TEST = 8
# test Dice per (fraction, arm, fold): localizer ahead at 25 %, level at 100 %
DICE = {
    (0.25, "scratch", 0): 0.61,
    (0.25, "scratch", 1): 0.66,
    (0.25, "localizer-frozen", 0): 0.74,
    (0.25, "localizer-frozen", 1): 0.76,
    (1.0, "scratch", 0): 0.88,
    (1.0, "scratch", 1): 0.90,
    (1.0, "localizer-frozen", 0): 0.89,
    (1.0, "localizer-frozen", 1): 0.92,
}
PER_IMAGE_OFFSETS = (-0.02, 0.0, 0.01, 0.01)  # per-image Dice = fold Dice + offset (+ arm jitter)


def per_image(fraction: float, arm: str, fold: int) -> dict[str, float]:
    jitter = 0.005 if arm == "localizer-frozen" else 0.0
    return {
        f"img{fold}{i}": DICE[(fraction, arm, fold)] + off + jitter * i
        for i, off in enumerate(PER_IMAGE_OFFSETS)
    }


def make_sweep(root: Path) -> Path:
    """2 fractions x 2 folds x 2 arms of segmentation + 1 localizer = 9 finished jobs."""
    loc_dir = root / "localize" / "0"
    loc_test = {"dist_px": 3.5, "mse_px2": 14.0, "dist_frac_width": 0.055, "baseline_dist_px": 9.0}
    _write_job(
        loc_dir,
        _job("localize", "localize", 0, 1.0, "localize", loc_dir),
        {"status": "ok", "error": None, "val": {"dist_px": 3.0}, "test": {**loc_test, "loss": 0.2},
         "wall_time_s": 5.0, "n_train": 24, "n_val": 0, "n_test": N_TEST},
    )  # fmt: skip
    for i, ((fraction, arm, fold), dice) in enumerate(sorted(DICE.items())):
        run_dir = root / "segment" / f"{i}"
        _write_job(
            run_dir,
            _job(f"seg-{arm}-{fraction}-{fold}", "segment", fold, fraction, arm, run_dir),
            {"status": "ok", "error": None, "val": {"dice": dice},
             "test": {"dice": dice, "iou": dice - 0.1, "loss": 0.3}, "wall_time_s": 2.0,
             "n_train": N_TRAIN[fraction], "n_val": 4, "n_test": N_TEST,
             "per_image_test_dice": per_image(fraction, arm, fold)},
        )  # fmt: skip
    return root


def add_failed_and_incomplete(root: Path) -> None:
    failed_dir = root / "segment" / "failed"
    job = _job("seg-broken", "segment", 0, 0.5, "scratch", failed_dir)
    _write_job(failed_dir, job, {"status": "failed", "error": "ValueError: boom\n  traceback"})
    killed_dir = root / "segment" / "killed"
    _write_job(killed_dir, _job("seg-killed", "segment", 1, 0.5, "scratch", killed_dir), None)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """One report written on the 9-job sweep, shared by the read-only tests below."""
    sweep = make_sweep(tmp_path_factory.mktemp("sweep"))
    paths = write_report(sweep, wandb=False)
    return sweep, paths, paths["report_md"].read_text()


def test_results_csv_has_one_row_per_job(report):
    sweep, paths, _ = report
    assert paths["results_csv"] == sweep / "results.csv"
    with paths["results_csv"].open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 9
    assert {r["status"] for r in rows} == {"ok"}
    assert sorted(r["arm"] for r in rows).count("scratch") == 4
    by_job = {r["job"]: r for r in rows}
    assert float(by_job["seg-localizer-frozen-0.25-1"]["test_dice"]) == 0.76
    assert float(by_job["localize"]["test_dist_px"]) == 3.5
    assert by_job["localize"]["test_dice"] == ""  # other phase's metric left empty


def test_dice_table_has_mean_and_std_over_folds(report):
    _, _, text = report
    rows = {r["labels"]: r for r in md_table(text, "## Segmentation")}
    assert set(rows) == {"25%", "100%"}
    mean, std = np.mean([0.74, 0.76]), np.std([0.74, 0.76], ddof=1)
    assert rows["25%"]["localizer-frozen"] == f"{mean:.3f} ± {std:.3f} (n=2)"


def test_fold_paired_ttest_in_report_equals_scipy(report):
    _, _, text = report
    rows = md_table(text, "### Over folds")
    assert [(r["labels"], r["arm"]) for r in rows] == [
        ("25%", "localizer-frozen"),
        ("100%", "localizer-frozen"),
    ]
    for row, frac in zip(rows, FRACTIONS, strict=True):
        a = [DICE[(frac, "localizer-frozen", k)] for k in FOLDS]
        b = [DICE[(frac, "scratch", k)] for k in FOLDS]
        ref = stats.ttest_rel(a, b)
        assert float(row["t"]) == pytest.approx(ref.statistic, abs=5e-4)
        assert float(row["p (paired t)"]) == pytest.approx(ref.pvalue, rel=5e-3)
        nb = nadeau_bengio_ttest(np.subtract(a, b), N_TRAIN[frac], N_TEST)
        assert float(row["p (NB)"]) == pytest.approx(nb.pvalue, rel=5e-3)
        assert float(row["p (NB)"]) > float(row["p (paired t)"])
        assert float(row["Δ Dice"]) == pytest.approx(np.mean(np.subtract(a, b)), abs=5e-4)


def test_per_image_tests_match_images_by_id(report):
    _, _, text = report
    row = md_table(text, "### Over test images")[0]
    a = [v for k in FOLDS for v in per_image(0.25, "localizer-frozen", k).values()]
    b = [v for k in FOLDS for v in per_image(0.25, "scratch", k).values()]
    assert row["images"] == "8"
    assert float(row["p (paired t)"]) == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=5e-3)
    wil = stats.wilcoxon(np.subtract(a, b))
    assert float(row["W"]) == pytest.approx(wil.statistic)
    assert float(row["p (Wilcoxon)"]) == pytest.approx(wil.pvalue, rel=5e-3)
    assert "Why the plain fold test is optimistic" in text and "(1/k + n_test/n_train)" in text


def test_localizer_error_is_reported_beside_the_mean_centre_baseline(report):
    _, _, text = report
    row = md_table(text, "## Localizer")[0]
    assert (row["folds"], row["distance (px)"], row["mean-centre baseline (px)"]) == (
        "1",
        "3.50",
        "9.00",
    )
    assert row["within disc radius"] == "n/a"  # absent key is allowed, shown as n/a


def test_shared_localizer_is_summarised_over_every_test_fold():
    from locseg.experiments.report.analyse import build_report

    shared = {
        "status": "ok",
        "phase": "localize",
        "arm": "localize",
        "fraction": 1.0,
        "test": {"dist_px": 1.0},
        "test_folds": {"0": {"dist_px": 1.0, "image_centre_dist_px": 9.0}, "1": {"dist_px": 3.0}},
    }
    (row,) = build_report([shared]).localizer
    assert row["n"] == 2 and row["dist_px"][:2] == pytest.approx((2.0, np.std([1, 3], ddof=1)))
    assert row["image_centre_dist_px"][2] == 1


def test_untested_crop_localizer_is_not_counted_as_a_test():
    from locseg.experiments.report.analyse import build_report

    whole = {"status": "ok", "phase": "localize", "arm": "localize", "fraction": 1.0}
    whole["test_folds"] = {"0": {"dist_px": 2.0}, "1": {"dist_px": 4.0}}
    crops = {"status": "ok", "phase": "localize", "arm": "localize", "fraction": 1.0}
    crops.update(test=None, test_skipped="crop-scale localizer: its encoder is the product")
    (row,) = build_report([whole, crops]).localizer
    assert row["n"] == 2 and row["dist_px"][0] == pytest.approx(3.0)


def test_figure_is_a_valid_png(report):
    _, paths, text = report
    data = paths["figure"].read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # IHDR
    assert width > 600 and height > 400
    assert "](dice_vs_fraction.png)" in text


def test_failed_and_incomplete_jobs_are_named_not_fatal(tmp_path):
    sweep = make_sweep(tmp_path)
    add_failed_and_incomplete(sweep)
    records = collect(sweep)
    assert {r["job"]: r["status"] for r in records}["seg-killed"] == "incomplete"
    text = write_report(sweep)["report_md"].read_text()
    failed = text.split("## Failed jobs (1)", 1)[1].split("##", 1)[0]
    assert "`seg-broken` (`segment/failed`): ValueError: boom" in failed
    assert "traceback" not in failed  # first line of the error only
    incomplete = text.split("## Incomplete jobs (1)", 1)[1]
    assert "`seg-killed` (`segment/killed`)" in incomplete
    with (sweep / "results.csv").open() as fh:
        statuses = sorted(r["status"] for r in csv.DictReader(fh))
    assert statuses.count("failed") == 1 and statuses.count("incomplete") == 1
    assert len(statuses) == 11


def test_rerun_of_a_job_uses_the_newest_result(tmp_path):
    sweep = make_sweep(tmp_path)
    old_dir = sweep / "segment" / "0"  # first sorted key: (0.25, localizer-frozen, 0)
    job = json.loads((old_dir / "metrics.json").read_text())
    new_dir = sweep / "rerun"
    _write_job(new_dir, {**job, "run_dir": str(new_dir)}, {"test": {"dice": 0.70}})
    os.utime(old_dir / "metrics.json", (1_000_000, 1_000_000))
    text = write_report(sweep)["report_md"].read_text()
    rows = {r["labels"]: r for r in md_table(text, "## Segmentation")}
    assert rows["25%"]["localizer-frozen"].startswith(f"{np.mean([0.70, 0.76]):.3f} ± ")
    assert "using `rerun`, ignoring `segment/0`" in text


def test_missing_baseline_arm_is_explained(tmp_path):
    sweep = make_sweep(tmp_path)
    text = write_report(sweep, baseline_arm="imagenet")["report_md"].read_text()
    assert "baseline arm `imagenet` has no finished job" in text


def test_empty_folder_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(ReportError, match="no job found under"):
        collect(tmp_path)
    assert main([str(tmp_path), "--no-wandb"]) == 2
    assert "no job found" in capsys.readouterr().err


def test_cli_missing_folder_exits_nonzero_with_message(tmp_path):
    missing = tmp_path / "no-such-sweep"
    proc = subprocess.run(
        [sys.executable, "-m", "locseg.report", str(missing), "--no-wandb"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert f"sweep folder {missing} does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_report_imports_no_training_stack():
    """The report reads files only: importing it must not pull in torch, lightning or wandb."""
    code = (
        "import sys, locseg.report; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'torch', 'lightning', 'pytorch_lightning', 'wandb', 'hydra'}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


def test_wandb_offline_run_gets_the_table_and_the_figure(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    sweep = make_sweep(tmp_path)
    write_report(sweep, wandb=True)
    media = sweep / "wandb"
    assert len(list(media.glob("offline-run-*/files/media/table/results_*.table.json"))) == 1
    assert len(list(media.glob("offline-run-*/files/media/images/dice_vs_fraction_*.png"))) == 1
    table = json.loads(next(media.glob("offline-run-*/files/media/table/*.json")).read_text())
    assert len(table["data"]) == 9


def test_dice_table_shows_the_label_budget_per_fraction(report):
    _, _, text = report
    rows = {r["labels"]: r for r in md_table(text, "## Segmentation")}
    assert (rows["25%"]["n_train"], rows["25%"]["n_val"]) == ("6", "4")
    assert (rows["100%"]["n_train"], rows["100%"]["n_val"]) == ("24", "4")


def test_metrics_of_an_older_config_are_stale_not_counted(tmp_path):
    """A re-run with a changed config rewrote job.json (hash B) and died: metrics.json (hash A)."""
    sweep = make_sweep(tmp_path)
    job_dir = sweep / "segment" / "0"  # first sorted key: (0.25, localizer-frozen, 0)
    job = json.loads((job_dir / "job.json").read_text())
    old_hash = job["config_hash"]
    (job_dir / "job.json").write_text(json.dumps({**job, "config_hash": "bbbbbbbbbbbb"}))
    rec = next(r for r in collect(sweep) if r["dir"] == "segment/0")
    assert rec["status"] == "stale"
    assert "test" not in rec  # the old numbers are not carried on the record
    text = write_report(sweep)["report_md"].read_text()
    rows = {r["labels"]: r for r in md_table(text, "## Segmentation")}
    assert rows["25%"]["localizer-frozen"] == "0.760 (n=1)"  # only fold 1 is counted
    assert md_table(text, "### Over folds")[0]["folds"] == "1"
    stale = text.split("## Stale jobs (1)", 1)[1].split("##", 1)[0]
    assert (
        f"`seg-localizer-frozen-0.25-0` (`segment/0`): job.json has config hash bbbbbbbbbbbb, "
        f"metrics.json {old_hash}: a re-run started and did not finish; re-run the sweep."
    ) in stale
    assert "(8 ok, 0 failed, 0 incomplete, 1 stale)" in text
    with (sweep / "results.csv").open() as fh:
        row = next(r for r in csv.DictReader(fh) if r["dir"] == "segment/0")
    assert (row["status"], row["test_dice"], row["config_hash"]) == ("stale", "", "bbbbbbbbbbbb")
