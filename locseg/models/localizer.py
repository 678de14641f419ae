"""Phase 1: regress the optic-disc centre with the U-Net encoder, then hand the encoder on.

Targets and predictions are normalised coordinates (x / W, y / H) of the network's input frame (the
whole photograph, or the square around its field of view with ``data.preprocess.crop_fov``) so
images of any native size share one scale; the metrics map them back to native pixels through the
frame's size (``frame_size``), the unit a reader can judge.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, SumMetric

from locseg.models.encoder_io import save_encoder
from locseg.models.losses import gaussian_heatmap, js_divergence
from locseg.models.metrics import TrainLossModule, reset_metrics
from locseg.models.unet import (
    Encoder,
    HeatmapHead,
    check_input_size,
    float32_region,
    localization_head,
    soft_argmax,
)

STAGES = ("val", "test")
ERROR_METRICS = (
    "dist_px",
    "mse_px2",
    "dist_frac_width",
    "baseline_dist_px",
    "image_centre_dist_px",
)


def pixel_distance(
    pred: torch.Tensor, center: torch.Tensor, frame_size: torch.Tensor
) -> torch.Tensor:
    """Euclidean distance (B,) in native pixels between points normalised in the input's frame.

    ``frame_size`` (B, 2) is the (width, height) in native px that the network's input shows:
    the whole photograph (then it is the native size) or the square around its field of view.
    """
    return ((pred.float() - center.float()) * frame_size.float()).norm(dim=1)


def localization_errors(
    pred: torch.Tensor,
    center: torch.Tensor,
    native_size: torch.Tensor,
    radius: torch.Tensor,
    baseline: torch.Tensor,
    frame_size: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Per-image errors (each (B,)) in native pixels, plus which images have a known radius.

    Distances scale by ``frame_size`` (default: ``native_size``, the whole-photograph frame);
    ``dist_frac_width`` stays a fraction of the photograph's native width. The image-centre
    baseline is the frame's centre, (0.5, 0.5) in frame coordinates. ``within_radius`` is 0
    where the radius is unknown (NaN); weight it by ``radius_known``.
    """
    frame_size = native_size if frame_size is None else frame_size
    dist = pixel_distance(pred, center, frame_size)
    radius = radius.float()
    known = ~torch.isnan(radius)
    return {
        "dist_px": dist,
        "mse_px2": dist.square(),
        "dist_frac_width": dist / native_size[:, 0].float(),
        "baseline_dist_px": pixel_distance(baseline.expand_as(center), center, frame_size),
        "image_centre_dist_px": pixel_distance(torch.full_like(center, 0.5), center, frame_size),
        "within_radius": (known & (dist < radius)).float(),
        "radius_known": known.float(),
    }


def _stage_metrics() -> nn.ModuleDict:
    """Running means that stay on the device: no host sync until the epoch ends."""
    metrics = {name: MeanMetric(nan_strategy="disable") for name in ("loss", *ERROR_METRICS)}
    metrics["within_radius"] = MeanMetric(nan_strategy="disable")
    metrics["radius_known"] = SumMetric(nan_strategy="disable")
    return nn.ModuleDict(metrics)


class LocalizerModule(TrainLossModule):
    """Encoder + head -> (x/W, y/H); MSE loss on normalised coordinates; RMSprop.

    ``head``: ``linear`` (the paper: flatten + linear) or ``heatmap`` (DSNT: 1x1 conv, spatial
    softmax, soft-argmax). With the heatmap head, ``heatmap_reg`` > 0 adds DSNT's Jensen-Shannon
    regulariser towards a Gaussian of ``heatmap_sigma`` bottleneck cells at the true centre (off
    by default). Only the encoder is handed on, whatever the head.

    Batch: ``image`` (B,1,S,S) in [0,1], ``center`` (B,2) normalised in the input's frame,
    ``native_size`` (B,2) (W,H) in px, optionally ``frame_size`` (B,2) the native px the input
    shows (``data.preprocess.crop_fov``; default ``native_size``), ``radius`` (B,) disc radius in
    native px (NaN if unknown), ``index`` (B,).
    """

    lr_key = "lr.localize"

    def __init__(
        self,
        in_channels: int = 1,
        depth: int = 3,
        base_width: int = 8,
        dropout: float = 0.1,
        lr: float = 1e-3,
        input_size: int = 64,
        preprocess: dict | None = None,
        baseline_center: Sequence[float] = (0.5, 0.5),
        head: str = "linear",
        heatmap_reg: float = 0.0,
        heatmap_sigma: float = 1.0,
        scheduler: str = "none",
        warmup_steps: int = 0,
        divergence_factor: float = 1e3,
    ):
        super().__init__(scheduler, warmup_steps, divergence_factor)
        self.save_hyperparameters()
        check_input_size(input_size, depth)
        if heatmap_reg and head != "heatmap":
            raise ValueError(
                f"model.heatmap_reg={heatmap_reg} regularises the heat map of model.head=heatmap; "
                f"set model.head=heatmap or model.heatmap_reg=0 (model.head is {head!r})"
            )
        self.encoder = Encoder(in_channels, depth, base_width, dropout)
        self.head = localization_head(head, self.encoder.out_channels, input_size // 2**depth)
        self.register_buffer(
            "baseline_center", torch.tensor([float(c) for c in baseline_center]).view(1, 2)
        )
        self.stage_metrics = nn.ModuleDict({stage: _stage_metrics() for stage in STAGES})

    def set_baseline_center(self, center: Sequence[float]) -> None:
        """Use this normalised (x/W, y/H) point, e.g. the mean training centre, as the baseline."""
        value = torch.as_tensor([float(c) for c in center], dtype=self.baseline_center.dtype)
        self.baseline_center.copy_(value.view(1, 2))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        bottleneck, _ = self.encoder(image)
        return self.head(bottleneck)

    # ------------------------------------------------------------------ steps

    @staticmethod
    def coordinate_loss(pred: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
        """MSE on normalised coordinates, in float32 even under autocast."""
        with float32_region(pred):
            return F.mse_loss(pred.float(), center.float())

    def batch_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if not self.hparams.heatmap_reg:
            return self.coordinate_loss(self(batch["image"]), batch["center"])
        assert isinstance(self.head, HeatmapHead)
        bottleneck, _ = self.encoder(batch["image"])
        heatmap = self.head.heatmap(bottleneck)
        with float32_region(heatmap):
            target = gaussian_heatmap(
                batch["center"], *heatmap.shape[1:], sigma=self.hparams.heatmap_sigma
            )
            regulariser = js_divergence(heatmap, target)
            loss = self.coordinate_loss(soft_argmax(heatmap), batch["center"])
            return loss + self.hparams.heatmap_reg * regulariser

    def _eval_step(self, batch: Mapping[str, torch.Tensor], stage: str) -> dict:
        pred = self(batch["image"])
        loss = self.coordinate_loss(pred, batch["center"])
        errors = localization_errors(
            pred.detach(),
            batch["center"],
            batch["native_size"],
            batch["radius"],
            self.baseline_center,
            batch.get("frame_size"),
        )
        metrics = self.stage_metrics[stage]
        metrics["loss"].update(loss.detach(), weight=pred.shape[0])
        for name in ERROR_METRICS:
            metrics[name].update(errors[name])
        metrics["within_radius"].update(errors["within_radius"], weight=errors["radius_known"])
        metrics["radius_known"].update(errors["radius_known"])
        return {"loss": loss, "pred": pred.detach()}

    def _log_stage(self, stage: str) -> None:
        """Log the epoch means; ``within_radius`` only when some radius was known."""
        metrics = self.stage_metrics[stage]
        for name in ("loss", *ERROR_METRICS):
            self.log(f"{stage}/{name}", metrics[name].compute())
        if metrics["radius_known"].compute() > 0:
            self.log(f"{stage}/within_radius", metrics["within_radius"].compute())
        reset_metrics(*metrics.values())

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> dict:
        return self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_stage("val")

    def test_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> dict:
        return self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_stage("test")

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """(B, 2) normalised (x/W, y/H) centres; multiply by (W, H) for native pixels."""
        image = batch["image"] if isinstance(batch, Mapping) else batch
        return self(image)

    def configure_optimizers(self):
        return self.with_schedule(torch.optim.RMSprop(self.parameters(), lr=self.hparams.lr))

    # ------------------------------------------------------------------ hand-off

    def export_encoder(self, path: str | os.PathLike) -> Path:
        """Write ``encoder.pt`` for the segmentation phase (weights + compatibility record)."""
        return save_encoder(
            path,
            self.encoder,
            input_size=self.hparams.input_size,
            preprocess=self.hparams.preprocess,
            extra={
                "task": "localize",
                "baseline_center": self.baseline_center.view(-1).tolist(),
            },
        )
