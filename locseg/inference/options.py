"""What every inference command shares: the error type, the device and the run options."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch

from locseg.inference.postprocess import PostProcess


class InferenceError(ValueError):
    """Bad checkpoints or options; the message names the file or value and the fix."""


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when there is one; asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise InferenceError(f"device={name!r} is not one of auto, cpu, cuda (or cuda:N)")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InferenceError(f"device={name} but CUDA is not available here; use device=cpu")
    return torch.device(name)


def check_options(batch_size: int, threshold: float) -> None:
    if batch_size < 1:
        raise InferenceError(f"batch_size={batch_size} must be at least 1")
    if not 0.0 <= threshold <= 1.0:
        raise InferenceError(f"threshold={threshold} must lie in [0, 1] (it cuts a probability)")


@dataclass(frozen=True)
class InferenceOptions:
    """How ``locseg.evaluate`` and ``locseg.predict`` run a network, checked when made.

    ``batch_size`` images per forward pass, on ``device`` (``auto``: CUDA when there is one);
    ``threshold`` cuts the segmenter's probabilities after they are mapped back to native size;
    ``post``: its flip TTA and mask clean-ups (all off by default).
    """

    batch_size: int = 16
    device: str = "auto"
    threshold: float = 0.5
    post: PostProcess = PostProcess()

    def __post_init__(self) -> None:
        check_options(self.batch_size, self.threshold)

    def with_post(self, post: Mapping | PostProcess | None) -> InferenceOptions:
        """These options with the switches ``post`` (a PostProcess, or ``{largest, fill, tta}``)."""
        if not isinstance(post, PostProcess):
            post = PostProcess.from_options(post)
        return replace(self, post=post)

    def target(self) -> torch.device:
        """The torch device to run on (:func:`resolve_device`)."""
        return resolve_device(self.device)
