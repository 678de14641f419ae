"""(1) Training images/s through Lightning vs a bare PyTorch loop, epochs interleaved in one fit."""

from __future__ import annotations

import copy
import itertools
import statistics
import time
from collections.abc import Callable

import pytorch_lightning as pl
import torch

from locseg.benchmark.core import TRAIN_TARGET, Row, Settings
from locseg.benchmark.timing import (
    epoch_images,
    median_interval,
    paired_ratios,
    spread,
    synchronize,
    timed,
)
from locseg.benchmark.workload import make_module, make_step, make_trainer


class Interleaver(pl.Callback):
    """Alternates epochs: before each Lightning epoch, one epoch of the bare loop.

    Epoch k of each side runs within a second of the other, so a neighbour's burst of work slows
    both; separate runs tens of seconds apart compared the machine's moods, not the two loops. A
    Lightning epoch is timed from the end of the bare epoch in its start hook to the next start
    hook: its data fetching, every hook and the module's epoch-end logging are inside.
    """

    def __init__(self, bare_epoch: Callable[[], None], device: torch.device):
        self.bare_epoch, self.device = bare_epoch, device
        self.lightning: list[float] = []
        self.bare: list[float] = []
        self._start: float | None = None

    def _now(self) -> float:
        synchronize(self.device)
        return time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self._start is not None:
            self.lightning.append(self._now() - self._start)
        with torch.enable_grad():
            self.bare.append(timed(self.bare_epoch, self.device))
        self._start = self._now()

    def on_train_end(self, trainer, pl_module) -> None:
        self.lightning.append(self._now() - self._start)


def bench_training(task: str, datamodule, settings: Settings, dtype=None) -> Row:
    """Lightning vs bare loop over the same DataLoader object, epochs alternating in one fit."""
    loader = datamodule.train_dataloader()
    n_batches = min(settings.batches, len(loader))
    images = epoch_images(loader, n_batches)
    base = make_module(task, settings.demo, datamodule)
    lit, bare = copy.deepcopy(base), copy.deepcopy(base).to(settings.device).train()
    step = make_step(task, bare, bare.configure_optimizers(), settings.device, dtype)

    def bare_epoch() -> None:
        for batch in itertools.islice(loader, n_batches):
            step(batch)

    clock = Interleaver(bare_epoch, settings.device)
    trainer = make_trainer(
        settings,
        [clock],
        "bf16-mixed" if dtype is torch.bfloat16 else "32-true",
        max_epochs=settings.epochs + 1,
        limit_train_batches=n_batches,
    )
    trainer.fit(lit, train_dataloaders=loader)
    threads = torch.get_num_threads()
    if settings.device.type == "cpu" and threads != settings.threads:
        raise RuntimeError(f"torch threads changed in the run ({settings.threads} -> {threads})")
    seconds = {"lightning": clock.lightning[1:], "bare": clock.bare[1:]}  # warm-up dropped
    return training_row(task, seconds, images, n_batches, dtype)


def training_row(task: str, seconds: dict, images: int, n_batches: int, dtype) -> Row:
    ratios = paired_ratios(seconds["bare"], seconds["lightning"])  # speed ratio = time inverse
    lit_s, bare_s = statistics.median(seconds["lightning"]), statistics.median(seconds["bare"])
    pairs = zip(seconds["lightning"], seconds["bare"], strict=True)
    overhead_ms = statistics.median(lit - bare for lit, bare in pairs) / n_batches * 1e3
    step_ms = bare_s / n_batches * 1e3
    low, high, is_ci = median_interval(ratios)
    noise = (
        f"; within this machine's noise (the 95% CI holds {TRAIN_TARGET})"
        if is_ci and high >= TRAIN_TARGET
        else ""
    )
    label = "bf16-mixed" if dtype is torch.bfloat16 else "fp32"
    row = Row(
        "training",
        f"{task}: Lightning / bare loop ({label})",
        ratio=statistics.median(ratios),
        target=TRAIN_TARGET,
        values={"lightning_img_s": images / lit_s, "bare_img_s": images / bare_s},
        detail=f"{images / lit_s:.1f} vs {images / bare_s:.1f} img/s",
        note=f"{n_batches} batches/epoch, {spread(ratios)}",
    )
    return row.explain(
        f"Lightning adds {overhead_ms:.1f} ms to a {step_ms:.1f} ms step "
        f"({overhead_ms / step_ms:.0%}): per-step hooks weigh on a small model{noise}"
    )
