"""The results as a table (rich, to stdout) and as JSON: metadata, sections, targets."""

from __future__ import annotations

import os
import platform
from dataclasses import asdict
from datetime import UTC, datetime

import pytorch_lightning as pl
import torch
from rich.table import Table

import locseg
from locseg.benchmark.core import SECTIONS, Row, Scale, Settings
from locseg.benchmark.system import cpu_name


def meta(settings: Settings, threads_why: str, seconds: float) -> dict:
    device = torch.cuda.get_device_name(settings.device) if settings.cuda else cpu_name()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "device": str(settings.device),
        "device_name": device,
        "cpus": os.cpu_count(),
        "load_avg_1min": os.getloadavg()[0],
        "threads": settings.threads,
        "threads_reason": threads_why,
        "torch": torch.__version__,
        "lightning": pl.__version__,
        "locseg": locseg.__version__,
        "python": platform.python_version(),
        "quick": settings.quick,
        "batches": settings.batches,
        "train_batches": settings.train_batches,
        "repeats": settings.repeats,
        "epochs": settings.epochs,
        "demo": asdict(settings.demo),
        "paper": asdict(settings.paper),
        "dataset": settings.dataset,
        "wall_s": seconds,
    }


def report(rows: list[Row], info: dict) -> dict:
    sections = {name: [r.as_dict() for r in rows if r.section == name] for name in SECTIONS}
    targets = [
        {k: r.as_dict()[k] for k in ("section", "name", "ratio", "target", "passed", "reason")}
        for r in rows
        if r.target is not None
    ]
    return {"meta": info, "sections": sections, "targets": targets}


def format_ratio(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    return f"{ratio:.3f}" if ratio < 10 else f"{ratio:.1f}"


def render(rows: list[Row], info: dict) -> Table:
    table = Table(
        title="python -m locseg.bench",
        title_justify="left",
        caption=(
            f"{info['date']}, {info['device_name']} ({info['device']}, threads={info['threads']}, "
            f"{info['threads_reason']}), torch {info['torch']}, lightning {info['lightning']}; "
            f"demo = {Scale(**info['demo']).describe()}, "
            f"paper = {Scale(**info['paper']).describe()}"
            f"; {info['wall_s']:.0f} s"
        ),
        caption_justify="left",
    )
    for column, style in (
        ("Section", "bold"),
        ("Measure", ""),
        ("Ratio", "bold"),
        ("Target", ""),
        ("Result", ""),
        ("Measured", ""),
        ("Note / reason", "dim"),
    ):
        table.add_column(column, style=style, overflow="fold")
    for row in rows:
        result = {True: "[green]PASS[/]", False: "[red]MISS[/]", None: "[dim]info[/]"}[row.passed]
        note = f"[red]{row.reason}[/]; {row.note}" if row.reason else row.note
        table.add_row(
            row.section,
            row.name,
            format_ratio(row.ratio),
            f">= {row.target:g}" if row.target is not None else "-",
            result,
            row.detail,
            note,
        )
    return table
