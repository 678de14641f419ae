"""Metric plumbing shared by both LightningModules."""

from __future__ import annotations

from collections.abc import Mapping

import pytorch_lightning as pl
import torch
from torchmetrics import MeanMetric, Metric


def reset_metrics(*metrics: Metric) -> None:
    """Reset outside inference mode: states re-created under ``trainer.validate`` would otherwise
    be inference tensors, which a later ``fit`` (whose validation runs under no_grad) cannot
    update in place."""
    with torch.inference_mode(False):
        for metric in metrics:
            metric.reset()


class TrainLossModule(pl.LightningModule):
    """The training loop both phases share: a subclass gives ``batch_loss``; the running mean of
    the loss stays on the device and is logged once per epoch (no per-step host sync)."""

    def __init__(self):
        super().__init__()
        self.train_loss = MeanMetric(nan_strategy="disable")

    def batch_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.batch_loss(batch)
        self.train_loss.update(loss.detach(), weight=batch["image"].shape[0])
        return loss

    def on_train_epoch_end(self) -> None:
        self.log("train/loss", self.train_loss.compute())
        reset_metrics(self.train_loss)
