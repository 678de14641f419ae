"""The Dice-vs-fraction figure: signed marks on the right side of the curves, and the caption."""

from __future__ import annotations

import pytest

from locseg.experiments.figures import dice_vs_fraction_figure, plot_dice_vs_fraction
from locseg.experiments.stats import MINUS

CURVES = {
    "scratch": [(0.25, 0.70, 0.02), (1.0, 0.80, 0.02)],
    "localizer-frozen": [(0.25, 0.75, 0.03), (1.0, 0.70, 0.01)],
}
# better and significant at 25 %, worse and significant at 100 %
MARKS = {"localizer-frozen": {0.25: (0.004, 0.05), 1.0: (0.0004, -0.10)}}


def test_better_is_marked_above_and_worse_below_the_error_bars():
    fig = dice_vs_fraction_figure(CURVES, MARKS, caption="Stars: Nadeau-Bengio, Holm-adjusted")
    texts = {t.get_text(): t for t in fig.axes[0].texts}
    assert set(texts) == {"+**", f"{MINUS}***"}
    better, worse = texts["+**"], texts[f"{MINUS}***"]
    assert better.xy == (25.0, pytest.approx(0.78))  # top of the highest bar at 25 %
    assert better.get_va() == "bottom"
    assert worse.xy == (100.0, pytest.approx(0.69))  # bottom of the lowest bar at 100 %
    assert worse.get_va() == "top"
    assert fig.get_supxlabel() == "Stars: Nadeau-Bengio, Holm-adjusted"


def test_not_significant_and_untested_marks(tmp_path):
    marks = {"localizer-frozen": {0.25: (0.3, 0.05), 1.0: (float("nan"), -0.10)}}
    fig = dice_vs_fraction_figure(CURVES, marks)
    assert [t.get_text() for t in fig.axes[0].texts] == ["ns"]
    path = plot_dice_vs_fraction(CURVES, marks, tmp_path / "f.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
