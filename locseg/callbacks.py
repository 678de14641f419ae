"""Lightning callbacks of our own: prediction overlays for people who would rather look.

Colour says whose it is (truth green, prediction red), shape says what it is (a contour for a mask,
a diamond for a mask's centroid, a cross for a regressed centre, as in ``locseg.predict``), and a
legend strip under the row says so in words.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytorch_lightning as pl

from locseg.io import atomic_path

GREEN, RED = (0, 200, 0), (230, 40, 40)
TILE = 128  # px per overlay tile
LINE, CENTRE, CENTROID = "line", cv2.MARKER_CROSS, cv2.MARKER_DIAMOND
LEGENDS = {  # what a picture of each kind shows: (label, colour, glyph)
    "centre": (("true centre", GREEN, CENTRE), ("predicted centre", RED, CENTRE)),
    "mask": (
        ("true mask", GREEN, LINE),
        ("predicted mask", RED, LINE),
        ("true mask centroid", GREEN, CENTROID),
        ("predicted mask centroid", RED, CENTROID),
    ),
}
FONT, FONT_SCALE, LEGEND_LINE, LEGEND_PAD = cv2.FONT_HERSHEY_SIMPLEX, 0.35, 14, 4
TEXT = (235, 235, 235)


def mask_centroid(mask: np.ndarray) -> tuple[float, float] | None:
    """(x, y) of the pixels above 0.5 in the mask's own pixels, or None for an empty mask."""
    ys, xs = np.nonzero(mask > 0.5)
    return (float(xs.mean()), float(ys.mean())) if len(xs) else None


def overlay(image: np.ndarray, true, pred) -> np.ndarray:
    """RGB tile of one input with truth (green) and prediction (red).

    ``true``/``pred`` are either normalised centres (2,), drawn as crosses, or masks (S, S) in
    [0, 1], drawn as contours with a diamond on each mask's centroid.
    """
    gray = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    canvas = cv2.cvtColor(cv2.resize(gray, (TILE, TILE)), cv2.COLOR_GRAY2RGB)
    for target, colour in ((true, GREEN), (pred, RED)):
        target = np.asarray(target)
        if target.ndim == 1:
            x, y = (target * TILE).astype(int)
            cv2.drawMarker(canvas, (int(x), int(y)), colour, CENTRE, 12, 2)
            continue
        mask = cv2.resize((target > 0.5).astype(np.uint8), (TILE, TILE), cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(canvas, contours, -1, colour, 1)
        centroid = mask_centroid(target)
        if centroid is not None:
            scale = TILE / target.shape[1], TILE / target.shape[0]
            xy = (round(centroid[0] * scale[0]), round(centroid[1] * scale[1]))
            cv2.drawMarker(canvas, xy, colour, CENTROID, 9, 1)
    return canvas


def _glyph(canvas: np.ndarray, x: int, y: int, colour, glyph) -> None:
    """The legend's sample of one mark, centred at (x + 6, y)."""
    if glyph == LINE:
        cv2.line(canvas, (x, y), (x + 12, y), colour, 2)
    else:
        cv2.drawMarker(canvas, (x + 6, y), colour, glyph, 9, 2 if glyph == CENTRE else 1)


def legend_strip(width: int, kind: str) -> np.ndarray:
    """A dark RGB strip ``width`` px wide naming each mark of ``kind`` ("centre" or "mask");
    entries flow onto as many lines as the width needs."""
    placed, x, line = [], LEGEND_PAD, 0
    for label, colour, glyph in LEGENDS[kind]:
        (text_w, _), _ = cv2.getTextSize(label, FONT, FONT_SCALE, 1)
        entry_w = 16 + text_w + 3 * LEGEND_PAD
        if x > LEGEND_PAD and x + entry_w > width:
            x, line = LEGEND_PAD, line + 1
        placed.append((x, line, label, colour, glyph))
        x += entry_w
    strip = np.full((LEGEND_PAD * 2 + LEGEND_LINE * (line + 1), width, 3), 24, np.uint8)
    for x, row, label, colour, glyph in placed:
        y = LEGEND_PAD + LEGEND_LINE * row + LEGEND_LINE // 2
        _glyph(strip, x, y, colour, glyph)
        cv2.putText(strip, label, (x + 16, y + 4), FONT, FONT_SCALE, TEXT, 1)
    return strip


def legend_text(kind: str) -> str:
    """The legend in words, for viewers that show a caption (W&B) instead of the strip."""
    names = {GREEN: "green", RED: "red", LINE: "contour", CENTRE: "cross", CENTROID: "diamond"}
    return "; ".join(f"{label}: {names[c]} {names[g]}" for label, c, g in LEGENDS[kind])


def overlay_row(pictures: list[np.ndarray], kind: str) -> np.ndarray:
    """The tiles side by side with the legend strip underneath."""
    row = np.hstack(pictures)
    return np.vstack([row, legend_strip(row.shape[1], kind)])


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
        is_centre = outputs["pred"].ndim == 2
        target = batch["center"] if is_centre else batch["mask"][:, 0]
        pred = outputs["pred"] if is_centre else outputs["pred"][:, 0]
        pictures = [
            overlay(
                *(t[i].detach().float().cpu().numpy() for t in (batch["image"][:, 0], target, pred))
            )
            for i in range(count)
        ]
        kind = "centre" if is_centre else "mask"
        self._save(trainer, overlay_row(pictures, kind))
        for logger in trainer.loggers:
            if isinstance(logger, pl.loggers.WandbLogger):
                logger.log_image(
                    "val/overlays",
                    pictures,
                    step=trainer.global_step,
                    caption=[legend_text(kind)] * count,
                )

    @staticmethod
    def _save(trainer: pl.Trainer, picture: np.ndarray) -> None:
        if not trainer.is_global_zero or trainer.default_root_dir is None:
            return
        path = Path(trainer.default_root_dir) / "val_overlays.png"
        with atomic_path(path) as tmp:
            cv2.imwrite(str(tmp), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
