"""Which Dice the report compares, and how it marks significance: Nadeau-Bengio, Holm, signed."""

from __future__ import annotations

import io

import numpy as np
import pytest
from fake_sweep import md_table, write_segment_sweep
from rich.console import Console
from scipy import stats

from locseg.experiments.report import build_report, collect, write_report
from locseg.experiments.report.console import print_summary
from locseg.experiments.report.outputs import figure_caption
from locseg.experiments.stats import MINUS, nadeau_bengio_ttest

FOLDS = range(5)
N_TRAIN, N_TEST = 24, 8  # n_test/n_train = 1/3: the correction matters
SCRATCH = [0.70, 0.72, 0.68, 0.71, 0.69]
# 25 %: +0.03 with a little spread (plain fold t p = 0.013, Nadeau-Bengio p = 0.06);
# 100 %: 0.10 worse, consistently (significant under any test)
GAIN = {0.25: [0.02, 0.05, 0.01, 0.04, 0.03], 1.0: [-0.10, -0.11, -0.09, -0.10, -0.10]}


def dice_table() -> dict[tuple[float, str, int], float]:
    out = {}
    for frac, gains in GAIN.items():
        for k in FOLDS:
            out[(frac, "scratch", k)] = SCRATCH[k]
            out[(frac, "localizer-frozen", k)] = SCRATCH[k] + gains[k]
    return out


@pytest.fixture(scope="module")
def marked(tmp_path_factory):
    sweep = write_segment_sweep(
        tmp_path_factory.mktemp("marks"), dice_table(), {0.25: N_TRAIN, 1.0: N_TRAIN}, N_TEST
    )
    text = write_report(sweep)["report_md"].read_text()
    return sweep, text, {r["labels"]: r for r in md_table(text, "### Over folds")}


def test_plain_fold_test_significant_but_nadeau_bengio_not_gives_no_star(marked):
    _, _, rows = marked
    row = rows["25%"]
    assert float(row["p (paired t)"]) < 0.05  # the old, optimistic star
    nb = nadeau_bengio_ttest(GAIN[0.25], N_TRAIN, N_TEST)
    assert nb.pvalue > 0.05
    assert float(row["p (NB)"]) == pytest.approx(nb.pvalue, rel=5e-3)
    assert row["result"] == "ns"


def test_significantly_worse_arm_is_marked_worse_with_a_minus(marked):
    _, text, rows = marked
    row = rows["100%"]
    assert float(row["Δ Dice"]) == pytest.approx(-0.10, abs=5e-4)
    assert row["result"].startswith(MINUS + "*") and row["result"].endswith(" worse")
    assert "Nadeau-Bengio corrected resampled t-test over folds, Holm-adjusted" in text
    assert f"`{MINUS}*` significantly worse" in text


def test_marks_use_holm_over_every_comparison(marked):
    _, _, rows = marked
    p = {f: nadeau_bengio_ttest(g, N_TRAIN, N_TEST).pvalue for f, g in GAIN.items()}
    lo, hi = sorted(p.values())
    expected = {f: (2 * lo if p[f] == lo else max(2 * lo, hi)) for f in p}
    for frac, label in ((0.25, "25%"), (1.0, "100%")):
        assert float(rows[label]["p (NB, Holm)"]) == pytest.approx(expected[frac], rel=5e-3)


def test_console_marks_carry_the_sign(marked):
    sweep, _, _ = marked
    rep = build_report(collect(sweep))
    buf = io.StringIO()
    print_summary(rep, {"report_md": "r.md", "figure": "f.png"}, Console(file=buf, width=200))
    out = buf.getvalue()
    lines = {line.split("│")[1].strip(): line for line in out.splitlines() if "%" in line}
    assert f"{MINUS}*" in lines["100%"] and "+*" not in lines["100%"]
    assert lines["25%"].rstrip(" │").endswith("ns")
    assert "Holm-adjusted" in out


def test_native_dice_is_used_when_every_job_has_it(tmp_path):
    dice = dice_table()
    native = {k: v - 0.05 for k, v in dice.items()}  # a different grid, different numbers
    sweep = write_segment_sweep(tmp_path, dice, {0.25: N_TRAIN, 1.0: N_TRAIN}, N_TEST, native)
    text = write_report(sweep)["report_md"].read_text()
    assert "## Segmentation: test Dice at native resolution per fraction" in text
    rows = {r["labels"]: r for r in md_table(text, "## Segmentation")}
    values = [native[(1.0, "scratch", k)] for k in FOLDS]
    mean, std = np.mean(values), np.std(values, ddof=1)
    assert rows["100%"]["scratch"] == f"{mean:.3f} ± {std:.3f} (n=5)"
    img = {r["labels"]: r for r in md_table(text, "### Over test images")}["25%"]
    a = [native[(0.25, "localizer-frozen", k)] + off for k in FOLDS for off in OFFSETS]
    b = [native[(0.25, "scratch", k)] + off for k in FOLDS for off in OFFSETS]
    assert float(img["p (paired t)"]) == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=5e-3)
    caption = figure_caption(build_report(collect(sweep)))
    assert caption.startswith("Test Dice at native resolution (test.dice_native)")
    assert "Nadeau-Bengio" in caption and "Holm" in caption


def test_one_job_without_native_dice_sends_all_back_to_input_dice(tmp_path):
    dice = dice_table()
    native = {k: v - 0.05 for k, v in dice.items() if k != (1.0, "scratch", 3)}
    sweep = write_segment_sweep(tmp_path, dice, {0.25: N_TRAIN, 1.0: N_TRAIN}, N_TEST, native)
    text = write_report(sweep)["report_md"].read_text()
    assert "## Segmentation: test Dice at network input resolution per fraction" in text
    assert "1 of 20 finished segment jobs have no `test.dice_native`" in text
    rows = {r["labels"]: r for r in md_table(text, "## Segmentation")}
    values = [dice[(1.0, "scratch", k)] for k in FOLDS]
    assert rows["100%"]["scratch"] == f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f} (n=5)"
    caption = figure_caption(build_report(collect(sweep)))
    assert caption.startswith("Test Dice at network input resolution (test.dice)")


OFFSETS = (-0.02, 0.0, 0.01, 0.01)
