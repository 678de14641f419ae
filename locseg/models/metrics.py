"""Training plumbing shared by both LightningModules: the loss loop, its learning-rate schedule,
the divergence guard and metric resets."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping

import pytorch_lightning as pl
import torch
from torchmetrics import MeanMetric, Metric

SCHEDULERS = ("none", "cosine")


def reset_metrics(*metrics: Metric) -> None:
    """Reset outside inference mode: states re-created under ``trainer.validate`` would otherwise
    be inference tensors, which a later ``fit`` (whose validation runs under no_grad) cannot
    update in place."""
    with torch.inference_mode(False):
        for metric in metrics:
            metric.reset()


def lr_factor(step: int, total_steps: int, scheduler: str, warmup_steps: int) -> float:
    """Multiplier of the base lr for the optimizer step ``step`` (0-based).

    Linear warm-up over ``warmup_steps`` ((step + 1) / warmup_steps), then constant (``none``) or
    a cosine from 1 down to 0 at ``total_steps`` (``cosine``).
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if scheduler == "none":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class DivergenceGuard:
    """Stops a training whose loss is not finite or has exploded, before it hands on bad weights.

    Rule: the reference is the median of the first ``window`` (20) healthy training losses (the
    median, so one odd batch does not move it; the first ones, so a model that later trains its
    loss close to 0 does not make ordinary noise look like an explosion). From the second step on
    (``min_losses`` = 1), a loss above ``factor`` x the reference is an explosion: a too-high lr
    typically multiplies the loss by 1e6 or more within one or two steps, before any later
    reference could be formed. A NaN or infinite loss fails at once. ``factor`` <= 0 keeps only
    the finiteness check.
    """

    def __init__(self, factor: float = 1e3, window: int = 20, min_losses: int = 1):
        self.factor = float(factor)
        self.window = int(window)
        self.min_losses = int(min_losses)
        self.first: list[float] = []

    def reset(self) -> None:
        self.first = []

    @property
    def reference(self) -> float | None:
        if len(self.first) < self.min_losses:
            return None
        return statistics.median(self.first)

    def problem(self, loss: float) -> str | None:
        """Why ``loss`` means divergence, or None; a healthy loss may join the reference."""
        if not math.isfinite(loss):
            return f"the training loss is {loss}"
        reference = self.reference
        if self.factor > 0 and reference is not None and loss > self.factor * reference:
            of = f"the median of the first {len(self.first)} losses" if len(self.first) > 1 else ""
            return (
                f"the training loss {loss:.4g} exceeds {self.factor:g} x {reference:.4g}, "
                f"{of or 'the first loss'}"
            )
        if len(self.first) < self.window:
            self.first.append(loss)
        return None


class TrainLossModule(pl.LightningModule):
    """The training loop both phases share: a subclass gives ``batch_loss`` and its optimizer.

    The running mean of the loss stays on the device and is logged once per epoch. Each step's
    loss is checked by a :class:`DivergenceGuard` (one host read of a scalar per step), and the
    optimizer gets the optional warm-up + cosine schedule, stepped per optimizer step.
    ``lr_key`` names the config key of the learning rate, for the guard's advice.
    """

    lr_key = "lr"

    def __init__(
        self, scheduler: str = "none", warmup_steps: int = 0, divergence_factor: float = 1e3
    ):
        super().__init__()
        if scheduler not in SCHEDULERS:
            raise ValueError(
                f"model.scheduler={scheduler!r} is not one of {SCHEDULERS}; "
                "set model.scheduler=none or cosine"
            )
        if warmup_steps < 0:
            raise ValueError(f"model.warmup_steps={warmup_steps} must be >= 0")
        self.scheduler_name = scheduler
        self.warmup_steps = int(warmup_steps)
        self.train_loss = MeanMetric(nan_strategy="disable")
        self.guard = DivergenceGuard(divergence_factor)

    def batch_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def check_divergence(self, loss: torch.Tensor) -> None:
        """Raise ``RuntimeError`` with the step, the loss and the fix when training diverges."""
        problem = self.guard.problem(float(loss.detach()))
        if problem is None:
            return
        optimizers = self.trainer.optimizers if self._trainer is not None else []
        lr = optimizers[0].param_groups[0]["lr"] if optimizers else None
        now = f" (now {lr:.3g})" if lr is not None else ""
        schedule = (
            "enable the schedule (model.scheduler=cosine model.warmup_steps=100)"
            if self.scheduler_name == "none" and self.warmup_steps == 0
            else "lengthen the warm-up (model.warmup_steps)"
        )
        raise RuntimeError(
            f"training diverged at step {self.global_step}: {problem}. Stopped so that no "
            f"diverged weights are handed on. Lower {self.lr_key}{now}, e.g. by 10x, or {schedule}."
        )

    def on_train_start(self) -> None:
        self.guard.reset()

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.batch_loss(batch)
        self.check_divergence(loss)
        self.train_loss.update(loss.detach(), weight=batch["image"].shape[0])
        return loss

    def on_train_epoch_end(self) -> None:
        self.log("train/loss", self.train_loss.compute())
        reset_metrics(self.train_loss)

    def total_steps(self) -> int:
        """The schedule's length: the trainer's ``max_steps`` (or what its epochs amount to)."""
        total = self.trainer.max_steps
        if total is None or total < 0:
            total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ValueError(
                "model.scheduler=cosine needs a finite training length: set trainer.max_steps "
                "(steps.localize / steps.segment) or trainer.max_epochs"
            )
        return int(total)

    def with_schedule(self, optimizer: torch.optim.Optimizer):
        """The optimizer alone when nothing is scheduled (the paper's constant lr), else the
        Lightning dict with a per-step ``LambdaLR``."""
        if self.scheduler_name == "none" and self.warmup_steps == 0:
            return optimizer
        total = self.total_steps() if self.scheduler_name == "cosine" else 0
        name, warmup = self.scheduler_name, self.warmup_steps
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, total, name, warmup)
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": schedule, "interval": "step", "frequency": 1},
        }
