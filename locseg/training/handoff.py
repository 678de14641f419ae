"""The hand-offs between phases: which localizer a segment job may use, checked for leakage.

A localizer hands on its encoder (``encoder.pt``, loaded by the localizer arms) and, with
``roi``, its predicted centres (where every arm's test crops go). Both are refused when the
localizer may have trained on the job's test images, and both join the job's identity by their
bytes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from omegaconf import DictConfig

from locseg.experiments.sweep import ENCODER_FILE, find_encoder
from locseg.inference.options import InferenceError
from locseg.models.encoder_io import (
    EncoderCheckpointError,
    load_encoder_checkpoint,
    save_encoder,
)
from locseg.roi.centres import roi_localizer_path, roi_test_centres

ROI_DATAMODULE = "locseg.roi.datamodule.RoiSegmentationDataModule"
ROI_LOCALIZATION = "locseg.roi.localization.RoiLocalizationDataModule"


def hand_on_encoder(path: Path, model, datamodule, cfg: DictConfig) -> Path:
    """Write a localizer's ``encoder.pt`` with the identity of the images it never saw."""
    extra = {
        "per_fold": datamodule.per_fold,
        "fold": int(cfg.data.fold),
        "dataset": cfg.data.name,
        "excluded_hash": datamodule.excluded_hash,
        **datamodule.encoder_facts(),  # e.g. the crops a crop-scale localizer's encoder has seen
    }
    hparams = model.hparams
    return save_encoder(path, model.encoder, hparams.input_size, hparams.preprocess, extra)


def resolve_encoder(cfg: DictConfig, datamodule) -> Path:
    """The encoder checkpoint of a localizer-initialised segment job, checked for leakage."""
    path = Path(cfg.model.encoder_ckpt or find_encoder(cfg.sweep_dir, cfg.data.fold))
    check_encoder_scope(path, cfg, datamodule)
    return path


def check_encoder_scope(path: Path, cfg: DictConfig, datamodule) -> None:
    """Refuse a localizer's ``encoder.pt`` that may have trained on this fold's test images.

    A localizer records the hash of the images it promised never to train on: the fold's test
    images (per-fold localizer) or every masked image (one shared localizer). The job recomputes
    the hash from its own folds, so an encoder of another fold, dataset or split is refused.
    """
    extra = load_encoder_checkpoint(path).get("extra") or {}
    per_fold = bool(extra.get("per_fold"))
    expected = datamodule.fold_test_hash() if per_fold else datamodule.masked_hash()
    if extra.get("excluded_hash") != expected:
        scope = f"fold {extra.get('fold')}'s test images" if per_fold else "every masked image"
        raise EncoderCheckpointError(
            f"{path}: this localizer was trained for {extra.get('dataset')!r} excluding {scope} "
            f"(hash {extra.get('excluded_hash')}), which is not what data.fold="
            f"{cfg.data.fold} of {cfg.data.name!r} needs ({expected}): it may have seen this "
            f"fold's test images. Train the localizer on these folds (data.fold="
            f"{cfg.data.fold}, same data.num_folds / data.split_seed) and use its encoder."
        )


def roi_overrides(cfg: DictConfig) -> dict:
    """``roi=disc`` turns a segment job's DataModule into the crop one (data.image_size = crop);
    ``roi.localizer_crops=true`` a localize job's into the crop-scale localizer's."""
    roi = cfg.get("roi")
    if not roi:
        return {}
    if cfg.phase == "segment":
        return {"_target_": ROI_DATAMODULE, "roi": roi}
    if cfg.phase == "localize" and roi.get("localizer_crops"):
        return {"_target_": ROI_LOCALIZATION, "roi": roi}
    return {}


def set_roi_test_centres(cfg: DictConfig, datamodule) -> Path | None:
    """Test crops go around the centres the localizer predicts (never the true ones).

    The localizer is ``roi.localizer_ckpt`` or the localize run beside the encoder in use; its
    ``encoder.pt`` must pass the same leakage check as a localizer arm's encoder. Returns its
    checkpoint (None when the test crops do not come from a localizer).
    """
    if datamodule.centre_source != "predicted":
        return None
    path = roi_localizer_path(
        datamodule.localizer_ckpt, cfg.model.get("encoder_ckpt"), cfg.sweep_dir, cfg.data.fold
    )
    encoder = path.parent.parent / ENCODER_FILE
    if not encoder.is_file():
        raise InferenceError(
            f"{encoder}: not found beside the localizer checkpoint {path}, so its training "
            "images cannot be checked; give roi.localizer_ckpt=RUN/checkpoints/best.ckpt of a "
            "localize run (it writes RUN/encoder.pt)"
        )
    check_encoder_scope(encoder, cfg, datamodule)
    datamodule.set_test_centres(roi_test_centres(datamodule, path))
    return path


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
