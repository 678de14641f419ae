"""Lightning callbacks of our own: prediction overlays for people who would rather look."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytorch_lightning as pl

from locseg.io import atomic_path

GREEN, RED = (0, 200, 0), (230, 40, 40)


def overlay(image: np.ndarray, true, pred) -> np.ndarray:
    """RGB picture of one input with truth (green) and prediction (red).

    ``true``/``pred`` are either normalised centres (2,) or masks (S, S) in [0, 1].
    """
    gray = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    canvas = cv2.cvtColor(cv2.resize(gray, (128, 128)), cv2.COLOR_GRAY2RGB)
    for target, colour in ((true, GREEN), (pred, RED)):
        if target.ndim == 1:
            x, y = (np.asarray(target) * 128).astype(int)
            cv2.drawMarker(canvas, (int(x), int(y)), colour, cv2.MARKER_CROSS, 12, 2)
        else:
            mask = cv2.resize((target > 0.5).astype(np.uint8), (128, 128), cv2.INTER_NEAREST)
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(canvas, contours, -1, colour, 1)
    return canvas


class PredictionOverlays(pl.Callback):
    """After each validation, draw the first batch's predictions (W&B images, a PNG in the run).

    Relies on ``validation_step`` returning ``{"pred": ...}`` (both locseg modules do).
    """

    def __init__(self, max_images: int = 4):
        self.max_images = max_images

    def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx != 0 or trainer.sanity_checking or not isinstance(outputs, dict):
            return
        count = min(self.max_images, len(batch["image"]))
        target = batch["center"] if outputs["pred"].ndim == 2 else batch["mask"][:, 0]
        pred = outputs["pred"] if outputs["pred"].ndim == 2 else outputs["pred"][:, 0]
        pictures = [
            overlay(
                *(t[i].detach().float().cpu().numpy() for t in (batch["image"][:, 0], target, pred))
            )
            for i in range(count)
        ]
        self._save(trainer, np.hstack(pictures))
        for logger in trainer.loggers:
            if isinstance(logger, pl.loggers.WandbLogger):
                logger.log_image("val/overlays", pictures, step=trainer.global_step)

    @staticmethod
    def _save(trainer: pl.Trainer, picture: np.ndarray) -> None:
        if not trainer.is_global_zero or trainer.default_root_dir is None:
            return
        path = Path(trainer.default_root_dir) / "val_overlays.png"
        with atomic_path(path) as tmp:
            cv2.imwrite(str(tmp), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
