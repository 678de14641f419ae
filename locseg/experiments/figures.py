"""Figures of the report: the paper's Figure 2 (test Dice against the fraction of labels).

Uses matplotlib's object API with the Agg canvas (no pyplot, no global backend switch), so it works
headless and never touches an interactive session's state.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from locseg.experiments.stats import MINUS, signed_stars, significance_stars
from locseg.io import atomic_path

__all__ = [
    "ARM_STYLE",
    "dice_vs_fraction_figure",
    "plot_dice_vs_fraction",
    "significance_stars",
]

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
# arm -> {fraction: (p-value the marks use, mean difference arm - baseline)}
Marks = Mapping[str, Mapping[float, tuple[float, float]]]


def _style(arm: str, index: int) -> dict[str, str]:
    if arm in ARM_STYLE:
        return ARM_STYLE[arm]
    return {"color": _EXTRA_COLORS[index % len(_EXTRA_COLORS)], "marker": "D", "label": arm}


def _percent_label(fraction: float) -> str:
    pct = 100.0 * fraction
    return f"{pct:.0f}%" if abs(pct - round(pct)) < 1e-6 else f"{pct:.3g}%"


def dice_vs_fraction_figure(
    curves: Mapping[str, Curve],
    marks: Marks,
    baseline_arm: str = "scratch",
    title: str = "Optic-disc segmentation: test Dice vs fraction of labelled images",
    ylabel: str = "Test Dice (mean ± std over folds)",
    caption: str = "",
) -> Figure:
    """Mean +/- std of test Dice per arm, each fraction marked by its p-value and direction.

    ``curves`` maps an arm to (fraction, mean, std) points; ``marks`` maps each non-baseline arm
    to {fraction: (p, mean difference against ``baseline_arm``)}. A significantly better arm gets
    '+*' above the error bars, a significantly worse one '−*' below them, so a star never hides
    the direction. ``caption`` (which test, which adjustment) is printed under the axes.
    """
    fig = Figure(figsize=(7.5, 5.0), dpi=150, layout="constrained")
    ax = fig.add_subplot()
    all_fracs = sorted({f for pts in curves.values() for f, _, _ in pts})
    if not all_fracs:
        _draw_empty(ax, title)
        return fig
    span = 100.0 * (max(all_fracs) - min(all_fracs)) if len(all_fracs) > 1 else 10.0
    dodge = 0.008 * span  # small sideways shift so error bars of different arms do not overlap
    arms = list(curves)
    tops: dict[float, float] = {}
    bottoms: dict[float, float] = {}
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
        for (f, _, _), top, bottom in zip(pts, mean + std, mean - std, strict=True):
            if math.isfinite(top):
                tops[f] = max(tops.get(f, -math.inf), top)
                bottoms[f] = min(bottoms.get(f, math.inf), bottom)
    n_up, n_down = _mark_significance(ax, arms, marks, tops, bottoms)
    ax.set_xticks([100.0 * f for f in all_fracs], [_percent_label(f) for f in all_fracs])
    ax.set_xlabel("Fraction of labelled training images")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.04)
    ymin, ymax = ax.get_ylim()
    pad = 0.06 * (ymax - ymin)
    ax.set_ylim(ymin - pad * n_down, ymax + pad * max(1, n_up))
    # outside the axes: marks sit above and below the curves, where a legend would hide them
    fig.legend(loc="outside upper center", ncols=min(3, len(arms)), frameon=False, fontsize=9)
    if caption:  # a figure-level label, so constrained layout makes room for it
        fig.supxlabel(textwrap.fill(caption, 130), fontsize=7.5, color="#444444")
    return fig


def plot_dice_vs_fraction(
    curves: Mapping[str, Curve],
    marks: Marks,
    path: str | os.PathLike,
    baseline_arm: str = "scratch",
    title: str = "Optic-disc segmentation: test Dice vs fraction of labelled images",
    ylabel: str = "Test Dice (mean ± std over folds)",
    caption: str = "",
) -> Path:
    """Draw ``dice_vs_fraction_figure`` and write it as PNG, atomically."""
    fig = dice_vs_fraction_figure(curves, marks, baseline_arm, title, ylabel, caption)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def _mark_significance(ax, arms: list[str], marks: Marks, tops, bottoms) -> tuple[int, int]:
    """Write signed star codes, one row per arm, above the error bars or below when worse.

    Returns how many rows went up and how many down, so the axes can make room for them.
    """
    marked = [a for a in arms if a in marks] + [a for a in marks if a not in arms]
    up = down = 0
    for j, arm in enumerate(marked):
        color = _style(arm, arms.index(arm) if arm in arms else j)["color"]
        went_up = went_down = False
        for frac, (p, diff) in marks[arm].items():
            text = signed_stars(p, diff)
            if not text or frac not in tops:
                continue
            below = text.startswith(MINUS)
            went_down |= below
            went_up |= not below
            ax.annotate(
                text,
                (100.0 * frac, bottoms[frac] if below else tops[frac]),
                xytext=(0, -(4 + j * 11) if below else 4 + j * 11),
                textcoords="offset points",
                ha="center",
                va="top" if below else "bottom",
                fontsize=9 if text == "ns" else 11,
                fontweight="bold",
                color=color,
            )
        up += went_up
        down += went_down
    return up, down


def _draw_empty(ax, title: str) -> None:
    """A placeholder, so the report links to something even before any job finished."""
    ax.text(0.5, 0.5, "No finished segmentation job yet", ha="center", va="center", fontsize=12)
    ax.set_axis_off()
    ax.set_title(title, fontsize=11)
