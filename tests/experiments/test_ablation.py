"""The ablation table pairs every variant's arms with one scratch arm, fold by fold."""

from __future__ import annotations

import numpy as np
from fake_sweep import job_record, md_table, write_job, write_segment_sweep
from scipy import stats

from locseg.ablation import main

FOLDS = range(5)
SCRATCH = [0.70, 0.72, 0.69, 0.71, 0.73]


IDENTITY = {"splits": "aaaaaaaaaaaa", "cache": "idrid-od-0123456789abcdef", "encoder": "e"}


def _variant(root, gain: float, with_scratch: bool, dist: float, **sweep):
    dice = {(0.1, "localizer-frozen", k): SCRATCH[k] + gain + 0.01 * (k % 2) for k in FOLDS}
    if with_scratch:
        dice |= {(0.1, "scratch", k): SCRATCH[k] for k in FOLDS}
    write_segment_sweep(root, dice, n_train={0.1: 8}, **{"identity": IDENTITY, **sweep})
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


def test_sweeps_on_other_folds_are_refused_naming_both_and_what_differs(tmp_path, capsys):
    base = _variant(tmp_path / "base", 0.1, with_scratch=True, dist=0.02)
    other = _variant(
        tmp_path / "other", 0.1, with_scratch=False, dist=0.02,
        identity={**IDENTITY, "splits": "bbbbbbbbbbbb"}, image_prefix="other",
    )  # fmt: skip
    out = tmp_path / "ablation.md"
    assert main([f"a={base}", f"b={other}", "--baseline", "a", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"b ({other}) and a ({base}) scratch differ in folds" in err
    assert "bbbbbbbbbbbb vs aaaaaaaaaaaa" in err
    assert "differ in the test images of fold 0" in err
    assert not out.exists()


def test_sweeps_on_other_data_or_test_crop_localizer_are_refused(tmp_path, capsys):
    base = _variant(tmp_path / "base", 0.1, with_scratch=True, dist=0.02)
    recached = _variant(
        tmp_path / "recached", 0.1, with_scratch=False, dist=0.02,
        identity={**IDENTITY, "cache": "idrid-od-fedcba9876543210"},
    )  # fmt: skip
    assert main([f"a={base}", f"b={recached}", "--baseline", "a"]) == 1
    err = capsys.readouterr().err
    assert f"b ({recached}) and a ({base}) scratch differ in data" in err
    assert "idrid-od-fedcba9876543210 vs idrid-od-0123456789abcdef" in err
    crops = _variant(
        tmp_path / "crops", 0.1, with_scratch=False, dist=0.02,
        identity={**IDENTITY, "localizer": "f" * 64},
    )  # fmt: skip
    assert main([f"a={base}", f"c={crops}", "--baseline", "a"]) == 1
    err = capsys.readouterr().err
    assert "localizer placing the test crops (its checkpoint's sha256): ffffffffffff vs none" in err


def test_comparable_sweeps_with_other_encoders_still_pair(tmp_path):
    """Variants differ in their localizer's encoder by design: that is never refused."""
    base = _variant(tmp_path / "base", 0.1, with_scratch=True, dist=0.02)
    other = _variant(
        tmp_path / "other", 0.1, with_scratch=False, dist=0.02,
        identity={**IDENTITY, "encoder": "another"},
    )  # fmt: skip
    out = tmp_path / "ablation.md"
    assert main([f"a={base}", f"b={other}", "--baseline", "a", "--out", str(out)]) == 0
    rows = {(r["localizer (variant)"], r["arm"]) for r in md_table(out.read_text(), "Holm")}
    assert ("b", "localizer-frozen") in rows and ("a", "localizer-frozen") in rows
