"""What the report writes besides report.md: results.csv, the figure, a W&B copy."""

from __future__ import annotations

import csv
import io
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from locseg.experiments.report.analyse import Report
from locseg.experiments.report.fmt import first_line
from locseg.experiments.report.markdown import marks_legend, metric_caption
from locseg.io import write_text_atomic

__all__ = ["results_table", "write_results_csv", "write_figure", "log_to_wandb"]

METRIC_ORDER = ["dice_native", "dice", "iou_native", "iou", "hd95_native_px", "dist_px"]
METRIC_ORDER += ["baseline_dist_px", "dist_frac_width", "within_radius", "mse_px2", "loss"]


def results_table(records: list[dict]) -> tuple[list[str], list[list[Any]]]:
    """Flat table, one row per job: identity, status, test and val metrics, sizes, time, folder."""

    def metric_cols(split: str) -> list[str]:
        names = {k for r in records for k in (r.get(split) or {})}
        ordered = [m for m in METRIC_ORDER if m in names] + sorted(names - set(METRIC_ORDER))
        return [f"{split}_{m}" for m in ordered]

    test_cols, val_cols = metric_cols("test"), metric_cols("val")
    ident = ["job", "phase", "arm", "fraction", "fold", "status", "init", "freeze_encoder"]
    tail = ["n_train", "n_val", "n_test", "wall_time_s", "config_hash", "error", "dir"]
    columns = ident + test_cols + val_cols + tail
    rows = []
    for rec in records:
        row = []
        for col in columns:
            split, _, metric = col.partition("_")
            if col in test_cols or col in val_cols:
                value = (rec.get(split) or {}).get(metric)
            elif col == "error":
                value = first_line(rec["error"]) if rec.get("error") else None
            else:
                value = rec.get(col)
            row.append(value)
        rows.append(row)
    return columns, rows


def write_results_csv(path: Path, columns: list[str], rows: list[list[Any]]) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return write_text_atomic(path, buf.getvalue())


def figure_caption(rep: Report) -> str:
    """Under the figure: which Dice, and which test the marks come from."""
    text = metric_caption(rep)
    text = f"{text} {marks_legend(rep)}" if rep.comparisons else text
    return text.replace("`", "")  # markdown code marks, not wanted in a PNG


def write_figure(rep: Report, path: Path) -> Path:
    from locseg.experiments.figures import plot_dice_vs_fraction  # matplotlib: imported here

    curves = {
        arm: [
            (f, rep.dice[(f, arm)].mean, rep.dice[(f, arm)].std)
            for f in rep.fractions
            if (f, arm) in rep.dice
        ]
        for arm in rep.arms
    }
    marks: dict[str, dict[float, tuple[float, float]]] = defaultdict(dict)
    for c in rep.comparisons:
        marks[c.arm][c.fraction] = (c.nb_holm, c.nadeau_bengio.mean_diff)
    return plot_dice_vs_fraction(
        curves,
        dict(marks),
        path,
        baseline_arm=rep.baseline_arm,
        ylabel=f"Test {rep.metric.label}\n(mean ± std over folds)",
        caption=figure_caption(rep),
    )


def log_to_wandb(sweep_dir: Path, columns: list[str], rows: list[list[Any]], figure: Path) -> None:
    """Log the results table and the figure to W&B; offline unless WANDB_MODE says otherwise."""
    import wandb  # lazy: a heavy import, only needed here

    run = wandb.init(
        project="locseg",
        job_type="report",
        dir=str(sweep_dir),
        mode=os.environ.get("WANDB_MODE", "offline"),
    )
    try:
        table_rows = [[_wandb_cell(v) for v in row] for row in rows]
        run.log(
            {
                "results": wandb.Table(columns=columns, data=table_rows),
                "dice_vs_fraction": wandb.Image(str(figure)),
            }
        )
    finally:
        wandb.finish()


def _wandb_cell(value: Any) -> Any:
    """W&B tables need one type per column: keep numbers/bools, stringify the rest, None stays."""
    if value is None or isinstance(value, bool | int | float):
        return value
    return str(value)
