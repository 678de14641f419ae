"""The short summary ``python -m locseg.report`` prints: counts, the Dice table, problems."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from locseg.experiments.report.analyse import Report
from locseg.experiments.report.collect import STATUSES, kept_result_note
from locseg.experiments.report.fmt import first_line, fmt_fraction, fmt_mean_std, fmt_num
from locseg.experiments.report.markdown import marks_legend

__all__ = ["print_summary"]

_STATUS_COLOR = {"ok": "green", "failed": "red", "incomplete": "yellow", "stale": "magenta"}


def dice_table(rep: Report) -> Table:
    """Mean ± std per fraction and arm, each non-baseline cell with its signed mark."""
    table = Table(title=f"Test {rep.metric.label} (mean ± std over folds)")
    table.add_column("labels", justify="right")
    for arm in rep.arms:
        table.add_column(arm)
    marks = {(c.fraction, c.arm): c.mark for c in rep.comparisons}
    for frac in rep.fractions:
        cells = []
        for arm in rep.arms:
            s = rep.dice.get((frac, arm))
            mark = marks.get((frac, arm), "")
            cells.append(f"{fmt_mean_std(s.mean, s.std)} {mark}".strip() if s else "—")
        table.add_row(fmt_fraction(frac), *cells)
    return table


def print_summary(rep: Report, paths: dict[str, Path], console: Console | None = None) -> None:
    console = console or Console()
    counts = ", ".join(
        f"[{_STATUS_COLOR[s]}]{len(rep.by_status(s))} {s}[/]"
        for s in STATUSES
        if s in ("ok", "failed", "incomplete") or rep.by_status(s)
    )
    console.print(f"[bold]{len(rep.records)} jobs[/]: {counts}")
    if rep.dice:
        console.print(dice_table(rep))
    if rep.comparisons:
        console.print(marks_legend(rep), style="dim")
    for row in rep.localizer:
        mean, std, _ = row["dist_px"]
        base, _, _ = row["baseline_dist_px"]
        console.print(
            f"Localizer ({row['n']} jobs): {fmt_mean_std(mean, std, '.2f')} px "
            f"(mean-centre baseline {fmt_num(base, '.2f')} px)"
        )
    for status in ("failed", "stale"):
        for rec in rep.by_status(status):
            console.print(
                f"[{_STATUS_COLOR[status]}]{status}[/] {rec['job']}: {first_line(rec.get('error'))}"
                f"{kept_result_note(rec)}"
            )
    for rec in rep.by_status("incomplete"):
        console.print(f"[yellow]incomplete[/] {rec['job']}")
    console.print(f"report: {paths['report_md']}")
    console.print(f"figure: {paths['figure']}")
