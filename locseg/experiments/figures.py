"""Figures of the report: the paper's Figure 2 (test Dice against the fraction of labels).

Uses matplotlib's object API with the Agg canvas (no pyplot, no global backend switch), so it works
headless and never touches an interactive session's state.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from locseg.io import atomic_path

__all__ = ["ARM_STYLE", "plot_dice_vs_fraction", "significance_stars"]

# Fixed colours so the same arm looks the same in every report (colour-blind-safe Okabe-Ito).
ARM_STYLE: dict[str, dict[str, str]] = {
    "scratch": {"color": "#555555", "marker": "o", "label": "from scratch"},
    "localizer-frozen": {"color": "#0072B2", "marker": "s", "label": "localizer encoder, frozen"},
    "localizer-finetune": {
        "color": "#D55E00",
        "marker": "^",
        "label": "localizer encoder, fine-tuned",
    },
}
_EXTRA_COLORS = ["#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442"]

# (fraction, mean Dice, std Dice) per point of a curve
Curve = Sequence[tuple[float, float, float]]


def significance_stars(p: float) -> str:
    """Conventional star code for a p-value; '' when the test could not be run."""
    if p is None or not math.isfinite(p):
        return ""
    if p < 0.001:
        return "***"
    if p < 0.01:
        return "**"
    if p < 0.05:
        return "*"
    return "ns"


def _style(arm: str, index: int) -> dict[str, str]:
    if arm in ARM_STYLE:
        return ARM_STYLE[arm]
    return {"color": _EXTRA_COLORS[index % len(_EXTRA_COLORS)], "marker": "D", "label": arm}


def _percent_label(fraction: float) -> str:
    pct = 100.0 * fraction
    return f"{pct:.0f}%" if abs(pct - round(pct)) < 1e-6 else f"{pct:.3g}%"


def plot_dice_vs_fraction(
    curves: Mapping[str, Curve],
    pvalues: Mapping[str, Mapping[float, float]],
    path: str | os.PathLike,
    baseline_arm: str = "scratch",
    title: str = "Optic-disc segmentation: test Dice vs fraction of labelled images",
) -> Path:
    """Draw mean +/- std of test Dice per arm and star each fraction by its paired p-value.

    ``curves`` maps an arm to (fraction, mean, std) points; ``pvalues`` maps each non-baseline
    arm to {fraction: p} from the fold-paired t-test against ``baseline_arm``. Written atomically.
    """
    fig = Figure(figsize=(7.5, 5.0), dpi=150, layout="constrained")
    ax = fig.add_subplot()
    all_fracs = sorted({f for pts in curves.values() for f, _, _ in pts})
    if not all_fracs:
        return _save_empty(fig, ax, title, path)
    span = 100.0 * (max(all_fracs) - min(all_fracs)) if len(all_fracs) > 1 else 10.0
    dodge = 0.008 * span  # small sideways shift so error bars of different arms do not overlap
    arms = list(curves)
    tops: dict[float, float] = {}
    for i, arm in enumerate(arms):
        pts = sorted(curves[arm])
        if not pts:
            continue
        style = _style(arm, i)
        x = np.array([100.0 * f for f, _, _ in pts]) + dodge * (i - (len(arms) - 1) / 2)
        mean = np.array([m for _, m, _ in pts], dtype=float)
        std = np.nan_to_num(np.array([s for _, _, s in pts], dtype=float))
        ax.fill_between(x, mean - std, mean + std, color=style["color"], alpha=0.12, lw=0)
        ax.errorbar(
            x,
            mean,
            yerr=std,
            color=style["color"],
            marker=style["marker"],
            ms=6,
            lw=2,
            capsize=3,
            label=style["label"] + (" (baseline)" if arm == baseline_arm else ""),
        )
        for (f, _, _), top in zip(pts, mean + std, strict=True):
            if math.isfinite(top):
                tops[f] = max(tops.get(f, -math.inf), top)
    _mark_pvalues(ax, arms, pvalues, tops)
    ax.set_xticks([100.0 * f for f in all_fracs], [_percent_label(f) for f in all_fracs])
    ax.set_xlabel("Fraction of labelled training images")
    ax.set_ylabel("Test Dice (mean ± std over folds)")
    ax.set_title(title, fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.04)
    ymin, ymax = ax.get_ylim()
    ax.set_ylim(ymin, ymax + 0.06 * (ymax - ymin) * max(1, len(pvalues)))
    ax.legend(loc="lower right", frameon=True, fontsize=9)
    if pvalues:
        fig.supxlabel(  # a figure-level label, so constrained layout makes room for it
            f"Stars: paired t-test over folds against {baseline_arm}, coloured by arm "
            "(* p<0.05, ** p<0.01, *** p<0.001, ns not significant).",
            fontsize=7.5,
            color="#444444",
        )
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def _mark_pvalues(ax, arms: list[str], pvalues: Mapping[str, Mapping[float, float]], tops) -> None:
    """Write the star code of each arm above the highest error bar at each fraction, stacked."""
    marked = [a for a in arms if a in pvalues] + [a for a in pvalues if a not in arms]
    for j, arm in enumerate(marked):
        color = _style(arm, arms.index(arm) if arm in arms else j)["color"]
        for frac, p in pvalues[arm].items():
            stars = significance_stars(p)
            if not stars or frac not in tops:
                continue
            ax.annotate(
                stars,
                (100.0 * frac, tops[frac]),
                xytext=(0, 4 + j * 11),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=9 if stars == "ns" else 11,
                fontweight="bold",
                color=color,
            )


def _save_empty(fig: Figure, ax, title: str, path: str | os.PathLike) -> Path:
    """A placeholder figure, so the report links to something even before any job finished."""
    ax.text(0.5, 0.5, "No finished segmentation job yet", ha="center", va="center", fontsize=12)
    ax.set_axis_off()
    ax.set_title(title, fontsize=11)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)
