"""Where a crop segmenter's test crops come from: the localizer's predicted centres.

The true centres (``roi.test_centres=true``, ``roi_centres=true``) are an oracle bound only;
every reported result crops around the centre a whole-photograph localizer predicts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from locseg.data.dataset import FundusDataset
from locseg.data.preprocess import PreprocessedSet, preprocess_dataset
from locseg.experiments.sweep import find_encoder
from locseg.inference.batches import predict_centres
from locseg.inference.checkpoints import (
    WHOLE_LOCALIZER,
    Model,
    load_model,
    read_checkpoint,
    refuse_crop_localizer,
)
from locseg.inference.options import InferenceError, resolve_device
from locseg.roi.datamodule import CropSet, RoiSegmentationDataModule, build_crops, true_centres
from locseg.roi.geometry import box_around


def roi_localizer_path(
    localizer_ckpt: str | Path | None,
    encoder_ckpt: str | Path | None,
    sweep_dir: str | Path | None,
    fold: int,
) -> Path:
    """The localizer checkpoint that places a crop segmenter's test crops.

    ``roi.localizer_ckpt`` when given; else ``checkpoints/best.ckpt`` of the localize run whose
    ``encoder.pt`` the job uses (``model.encoder_ckpt``, or the sweep's for this fold). A
    crop-scale localizer (``roi.localizer_crops``) is refused: it cannot search a photograph.
    """
    encoder = None
    if localizer_ckpt:
        path = Path(str(localizer_ckpt)).expanduser()
    else:
        try:
            encoder = Path(str(encoder_ckpt)) if encoder_ckpt else find_encoder(sweep_dir, fold)
        except FileNotFoundError as error:
            raise InferenceError(
                "data.roi with test_centres=predicted needs the localizer that places the test "
                "crops: set roi.localizer_ckpt=LOCALIZE_RUN/checkpoints/best.ckpt, or "
                f"sweep_dir=SWEEP with a localize run ({error})"
            ) from None
        path = encoder.expanduser().parent / "checkpoints" / "best.ckpt"
    if not path.is_file():
        raise InferenceError(
            f"{path}: localizer checkpoint not found; train it first (python -m locseg.train "
            "+phase=localize ...) or set roi.localizer_ckpt=PATH"
        )
    fix = f"set roi.localizer_ckpt={WHOLE_LOCALIZER}"
    if encoder is not None:
        fix = (
            f"it was found beside the encoder in use ({encoder}): when model.encoder_ckpt is a "
            f"crop localizer's encoder.pt, {fix}"
        )
    refuse_crop_localizer(path, read_checkpoint(path), fix)
    return path


def roi_test_centres(
    datamodule: RoiSegmentationDataModule, localizer_ckpt: Path, device: str = "cpu"
) -> dict[str, tuple[float, float]]:
    """The localizer's centres (native px) of the DataModule's test images.

    The photographs are preprocessed as the localizer was trained (its own cache entry), not as
    the segmenter's data, so a 64-px whole-image localizer serves 128-px crops.
    """
    model = load_model(localizer_ckpt, resolve_device(device))
    if model.role != "localizer":
        raise InferenceError(f"{localizer_ckpt}: a {model.role} checkpoint; give a localizer's")
    data = preprocess_dataset(
        datamodule.dataset, model.preprocess, datamodule.cache_dir, datamodule.mask_threshold
    )
    ids = datamodule.selection["test"]
    return predict_centres(model.module, data, ids, datamodule.batch_size)


def roi_crops(
    model: Model,
    localizer: Model | None,
    dataset: FundusDataset,
    data: PreprocessedSet,
    ids: Sequence[str],
    centres_from: str,
    cache_dir: Path,
    mask_threshold: int | None,
    batch_size: int,
) -> tuple[CropSet, dict[str, float]]:
    """A crop segmenter's inputs: crops around the localizer's (or the true) centres.

    Returns the crops and, per image, the distance in native px from the crop's centre to the
    true centre (0 for ``centres_from=true``).
    """
    truth = true_centres(data, ids)
    if centres_from == "true":
        centres = truth
    else:
        if localizer is None:
            raise InferenceError(
                f"{model.path}: this segmenter was trained on disc-centred crops (data.roi, "
                f"{model.roi_side} native px); give the localizer that places them: "
                "loc_ckpt=LOCALIZE_RUN/checkpoints/best.ckpt (or roi_centres=true for the "
                "oracle bound)"
            )
        loc_data = preprocess_dataset(dataset, localizer.preprocess, cache_dir, mask_threshold)
        centres = predict_centres(localizer.module, loc_data, ids, batch_size)
    boxes = {i: box_around(centres[i], model.roi_side) for i in ids}
    crops = build_crops(dataset, data, ids, boxes, model.preprocess, cache_dir, mask_threshold)
    return crops, {i: math.dist(centres[i], truth[i]) for i in ids}
