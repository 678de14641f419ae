"""Network outputs back on the photograph's own pixels: through its frame or the crop's box."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from locseg.data.frames import Frame, from_frame, identity_frame, mask_from_frame
from locseg.data.preprocess import PreprocessedSet, native_center
from locseg.inference.postprocess import PostProcess
from locseg.roi.geometry import Box, paste_back


def centre_to_native(uv: np.ndarray, frame: Frame, size_wh) -> np.ndarray:
    """A localizer's normalised (u, v) in ``frame`` -> native (x, y) px.

    The whole-photograph frame keeps the arithmetic (and dtype) of
    :func:`locseg.data.preprocess.native_center` on ``size_wh`` as given, so ``crop_fov=false``
    results are bit for bit what they were before frames.
    """
    if frame.is_identity(size_wh):
        return native_center(uv, size_wh)
    return from_frame(uv, frame)


def native_size(data: PreprocessedSet, row: int) -> tuple[int, int]:
    width, height = (int(v) for v in data.native_sizes[row])
    return width, height


def native_probability(
    prob: np.ndarray,
    size_wh: tuple[int, int],
    box: Box | None = None,
    frame: Frame | None = None,
) -> np.ndarray:
    """(S, S) probabilities -> float32 (H, W) on the photograph's pixels.

    With ``box`` they are a crop's, pasted back; else the network saw ``frame`` (None: the
    whole photograph, stretched), and they go back through it (zero outside it).
    """
    if box is not None:
        return paste_back(prob, box, size_wh)
    frame = frame if frame is not None else identity_frame(size_wh)
    return mask_from_frame(prob, frame, size_wh)


def native_mask(
    prob: np.ndarray,
    size_wh: tuple[int, int],
    threshold: float,
    box: Box | None = None,
    frame: Frame | None = None,
    post: PostProcess | None = None,
) -> np.ndarray:
    """(S, S) probabilities -> bool (H, W): back to the native pixels, threshold, clean up.

    :func:`native_probability` maps them back (crop ``box`` or ``frame``); ``post`` applies the
    largest-component and hole-filling switches to the thresholded mask.
    """
    mask = native_probability(prob, size_wh, box, frame) > threshold
    return mask if post is None else post.apply(mask)


@dataclass
class NativeOutput:
    """One photograph's results in its own pixels; ``None`` where no model of that role ran."""

    center: np.ndarray | None  # (x, y) native px from the localizer
    mask: np.ndarray | None  # bool (H, W) from the segmenter
    box: Box | None = None  # the crop the segmenter saw (data.roi), in native px


def to_native(
    outputs: Mapping[str, np.ndarray],
    size_wh: tuple[int, int],
    threshold: float,
    post: PostProcess | None = None,
) -> NativeOutput:
    """Per-image network outputs (role -> array) -> centre and mask at the native (W, H).

    Each output goes back through its ``<role>_frame`` (the whole photograph when absent).
    """
    loc, prob, box = outputs.get("localizer"), outputs.get("segmenter"), outputs.get("box")
    frames = {
        role: Frame.from_list(outputs[f"{role}_frame"]) if f"{role}_frame" in outputs else None
        for role in ("localizer", "segmenter")
    }
    center = None
    if loc is not None:
        center = centre_to_native(loc, frames["localizer"] or identity_frame(size_wh), size_wh)
    box = None if box is None else Box(*(int(v) for v in box))
    mask = None
    if prob is not None:
        mask = native_mask(prob, size_wh, threshold, box, frames["segmenter"], post)
    return NativeOutput(center, mask, box)


def native_centres(uv: np.ndarray, frames: Sequence, sizes: np.ndarray) -> list[np.ndarray]:
    """(B, 2) normalised centres, each in its frame -> native (x, y) px."""
    return [centre_to_native(p, f, s) for p, f, s in zip(uv, frames, sizes, strict=True)]
