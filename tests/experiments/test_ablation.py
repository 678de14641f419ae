"""The ablation table pairs every variant's arms with one scratch arm, fold by fold."""

from __future__ import annotations

import numpy as np
from fake_sweep import job_record, md_table, write_job, write_segment_sweep

from locseg.ablation import main
from locseg.experiments.stats import nadeau_bengio_ttest

FOLDS = range(5)
SCRATCH = [0.70, 0.72, 0.69, 0.71, 0.73]


def _variant(root, gain: float, with_scratch: bool, dist: float):
    dice = {(0.1, "localizer-frozen", k): SCRATCH[k] + gain + 0.01 * (k % 2) for k in FOLDS}
    if with_scratch:
        dice |= {(0.1, "scratch", k): SCRATCH[k] for k in FOLDS}
    write_segment_sweep(root, dice, n_train={0.1: 8})
    run_dir = root / "localize" / "shared"
    job = job_record("loc", "localize", 0, 1.0, "localize", run_dir)
    folds = {str(k): {"dist_frac_width": dist, "dist_px": 10 * dist} for k in FOLDS}
    write_job(run_dir, job, {"status": "ok", "test": folds["0"], "test_folds": folds})
    return root


def test_variants_are_paired_with_the_baseline_scratch(tmp_path):
    good = _variant(tmp_path / "good", 0.10, with_scratch=True, dist=0.02)
    bad = _variant(tmp_path / "bad", -0.10, with_scratch=False, dist=0.20)
    out = tmp_path / "ablation.md"
    assert (
        main([f"heatmap={good}", f"linear={bad}", "--baseline", "heatmap", "--out", str(out)]) == 0
    )
    rows = {(r["localizer (variant)"], r["arm"]): r for r in md_table(out.read_text(), "Holm")}
    assert rows[("heatmap", "localizer-frozen")]["error % width"] == "2.0%"
    assert rows[("linear", "localizer-frozen")]["error % width"] == "20.0%"
    cell = rows[("heatmap", "localizer-frozen")]["10%"]
    diffs = np.array([0.10 + 0.01 * (k % 2) for k in FOLDS])
    p = nadeau_bengio_ttest(diffs, 8, 8).pvalue
    assert f"Δ +{diffs.mean():.3f}" in cell and "+" in cell.split("(")[1]
    assert "Δ -0.096" in rows[("linear", "localizer-frozen")]["10%"]
    assert rows[("-", "scratch")]["10%"].startswith(f"{np.mean(SCRATCH):.3f}")
    assert p < 0.05


def test_unknown_baseline_is_refused(tmp_path, capsys):
    good = _variant(tmp_path / "good", 0.1, with_scratch=True, dist=0.02)
    assert main([f"a={good}", "--baseline", "b"]) == 1
    assert "--baseline b is not one of ['a']" in capsys.readouterr().err
