"""The run: settings from the command line's choices, every section in order, the result."""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from locseg.benchmark.core import (
    DEMO,
    PAPER,
    QUICK_DEMO,
    QUICK_PAPER,
    TARGET_KEY,
    Row,
    Scale,
    Settings,
    console,
)
from locseg.benchmark.data import bench_loader, bench_preprocessing
from locseg.benchmark.efficiency import bench_efficiency
from locseg.benchmark.inference import bench_inference
from locseg.benchmark.memory import bench_memory
from locseg.benchmark.render import meta, report
from locseg.benchmark.system import choose_threads
from locseg.benchmark.training import bench_training
from locseg.benchmark.workload import make_datamodule, make_dataset


def scales(quick: bool, image_size: int | None, paper_size: int | None) -> tuple[Scale, Scale]:
    """The demo and paper scales, at the requested input sizes (not yet checked)."""
    demo, paper = (QUICK_DEMO, QUICK_PAPER) if quick else (DEMO, PAPER)
    return (
        replace(demo, image_size=image_size or demo.image_size),
        replace(paper, image_size=paper_size or paper.image_size),
    )


def make_settings(
    demo: Scale,
    paper: Scale,
    *,
    quick: bool,
    device: str = "auto",
    threads: int = 0,
    batches: int | None = None,
    repeats: int | None = None,
    epochs: int | None = None,
    compile: str = "auto",
) -> tuple[Settings, str]:
    """Settings for one run, and why this many threads (``--quick``: tiny sizes, one round)."""
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    torch_device = torch.device("cuda" if cuda else "cpu")
    n_threads, why = choose_threads(threads, torch_device)
    settings = Settings(
        device=torch_device,
        demo=demo,
        paper=paper,
        batches=batches or (2 if quick else 8),
        train_batches=batches or (2 if quick else None),
        repeats=repeats or (1 if quick else 9),
        epochs=epochs or (2 if quick else 20),
        compile="none" if quick and compile == "auto" else compile,
        threads=n_threads,
        quick=quick,
        dataset=(
            {"n_localize": 40, "n_segment": 24, "size": 64}
            if quick
            else {"n_localize": 300, "n_segment": 60, "size": 128}
        ),
    )
    return settings, why


def run_all(settings: Settings) -> list[Row]:
    """Every section in order; progress goes to stderr, the table to stdout."""
    rows: list[Row] = []
    start = time.perf_counter()

    def progress(what: str) -> None:
        console.print(f"[dim]{time.perf_counter() - start:6.1f} s  {what}[/]")

    progress("drawing the synthetic dataset")
    root = make_dataset(settings)
    modules = {task: make_datamodule(task, root, settings.demo, settings) for task in TARGET_KEY}
    for task, datamodule in modules.items():
        progress(f"(1) training, {task}")
        rows.append(bench_training(task, datamodule, settings))
        if settings.cuda:
            rows.append(bench_training(task, datamodule, settings, torch.bfloat16))
    for task, datamodule in modules.items():
        progress(f"(2) loader vs step, {task}")
        rows.append(bench_loader(task, datamodule, settings))
    progress("(3) preprocessing")
    rows.append(bench_preprocessing(root, settings))
    for scale in (settings.demo, settings.paper):
        progress(f"(4) inference, {scale.name}")
        rows.extend(bench_inference(scale, settings))
    progress("(5) memory, demo and paper side by side")
    rows.extend(bench_memory((settings.demo, settings.paper), root, settings))
    progress("(6) training FLOP/s against the measured peak")
    rows.extend(bench_efficiency(settings))
    progress("done")
    return rows


def run(settings: Settings, threads_why: str) -> tuple[list[Row], dict]:
    """Every section in a temporary folder that is gone afterwards; the rows and the metadata."""
    if settings.device.type == "cpu":
        torch.set_num_threads(settings.threads)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="locseg-bench-") as workdir:
        settings.workdir = Path(workdir)
        rows = run_all(settings)
    info = meta(settings, threads_why, time.perf_counter() - start)
    return rows, report(rows, info)
