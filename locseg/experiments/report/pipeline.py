"""The report's one-way flow: collect metrics.json -> analyse -> CSV, figure, markdown, W&B."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from locseg.experiments.report.analyse import Report, build_report
from locseg.experiments.report.collect import collect
from locseg.experiments.report.markdown import render_markdown
from locseg.experiments.report.outputs import (
    log_to_wandb,
    results_table,
    write_figure,
    write_results_csv,
)
from locseg.io import write_text_atomic

__all__ = ["RESULTS_CSV", "REPORT_MD", "FIGURE_PNG", "run_report", "write_report"]

RESULTS_CSV = "results.csv"
REPORT_MD = "report.md"
FIGURE_PNG = "dice_vs_fraction.png"


def run_report(
    sweep_dir: str | os.PathLike, use_wandb: bool = False, baseline_arm: str = "scratch"
) -> tuple[dict[str, Path], Report]:
    """Write results.csv, the figure and report.md into ``sweep_dir``; also log to W&B if asked.

    Raises ``ReportError`` when the folder is missing or holds no job. A W&B failure only warns:
    the files are written and W&B is a copy.
    """
    sweep = Path(sweep_dir)
    records = collect(sweep)
    rep = build_report(records, baseline_arm=baseline_arm)
    columns, rows = results_table(records)
    paths = {
        "results_csv": write_results_csv(sweep / RESULTS_CSV, columns, rows),
        "figure": write_figure(rep, sweep / FIGURE_PNG),
    }
    text = render_markdown(rep, sweep, FIGURE_PNG)
    paths["report_md"] = write_text_atomic(sweep / REPORT_MD, text)
    if use_wandb:
        try:
            log_to_wandb(sweep, columns, rows, paths["figure"])
        except Exception as exc:  # the files are written; W&B is a copy, so warn, do not fail
            print(
                f"locseg.report: warning: W&B logging failed ({exc}); files are written, "
                "rerun with --no-wandb to skip it",
                file=sys.stderr,
            )
    return paths, rep


def write_report(
    sweep_dir: str | os.PathLike, wandb: bool = False, baseline_arm: str = "scratch"
) -> dict[str, Path]:
    """Collect the sweep and write results.csv, report.md and the figure; returns their paths."""
    return run_report(sweep_dir, wandb, baseline_arm)[0]
