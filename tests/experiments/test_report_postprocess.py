"""The report's post-processing section: switch decisions and raw vs post-processed test Dice."""

from __future__ import annotations

from fake_sweep import job_record, md_table, write_job

from locseg.experiments.report import collect, write_report
from locseg.experiments.report.postprocess import summarise_postprocessing


def _choice(tta_with: float, tta_without: float) -> dict:
    return {
        "steps": [
            {
                "switch": "tta",
                "source": "validation",
                "chosen": tta_with > tta_without,
                "val_dice_with": tta_with,
                "val_dice_without": tta_without,
            },
            {"switch": "largest", "source": "forced", "chosen": True},
        ]
    }


def _write(root, fold, arm, raw, post, tta_with, tta_without):
    name = f"segment-{arm}-frac1.0-fold{fold}"
    run_dir = root / "segment" / f"{arm}-{fold}"
    metrics = {
        "status": "ok",
        "n_train": 10,
        "n_test": 4,
        "test": {"dice": raw, "dice_native": raw, "dice_native_post": post},
        "postprocess_choice": _choice(tta_with, tta_without),
    }
    write_job(run_dir, job_record(name, "segment", fold, 1.0, arm, run_dir), metrics)


def test_switches_and_test_dice_are_summed_up_per_switch_and_arm(tmp_path):
    _write(tmp_path, 0, "scratch", 0.80, 0.84, 0.90, 0.86)
    _write(tmp_path, 1, "scratch", 0.70, 0.70, 0.85, 0.88)
    records = collect(tmp_path)
    switches, tests = summarise_postprocessing(records)
    (tta,) = switches  # 'largest' was forced, not decided on validation: not counted
    assert (tta.switch, tta.jobs, tta.chosen) == ("tta", 2, 1)
    assert (tta.val_with, tta.val_without) == (0.875, 0.87)
    (scratch,) = tests
    assert (scratch.jobs, round(scratch.test_raw, 6), round(scratch.test_post, 6)) == (
        2,
        0.75,
        0.77,
    )

    text = write_report(tmp_path)["report_md"].read_text()
    row = md_table(text, "## Post-processing: each switch on / off")[0]
    assert row == {
        "switch": "tta",
        "chosen": "1 of 2",
        "val Dice without": "0.8700",
        "val Dice with": "0.8750",
        "Δ": "+0.0050",
    }
    arm = md_table(text, "raw and with each job's chosen switches")[0]
    assert (arm["raw"], arm["post-processed"], arm["Δ"]) == ("0.7500", "0.7700", "+0.0200")


def test_no_section_without_recorded_choices(tmp_path):
    run_dir = tmp_path / "segment" / "a"
    job = job_record("segment-scratch-frac1.0-fold0", "segment", 0, 1.0, "scratch", run_dir)
    write_job(run_dir, job, {"status": "ok", "n_train": 4, "n_test": 2, "test": {"dice": 0.5}})
    write_report(tmp_path)
    assert "Post-processing" not in (tmp_path / "report.md").read_text()
