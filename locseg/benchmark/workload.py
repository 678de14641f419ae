"""The workload every section times: the real DataModules and modules, and a bare PyTorch step."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from locseg.benchmark.core import TARGET_KEY, Scale, Settings
from locseg.benchmark.system import quiet
from locseg.models.metrics import TrainLossModule


def make_dataset(settings: Settings) -> Path:
    """A synthetic dataset in the run's temporary folder (the embedded default data)."""
    from locseg.data.synthetic import generate_dataset

    return generate_dataset(settings.workdir / "synthetic", **settings.dataset, progress=False)


def make_datamodule(task: str, root: Path, scale: Scale, settings: Settings, batch_size=None):
    """The real DataModule at its defaults (workers, pinning), only size and batch set."""
    from locseg.data.datamodules import LocalizationDataModule, SegmentationDataModule

    cls = LocalizationDataModule if task == "localize" else SegmentationDataModule
    datamodule = cls(
        root=str(root),
        name="bench",
        image_size=scale.image_size,
        batch_size=batch_size or scale.batch_size,
        cache_dir=str(settings.workdir / "cache"),
    )
    with quiet():
        datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def make_module(task: str, scale: Scale, datamodule=None) -> pl.LightningModule:
    from locseg.models.localizer import LocalizerModule
    from locseg.models.segmenter import SegmenterModule

    torch.manual_seed(0)
    options = {"depth": scale.depth, "base_width": scale.width, "input_size": scale.image_size}
    if task == "localize":
        module = LocalizerModule(**options)
        if datamodule is not None:
            module.set_baseline_center(datamodule.mean_train_center())
        return module
    return SegmenterModule(**options)


def bare_loss(task: str, module: pl.LightningModule, batch: dict) -> torch.Tensor:
    """The loss of the module's ``training_step``, without its metric bookkeeping."""
    from locseg.models.losses import neg_log_dice_loss

    if task == "localize":
        return F.mse_loss(module(batch["image"]).float(), batch["center"].float())
    return neg_log_dice_loss(module(batch["image"]), batch["mask"], module.hparams.dice_smooth)


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


class TrivialModule(TrainLossModule):
    """One weight on the task's batch and loss: a step costs microseconds, so what Lightning's
    loop adds per step (hooks, closure, locseg's running-mean update) is all that is left."""

    def __init__(self, task: str):
        super().__init__()
        self.task = task
        self.weight = torch.nn.Parameter(torch.ones(()))
        self.hparams.dice_smooth = 1.0

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.task == "localize":
            return (image.flatten(1).mean(1, keepdim=True) * self.weight).expand(-1, 2)
        return torch.sigmoid(image * self.weight)

    def batch_loss(self, batch: dict) -> torch.Tensor:
        return bare_loss(self.task, self, batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=1e-3)


def make_step(task: str, module, optimizer, device, dtype=None) -> Callable[[dict], None]:
    """One plain PyTorch training step: what a user would write without a framework."""
    key = TARGET_KEY[task]

    def step(batch: dict) -> None:
        image = batch["image"].to(device, non_blocking=True)
        target = batch[key].to(device, non_blocking=True)
        with autocast(device, dtype):
            loss = bare_loss(task, module, {"image": image, key: target})
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def make_trainer(settings: Settings, callbacks: list, precision: str, **limits) -> pl.Trainer:
    """A Trainer with nothing the comparison does not need: no logger, checkpoints or bar."""
    return pl.Trainer(
        accelerator="gpu" if settings.cuda else "cpu",
        devices=1,
        precision=precision,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        default_root_dir=str(settings.workdir / "trainer"),
        **limits,
    )
