"""(1) Training images/s through Lightning vs a bare PyTorch loop, epochs interleaved in one fit."""

from __future__ import annotations

import copy
import itertools
import statistics
import time
from collections.abc import Callable

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from locseg.benchmark.core import TRAIN_TARGET, Row, Settings
from locseg.benchmark.timing import (
    epoch_images,
    median_interval,
    paired_ratios,
    spread,
    synchronize,
    timed,
)
from locseg.benchmark.workload import TrivialModule, make_module, make_step, make_trainer


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


def interleaved_fit(lit, bare_epoch, loader, n_batches: int, settings: Settings, dtype=None):
    """Seconds per epoch of each side, warm-up dropped: {"lightning": [...], "bare": [...]}."""
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
    return {"lightning": clock.lightning[1:], "bare": clock.bare[1:]}


def bench_training(task: str, datamodule, settings: Settings, dtype=None) -> Row:
    """Lightning vs bare loop over the same DataLoader object, epochs alternating in one fit;
    then the same on a trivial model, which measures Lightning's fixed cost per step."""
    loader = datamodule.train_dataloader()
    n_batches = min(settings.train_batches or len(loader), len(loader))
    images = epoch_images(loader, n_batches)
    base = make_module(task, settings.demo, datamodule)
    lit, bare = copy.deepcopy(base), copy.deepcopy(base).to(settings.device).train()
    step = make_step(task, bare, bare.configure_optimizers(), settings.device, dtype)

    def bare_epoch() -> None:
        for batch in itertools.islice(loader, n_batches):
            step(batch)

    seconds = interleaved_fit(lit, bare_epoch, loader, n_batches, settings, dtype)
    trivial = lightning_fixed_cost(task, loader, n_batches, settings, dtype)
    return training_row(task, seconds, images, n_batches, dtype, trivial)


def lightning_fixed_cost(task: str, loader, n_batches: int, settings: Settings, dtype=None):
    """Per-step milliseconds of :class:`TrivialModule` through Lightning and through the bare
    loop, and the fixed cost (median paired difference), over the same batches (held in memory,
    so loading adds no noise) and the same epoch length as the real comparison.

    With a step of microseconds, Lightning epoch minus bare epoch is the loop's own cost: its
    hooks, the optimizer closure, the batch hand-over, locseg's per-step running-mean update and
    its share of the epoch's start and end.
    """
    batches = list(itertools.islice(loader, n_batches))
    memory = DataLoader(batches, batch_size=None, shuffle=False)
    lit = TrivialModule(task)
    bare = TrivialModule(task).to(settings.device).train()
    step = make_step(task, bare, bare.configure_optimizers(), settings.device, dtype)

    def bare_epoch() -> None:
        for batch in memory:
            step(batch)

    seconds = interleaved_fit(lit, bare_epoch, memory, n_batches, settings, dtype)
    pairs = zip(seconds["lightning"], seconds["bare"], strict=True)
    per_step = 1e3 / n_batches
    return {
        "trivial_lightning_ms": statistics.median(seconds["lightning"]) * per_step,
        "trivial_bare_ms": statistics.median(seconds["bare"]) * per_step,
        "fixed_ms": statistics.median(lit_s - bare_s for lit_s, bare_s in pairs) * per_step,
    }


def training_row(task: str, seconds: dict, images: int, n_batches: int, dtype, trivial) -> Row:
    """The measured ratio beside the one Lightning's fixed cost alone predicts for this step."""
    ratios = paired_ratios(seconds["bare"], seconds["lightning"])  # speed ratio = time inverse
    lit_s, bare_s = statistics.median(seconds["lightning"]), statistics.median(seconds["bare"])
    pairs = zip(seconds["lightning"], seconds["bare"], strict=True)
    added_ms = statistics.median(lit - bare for lit, bare in pairs) / n_batches * 1e3
    step_ms, fixed_ms = bare_s / n_batches * 1e3, trivial["fixed_ms"]
    predicted = step_ms / (step_ms + max(fixed_ms, 0.0))
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
        values={
            "lightning_img_s": images / lit_s,
            "bare_img_s": images / bare_s,
            "bare_step_ms": step_ms,
            "trivial_lightning_ms_per_step": trivial["trivial_lightning_ms"],
            "trivial_bare_ms_per_step": trivial["trivial_bare_ms"],
            "predicted_ratio": predicted,
        },
        detail=f"{images / lit_s:.1f} vs {images / bare_s:.1f} img/s",
        note=(
            f"{n_batches} batches/epoch, {spread(ratios)}; Lightning's fixed cost "
            f"{fixed_ms:.2f} ms/step predicts {predicted:.3f}"
        ),
    )
    cause = (
        "the per-step hooks weigh on a model this small"
        if predicted < TRAIN_TARGET
        else f"the rest of the gap ({added_ms:.2f} ms/step added here) is not that fixed cost"
    )
    return row.explain(
        f"Lightning's fixed cost, measured on a trivial model in this run, is {fixed_ms:.2f} ms "
        f"per step ({fixed_ms / step_ms:.1%} of a {step_ms:.1f} ms bare step): alone it predicts "
        f"{predicted:.3f}; {cause}{noise}"
    )
