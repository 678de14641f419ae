"""Metric plumbing shared by both LightningModules."""

from __future__ import annotations

import torch
from torchmetrics import Metric


def reset_metrics(*metrics: Metric) -> None:
    """Reset outside inference mode: states re-created under ``trainer.validate`` would otherwise
    be inference tensors, which a later ``fit`` (whose validation runs under no_grad) cannot
    update in place."""
    with torch.inference_mode(False):
        for metric in metrics:
            metric.reset()
