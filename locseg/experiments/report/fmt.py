"""Number formatting shared by the markdown report and the console summary."""

from __future__ import annotations

from typing import Any

from locseg.experiments.report.analyse import finite

__all__ = ["fmt_p", "fmt_num", "fmt_mean_std", "fmt_fraction", "fmt_range", "first_line"]


def fmt_p(p: float) -> str:
    """Three significant digits; 'n/a' when the test could not run (fewer than two pairs)."""
    return f"{p:.3g}" if finite(p) else "n/a"


def fmt_num(x: float, spec: str = ".3f") -> str:
    return format(x, spec) if finite(x) else "n/a"


def fmt_mean_std(mean: float, std: float, spec: str = ".3f") -> str:
    if not finite(mean):
        return "n/a"
    return f"{mean:{spec}} ± {std:{spec}}" if finite(std) else f"{mean:{spec}}"


def fmt_fraction(frac: float) -> str:
    if not finite(frac):
        return "n/a"
    pct = 100.0 * frac
    return f"{pct:.0f}%" if abs(pct - round(pct)) < 1e-6 else f"{pct:.3g}%"


def fmt_range(span: tuple[float, float] | None) -> str:
    """An image count over folds: '19', or '18–19' when folds differ; '—' when not recorded."""
    if not span:
        return "—"
    lo, hi = span
    return f"{lo:.0f}" if lo == hi else f"{lo:.0f}–{hi:.0f}"


def first_line(text: Any) -> str:
    lines = str(text or "").strip().splitlines()
    return lines[0] if lines else "(no error message)"
