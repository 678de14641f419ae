"""Checkpoints: read one, tell its role, restore its preprocessing and crop, check a pair."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch

from locseg.data.preprocess import PreprocessConfig
from locseg.inference.options import InferenceError
from locseg.models.localizer import LocalizerModule
from locseg.models.segmenter import SegmenterModule
from locseg.roi.datamodule import CHECKPOINT_ENTRY
from locseg.roi.localization import LOCALIZER_ENTRY

ROLES = {"localizer": LocalizerModule, "segmenter": SegmenterModule}


@dataclass
class Model:
    """A loaded network and the preprocessing it was trained with."""

    role: str
    module: pl.LightningModule
    preprocess: PreprocessConfig
    path: Path
    roi: dict | None = None  # a segmenter trained on crops: side_px, crop_size, the spec

    @property
    def roi_side(self) -> int | None:
        """The crop side in native px, or None for a whole-photograph model."""
        return None if self.roi is None else int(self.roi["side_px"])


def checkpoint_paths(ckpt: str | Path | Sequence[str | Path]) -> list[Path]:
    """One path or a list of them -> Paths (``~`` expanded)."""
    paths = [ckpt] if isinstance(ckpt, str | Path) else list(ckpt)
    if not paths:
        raise InferenceError("ckpt=[] names no checkpoint; give ckpt=PATH or ckpt=[LOC,SEG]")
    return [Path(str(p)).expanduser() for p in paths]


def read_checkpoint(path: Path) -> dict:
    """A Lightning checkpoint's dict (weights only); errors name the file."""
    if not path.is_file():
        raise InferenceError(
            f"{path}: checkpoint not found. Training writes RUN/checkpoints/best.ckpt "
            "and last.ckpt; pass one of those."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged or foreign file
        raise InferenceError(f"{path}: cannot read this checkpoint ({error})") from None
    return checkpoint if isinstance(checkpoint, dict) else {}


def read_hparams(path: Path, checkpoint: Mapping | None = None) -> dict:
    """The hyper-parameters saved in a Lightning checkpoint; errors name the file."""
    checkpoint = read_checkpoint(path) if checkpoint is None else checkpoint
    hparams = checkpoint.get("hyper_parameters")
    if not hparams:
        raise InferenceError(
            f"{path}: not a locseg Lightning checkpoint (no saved hyper-parameters); an "
            "encoder.pt is not enough. Pass RUN/checkpoints/best.ckpt of a training run."
        )
    return dict(hparams)


def stored_roi(checkpoint: Mapping, entry: str = CHECKPOINT_ENTRY) -> dict | None:
    """The crop region a segmenter trained on, saved by the ROI DataModule's state_dict (or,
    with ``entry=LOCALIZER_ENTRY``, the crops a crop-scale localizer trained on)."""
    for value in checkpoint.values():
        if isinstance(value, Mapping) and isinstance(value.get(entry), Mapping):
            return dict(value[entry])
    return None


WHOLE_LOCALIZER = (
    "RUN/checkpoints/best.ckpt of a whole-photograph localizer (a localize run without "
    "roi.localizer_crops, e.g. SWEEP/localize/shared/checkpoints/best.ckpt)"
)


CROP_LOCALIZER_FIX = f"give {WHOLE_LOCALIZER}"


def refuse_crop_localizer(path: Path, checkpoint: Mapping, fix: str = CROP_LOCALIZER_FIX) -> None:
    """A crop-scale localizer (``roi.localizer_crops``) cannot find a disc in a photograph."""
    crops = stored_roi(checkpoint, LOCALIZER_ENTRY)
    if crops is not None:
        raise InferenceError(
            f"{path}: a crop-scale localizer (roi.localizer_crops=true, trained on "
            f"{crops.get('side_px')}-native-px windows around the disc): its encoder is for "
            f"the segmenter, but it cannot place a disc in a whole photograph; {fix}"
        )


def checkpoint_role(hparams: Mapping) -> str:
    """The segmenter saves ``init``/``freeze_encoder``; the localizer does not."""
    return "segmenter" if {"init", "freeze_encoder"} & set(hparams) else "localizer"


def stored_preprocess(path: Path, hparams: Mapping) -> PreprocessConfig:
    """The preprocessing the model was trained with, checked against its input size."""
    size = int(hparams.get("input_size") or PreprocessConfig.image_size)
    try:
        config = PreprocessConfig(**(hparams.get("preprocess") or {"image_size": size}))
    except TypeError as error:
        raise InferenceError(f"{path}: unknown preprocessing parameters ({error})") from None
    if config.image_size != size:
        raise InferenceError(
            f"{path}: preprocess.image_size={config.image_size} but input_size={size}; "
            "this checkpoint is inconsistent, retrain it."
        )
    return config


def load_model(path: Path, device: torch.device) -> Model:
    """Load one checkpoint on ``device`` in eval mode.

    A segmenter initialised from a localizer is rebuilt as ``init=scratch``: its weights come from
    the checkpoint, so the original encoder.pt need not exist any more.
    """
    path = Path(path).expanduser()
    checkpoint = read_checkpoint(path)
    hparams = read_hparams(path, checkpoint)
    role = checkpoint_role(hparams)
    overrides = {"init": "scratch", "encoder_ckpt": None} if role == "segmenter" else {}
    try:
        module = ROLES[role].load_from_checkpoint(
            path, map_location=device, weights_only=True, **overrides
        )
    except Exception as error:
        raise InferenceError(f"{path}: cannot load this {role} checkpoint ({error})") from None
    if role == "localizer":
        refuse_crop_localizer(path, checkpoint)
    roi = stored_roi(checkpoint) if role == "segmenter" else None
    return Model(role, module.to(device).eval(), stored_preprocess(path, hparams), path, roi)


def load_models(paths: Sequence[Path], device: torch.device) -> dict[str, Model]:
    """At most one localizer and one segmenter, keyed by role."""
    models: dict[str, Model] = {}
    for path in paths:
        model = load_model(path, device)
        if model.role in models:
            raise InferenceError(
                f"{path} and {models[model.role].path} are both {model.role}s; "
                "give at most one localizer and one segmenter"
            )
        models[model.role] = model
    check_roi_pair(models)
    return models


def check_roi_pair(models: Mapping[str, Model]) -> None:
    """A segmenter trained on crops needs the localizer that places them."""
    segmenter = models.get("segmenter")
    if segmenter is not None and segmenter.roi is not None and "localizer" not in models:
        raise InferenceError(
            f"{segmenter.path}: this segmenter was trained on disc-centred crops (data.roi, "
            f"{segmenter.roi_side} native px), so it needs a localizer to place them: pass "
            "ckpt=[LOCALIZER.ckpt,SEGMENTER.ckpt] (the localize run's checkpoints/best.ckpt)"
        )


def load_localizer(loc_ckpt: str | Path | None, device: torch.device) -> Model | None:
    if not loc_ckpt:
        return None
    model = load_model(Path(loc_ckpt).expanduser(), device)
    if model.role != "localizer":
        raise InferenceError(
            f"loc_ckpt={loc_ckpt} is a {model.role}'s checkpoint, not a localizer's"
        )
    return model
