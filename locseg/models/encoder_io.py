"""The hand-off between the phases: ``encoder.pt`` written by the localizer, read by the segmenter.

The file is a plain dict of tensors and Python primitives, so it loads with
``torch.load(weights_only=True)`` (no pickled code runs). Besides the weights it records what the
segmenter must match: the architecture, the input size and the preprocessing, because an encoder
only transfers to images prepared the way it saw them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from locseg import __version__
from locseg.io import atomic_path

FORMAT = "locseg-encoder/1"
HOW_TO_MAKE = (
    "make it with `python -m locseg.train +phase=localize data.root=DIR hydra.run.dir=RUN` "
    "(it writes RUN/encoder.pt)"
)


class EncoderCheckpointError(ValueError):
    """An encoder checkpoint is missing, not ours, or does not fit the model asking for it."""


def plain(value: Any) -> Any:
    """Mappings -> dict, sequences -> list, primitives kept: safe for ``weights_only`` and ``==``.

    Accepts OmegaConf containers too (they are Mapping / Sequence) without importing OmegaConf.
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Sequence):
        return [plain(v) for v in value]
    raise TypeError(
        f"cannot store {type(value).__name__} ({value!r}) in encoder.pt: "
        "use numbers, strings, lists and dicts"
    )


def save_encoder(
    path: str | os.PathLike,
    encoder: nn.Module,
    input_size: int,
    preprocess: Mapping | None,
    extra: Mapping | None = None,
) -> Path:
    """Write the encoder's weights (BN running stats included) and its compatibility record.

    Refuses weights that are not finite: a training that diverged on its last step passes the
    loss guard (the loss was finite before the update), and its encoder must not be handed on.
    """
    state = {
        k: v.detach().to("cpu", copy=True).contiguous() for k, v in encoder.state_dict().items()
    }
    broken = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise EncoderCheckpointError(
            f"{path}: not written: the encoder's {', '.join(broken[:3])}"
            f"{' ...' if len(broken) > 3 else ''} hold NaN/inf (training diverged); lower "
            "lr.localize or set model.scheduler=cosine model.warmup_steps=100"
        )
    payload = {
        "format": FORMAT,
        "state_dict": state,
        "arch": plain(encoder.arch),
        "widths": list(encoder.widths),
        "input_size": int(input_size),
        "preprocess": plain(preprocess) or {},
        "extra": plain(extra) or {},
        "locseg_version": __version__,
        "torch_version": str(torch.__version__),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_encoder_checkpoint(path: str | os.PathLike) -> dict:
    """Read ``encoder.pt`` safely; every failure is an :class:`EncoderCheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise EncoderCheckpointError(f"encoder checkpoint not found: {path}; {HOW_TO_MAKE}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors vary by torch version and file content
        raise EncoderCheckpointError(
            f"{path} is not a locseg encoder file (torch.load failed: {exc}); {HOW_TO_MAKE}"
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        hint = ""
        if isinstance(ckpt, dict) and "pytorch-lightning_version" in ckpt:
            hint = " It is a Lightning training checkpoint; pass the run's encoder.pt instead."
        raise EncoderCheckpointError(
            f"{path} is not a locseg encoder file (expected format {FORMAT!r}).{hint} {HOW_TO_MAKE}"
        )
    ckpt["path"] = str(path)
    return ckpt


def _arch_mismatch(
    ckpt: Mapping, encoder: nn.Module, name: str, ckpt_shape: Any, model_shape: Any
) -> EncoderCheckpointError:
    where = ckpt.get("path", "the encoder checkpoint")
    return EncoderCheckpointError(
        f"encoder checkpoint {where} does not fit this model.\n"
        f"  checkpoint architecture: {ckpt.get('arch')}\n"
        f"  model architecture:      {encoder.arch}\n"
        f"  first mismatch: tensor {name!r}: checkpoint {ckpt_shape}, model {model_shape}\n"
        "Set net.depth / net.base_width (and net.in_channels) to the checkpoint's values, "
        "or retrain the localizer with the architecture you want."
    )


def check_architecture(encoder: nn.Module, ckpt: Mapping) -> None:
    """Same tensor names and shapes, or an error showing both architectures and the first clash."""
    theirs = ckpt["state_dict"]
    ours = encoder.state_dict()
    for name, tensor in ours.items():
        if name not in theirs:
            raise _arch_mismatch(ckpt, encoder, name, "missing", tuple(tensor.shape))
        if tuple(theirs[name].shape) != tuple(tensor.shape):
            raise _arch_mismatch(
                ckpt, encoder, name, tuple(theirs[name].shape), tuple(tensor.shape)
            )
    for name, tensor in theirs.items():
        if name not in ours:
            raise _arch_mismatch(ckpt, encoder, name, tuple(tensor.shape), "missing")


def check_inputs(ckpt: Mapping, input_size: int | None, preprocess: Mapping | None) -> None:
    """The segmenter must see images as the encoder did: same size, same preprocessing."""
    where = ckpt.get("path", "the encoder checkpoint")
    if input_size is not None and int(ckpt["input_size"]) != int(input_size):
        raise EncoderCheckpointError(
            f"input size mismatch: encoder {where} was trained on {ckpt['input_size']} px images, "
            f"this model is set to {input_size} px; set data.image_size={ckpt['input_size']} "
            "or retrain the localizer at the new size"
        )
    if preprocess is not None and plain(preprocess) != plain(ckpt["preprocess"]):
        raise EncoderCheckpointError(
            f"preprocessing mismatch: encoder {where} was trained with {ckpt['preprocess']}, "
            f"this model is set to {plain(preprocess)}; use the encoder's preprocessing "
            "or retrain the localizer with the new one"
        )


def load_into(
    encoder: nn.Module,
    ckpt: Mapping,
    input_size: int | None = None,
    preprocess: Mapping | None = None,
) -> nn.Module:
    """Check compatibility, then copy the checkpoint's weights and buffers into ``encoder``.

    ``input_size`` / ``preprocess`` left as None are not checked; pass ``{}`` to require that the
    encoder was trained without preprocessing options.
    """
    check_architecture(encoder, ckpt)
    check_inputs(ckpt, input_size, preprocess)
    encoder.load_state_dict(ckpt["state_dict"], strict=True)
    return encoder
