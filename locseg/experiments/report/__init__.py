"""Sweep reports: collect metrics.json -> analyse -> render (markdown, console, CSV, figure, W&B).

``collect`` reads job folders (files only), ``analyse`` computes Dice per fraction and arm and the
paired tests, ``markdown``/``console``/``outputs`` render them; ``pipeline`` joins the steps for
``python -m locseg.report``. Nothing here imports torch or a model.
"""

from locseg.experiments.report.analyse import Comparison, Report, build_report
from locseg.experiments.report.collect import ReportError, collect
from locseg.experiments.report.pipeline import run_report, write_report

__all__ = [
    "Comparison",
    "Report",
    "ReportError",
    "build_report",
    "collect",
    "run_report",
    "write_report",
]
