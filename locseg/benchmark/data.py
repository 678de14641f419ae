"""(2) DataLoader vs training step and (3) cold vs cached preprocessing."""

from __future__ import annotations

import itertools
import statistics
from pathlib import Path

import torch

from locseg.benchmark.core import LOADER_TARGET, PREPROCESS_TARGET, Row, Settings
from locseg.benchmark.system import quiet
from locseg.benchmark.timing import epoch_images, paired_ratios, rotations, spread, timed
from locseg.benchmark.workload import make_module, make_step


def bench_loader(task: str, datamodule, settings: Settings) -> Row:
    """Loader alone vs training step alone on a batch already on the device, interleaved."""
    loader = datamodule.train_dataloader()
    n_batches = min(settings.batches, len(loader))
    images = epoch_images(loader, n_batches)
    module = make_module(task, settings.demo, datamodule).to(settings.device).train()
    step = make_step(task, module, module.configure_optimizers(), settings.device)
    fixed = {k: v.to(settings.device) for k, v in next(iter(loader)).items()}

    def load() -> None:
        for _ in itertools.islice(loader, n_batches):
            pass

    def train() -> None:
        for _ in range(n_batches):
            step(fixed)

    runs = {"loader": load, "step": train}
    for fn in runs.values():  # warm-up: worker start-up, allocator, kernels
        fn()
    seconds: dict[str, list[float]] = {"loader": [], "step": []}
    for order in rotations(list(runs), settings.repeats):
        for name in order:
            seconds[name].append(timed(runs[name], settings.device))
    ratios = paired_ratios(seconds["step"], seconds["loader"])
    loader_ips = images / statistics.median(seconds["loader"])
    step_ips = images / statistics.median(seconds["step"])
    workers = loader.num_workers
    row = Row(
        "loader",
        f"{task}: DataLoader / training step",
        ratio=statistics.median(ratios),
        target=LOADER_TARGET,
        values={"loader_img_s": loader_ips, "step_img_s": step_ips},
        detail=f"{loader_ips:.0f} vs {step_ips:.1f} img/s",
        note=f"num_workers={workers}, {spread(ratios)}",
    )
    return row.explain(
        f"the loader (num_workers={workers}) makes {loader_ips:.0f} img/s for a step taking "
        f"{step_ips:.0f} img/s: raise data.num_workers where cores are free"
    )


def bench_preprocessing(root: Path, settings: Settings) -> Row:
    """A fresh cache folder each round (cold) vs the same call again (cached), interleaved."""
    from locseg.data.dataset import load_dataset, read_image
    from locseg.data.preprocess import PreprocessConfig, preprocess_dataset

    dataset = load_dataset(root)
    config = PreprocessConfig(image_size=settings.demo.image_size)
    cpu = torch.device("cpu")
    cold, cached = [], []
    for r in range(settings.repeats):
        folder = settings.workdir / f"preprocess-{r}"

        def run(folder: Path = folder) -> None:
            preprocess_dataset(dataset, config, folder)

        with quiet():
            cold.append(timed(run, cpu))
        cached.append(statistics.median(timed(run, cpu) for _ in range(3)))
    ratios = paired_ratios(cold, cached)
    count = len(dataset.centred())
    native = read_image(dataset.centred()[0].image_path).shape
    cold_s, cached_s = statistics.median(cold), statistics.median(cached)
    row = Row(
        "preprocessing",
        f"cold / cached ({count} images, {native[1]}x{native[0]} -> {config.image_size} px)",
        ratio=statistics.median(ratios),
        target=PREPROCESS_TARGET,
        values={"cold_s": cold_s, "cached_s": cached_s, "cold_img_s": count / cold_s},
        detail=f"{cold_s:.2f} s vs {cached_s * 1e3:.1f} ms",
        note=spread(ratios),
    )
    return row.explain(
        f"the cached run still reads and hashes the bytes of {count} files (the cache is keyed "
        f"by content, so a replaced file is never served stale) and checks the arrays' CRC "
        f"({cached_s * 1e3:.0f} ms), while {native[1]} px images preprocess cheaply "
        f"({count / cold_s:.0f} img/s); real photographs are 5-20x larger"
    )
