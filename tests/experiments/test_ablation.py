"""The ablation table pairs every variant's arms with one scratch arm, fold by fold."""

from __future__ import annotations

import numpy as np
from fake_sweep import job_record, md_table, write_job, write_segment_sweep
from scipy import stats

from locseg.ablation import main

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


def _corrected_t_p(diffs: np.ndarray, n_train: int, n_test: int) -> float:
    """Nadeau-Bengio corrected resampled t-test, two-sided, written out with scipy's t."""
    k = len(diffs)
    se = np.sqrt((1 / k + n_test / n_train) * diffs.var(ddof=1))
    return float(2 * stats.t.sf(abs(diffs.mean() / se), df=k - 1))


def _stars(p: float) -> str:
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""


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
    # Both variants paired with heatmap's scratch, fold by fold: the exact cells, the mark from
    # the Holm-adjusted p (two tests in the table), the printed p the unadjusted one.
    scratch = np.array(SCRATCH)
    wobble = np.array([0.01 * (k % 2) for k in FOLDS])
    arms = {"heatmap": scratch + 0.10 + wobble, "linear": scratch - 0.10 + wobble}
    raw = {k: _corrected_t_p(v - scratch, 8, 8) for k, v in arms.items()}
    low, high = sorted(raw, key=raw.get)
    holm = {low: min(1.0, 2 * raw[low])}
    holm[high] = max(holm[low], min(1.0, raw[high]))
    expected = {
        "heatmap": f"0.814 ± 0.018 (Δ +0.104 +{_stars(holm['heatmap'])}, p {raw['heatmap']:.3g})",
        "linear": f"0.614 ± 0.018 (Δ -0.096 −{_stars(holm['linear'])}, p {raw['linear']:.3g})",
    }
    for variant, cell in expected.items():
        values = arms[variant]
        assert f"{values.mean():.3f} ± {values.std(ddof=1):.3f}" == cell.split(" (")[0]
        assert rows[(variant, "localizer-frozen")]["10%"] == cell
    assert expected == {
        "heatmap": "0.814 ± 0.018 (Δ +0.104 +***, p 6.5e-05)",
        "linear": "0.614 ± 0.018 (Δ -0.096 −***, p 8.92e-05)",
    }
    assert rows[("-", "scratch")]["10%"] == f"{scratch.mean():.3f} ± {scratch.std(ddof=1):.3f}"


def test_unknown_baseline_is_refused(tmp_path, capsys):
    good = _variant(tmp_path / "good", 0.1, with_scratch=True, dist=0.02)
    assert main([f"a={good}", "--baseline", "b"]) == 1
    assert "--baseline b is not one of ['a']" in capsys.readouterr().err
