"""Inference in one place: checkpoints -> preprocessing -> model -> native-size outputs.

``predict`` (new photographs), ``evaluate`` (a labelled dataset) and the training entry point
(native-resolution test metrics) all run a network through these functions, so a photograph is
preprocessed, batched and mapped back to its own pixels the same way everywhere:

- a checkpoint carries the preprocessing it was trained with; :func:`load_model` restores both;
- network inputs are uint8 (S, S) arrays, fed as (B, 1, S, S) floats in [0, 1] exactly as the
  training cache is (:func:`forward`);
- every network input is the photograph's *frame* (:mod:`locseg.data.frames`): the whole
  photograph stretched (the default) or the square around its field of view
  (``data.preprocess.crop_fov``); outputs go back through that frame. A segmenter's (S, S)
  probabilities are resized bilinearly (OpenCV's half-pixel convention) onto the frame, placed in
  the photograph and then thresholded (:func:`native_mask`); a localizer's normalised (u, v)
  become native pixels (:func:`centre_to_native`). For the whole-photograph frame both are
  exactly what they were before frames existed;
- post-processing (:class:`locseg.postprocess.PostProcess`): horizontal-flip TTA on the
  probabilities, then largest component and hole filling on the native mask, all off by
  default; :func:`choose_native_postprocess` decides them on validation images;
- a segmenter trained on disc-centred crops (``data.roi``; its checkpoint carries the crop side)
  sees the crop around the centre the *localizer predicts*, and its probabilities are pasted back
  into the photograph (:func:`locseg.roi.geometry.paste_back`), zero outside the crop: a missed
  centre costs Dice. It cannot run without a localizer.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytorch_lightning as pl
import torch

import locseg  # noqa: F401  (sets the no-network environment defaults first)
from locseg.data.dataset import DatasetError, FundusDataset, Sample, read_image, read_mask
from locseg.data.frames import Frame, from_frame, identity_frame, mask_from_frame
from locseg.data.preprocess import (
    PreprocessConfig,
    PreprocessedSet,
    native_center,
    preprocess_dataset,
    preprocess_framed,
)
from locseg.experiments.sweep import find_encoder
from locseg.metrics_native import dice, mask_scores, summarise_scores
from locseg.models.localizer import LocalizerModule
from locseg.models.losses import binary_dice, binary_iou
from locseg.models.segmenter import SegmenterModule
from locseg.postprocess import PostProcess, choose_switches, hflip_tta
from locseg.roi.datamodule import CHECKPOINT_ENTRY, CropSet, RoiSegmentationDataModule
from locseg.roi.geometry import Box, box_around, crop_input, paste_back
from locseg.roi.localization import LOCALIZER_ENTRY

ROLES = {"localizer": LocalizerModule, "segmenter": SegmenterModule}


class InferenceError(ValueError):
    """Bad checkpoints or options; the message names the file or value and the fix."""


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


# --------------------------------------------------------------------------- options


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


# --------------------------------------------------------------------------- checkpoints


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


# --------------------------------------------------------------------------- inputs


@dataclass
class Loaded:
    """One decoded photograph, its network input and frame for each preprocessing in use."""

    path: Path
    image: np.ndarray
    inputs: dict[PreprocessConfig, np.ndarray]
    frames: dict[PreprocessConfig, Frame]


def load_input(path: Path, configs: set[PreprocessConfig]) -> Loaded:
    image = read_image(path)
    framed = {config: preprocess_framed(image, config) for config in configs}
    inputs = {config: pixels for config, (pixels, _) in framed.items()}
    return Loaded(path, image, inputs, {config: frame for config, (_, frame) in framed.items()})


def first_sentence(message: str) -> str:
    """The reason without the dataset-folder advice that follows it."""
    return message.strip().split(". ")[0].removesuffix(".")


def load_batch(
    paths: Sequence[Path], configs: set[PreprocessConfig], skipped: dict[str, str]
) -> list[Loaded]:
    """Decode and preprocess what can be; record the rest in ``skipped`` with the reason."""
    loaded = []
    for path in paths:
        try:
            loaded.append(load_input(path, configs))
        except (DatasetError, cv2.error, ValueError) as error:
            skipped[path.name] = first_sentence(str(error).removeprefix(f"{path}: "))
    return loaded


def batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --------------------------------------------------------------------------- the network


def module_device(module: torch.nn.Module) -> torch.device:
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


@torch.inference_mode()
def forward(module: torch.nn.Module, inputs: np.ndarray, device: torch.device) -> np.ndarray:
    """uint8 (B, S, S) network inputs -> float32 outputs on the CPU.

    Localizer: (B, 2) normalised (u, v) centres; segmenter: (B, S, S) disc probabilities. Inputs
    are scaled to [0, 1] exactly as the training cache feeds them. The caller sets eval mode.
    """
    images = torch.from_numpy(np.ascontiguousarray(inputs)).to(device).unsqueeze(1)
    result = module(images.float().div_(255.0)).float().cpu().numpy()
    return result[:, 0] if result.ndim == 4 else result


def segment(
    module: torch.nn.Module, inputs: np.ndarray, device: torch.device, tta: bool = False
) -> np.ndarray:
    """A segmenter's (B, S, S) probabilities, averaged with the mirrored image's when ``tta``."""
    if not tta:
        return forward(module, inputs, device)
    return hflip_tta(lambda images: forward(module, images, device), inputs).astype(np.float32)


def centre_to_native(uv: np.ndarray, frame: Frame, size_wh) -> np.ndarray:
    """A localizer's normalised (u, v) in ``frame`` -> native (x, y) px.

    The whole-photograph frame keeps the arithmetic (and dtype) of
    :func:`locseg.data.preprocess.native_center` on ``size_wh`` as given, so ``crop_fov=false``
    results are bit for bit what they were before frames.
    """
    if frame.is_identity(size_wh):
        return native_center(uv, size_wh)
    return from_frame(uv, frame)


def whole_image_configs(models: Mapping[str, Model]) -> set[PreprocessConfig]:
    """Preprocessings of whole photographs the models need (a crop segmenter needs none)."""
    return {m.preprocess for m in models.values() if m.roi is None}


def run_models(
    models: Mapping[str, Model], batch: Sequence[Loaded], device: torch.device, tta: bool = False
) -> dict[str, np.ndarray]:
    """Role -> outputs on the CPU: localizer (B, 2) normalised centres, segmenter (B, S, S).

    ``<role>_frame`` (B, 4) holds each input's frame (x0, y0, width, height in native px), what
    :func:`to_native` maps the outputs back through. A crop segmenter runs on the crop around the
    localizer's centre; ``box`` (B, 3) then holds each crop's x0, y0, side in native px.
    ``tta`` averages the segmenter's probabilities with those of the mirrored input.
    """
    outputs = {}
    for role, model in sorted(models.items()):  # localizer before segmenter
        if model.roi is not None:
            loc = models["localizer"].preprocess
            boxes = [
                box_around(
                    centre_to_native(uv, item.frames[loc], item.image.shape[1::-1]),
                    model.roi_side,
                )
                for uv, item in zip(outputs["localizer"], batch, strict=True)
            ]
            pairs = zip(batch, boxes, strict=True)
            stack = np.stack([crop_input(item.image, box, model.preprocess) for item, box in pairs])
            outputs["box"] = np.array([box.as_list() for box in boxes], dtype=np.int64)
        else:
            stack = np.stack([item.inputs[model.preprocess] for item in batch])
            frames = [item.frames[model.preprocess].as_list() for item in batch]
            outputs[f"{role}_frame"] = np.array(frames, dtype=np.int64)
        if role == "segmenter":
            outputs[role] = segment(model.module, stack, device, tta)
        else:
            outputs[role] = forward(model.module, stack, device)
    return outputs


def predict_centres(
    localizer: torch.nn.Module, data: PreprocessedSet, ids: Sequence[str], batch_size: int = 16
) -> dict[str, tuple[float, float]]:
    """The localizer's centre of each image, in native px, from the cached network inputs.

    ``data`` must be preprocessed as the localizer was trained (``Model.preprocess``).
    """
    rows = rows_of(data, ids)
    device, was_training = module_device(localizer), localizer.training
    centres: dict[str, tuple[float, float]] = {}
    localizer.eval()
    try:
        for chunk in batches(list(zip(ids, rows, strict=True)), batch_size):
            index = [row for _, row in chunk]
            uv = forward(localizer, np.asarray(data.images[index]), device)
            for (image_id, row), point in zip(chunk, uv, strict=True):
                x, y = centre_to_native(point, data.frame(row), data.native_sizes[row])
                centres[image_id] = (float(x), float(y))
    finally:
        localizer.train(was_training)
    return centres


# --------------------------------------------------------------------------- native size


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


# --------------------------------------------------------------------------- labelled sets


def rows_of(data: PreprocessedSet, ids: Sequence[str]) -> list[int]:
    """Cache rows of ``ids``; an id missing from the cache is an error naming it."""
    index_of = data.index_of()
    missing = [i for i in ids if i not in index_of]
    if missing:
        raise InferenceError(
            f"{data.path}: no preprocessed row for image(s) {missing[:5]}; they are not labelled "
            "images of this dataset (a centre or a mask is needed)."
        )
    return [index_of[i] for i in ids]


def masked_samples(dataset: FundusDataset, ids: Sequence[str]) -> list[Sample]:
    """The samples of ``ids``; every one must have a mask file to be scored for segmentation."""
    by_id = dataset.by_id()
    unmasked = [i for i in ids if i not in by_id or by_id[i].mask_path is None]
    if unmasked:
        raise InferenceError(
            f"{dataset.root}: image(s) {unmasked[:5]} have no mask in masks/, so they cannot be "
            "scored for segmentation; evaluate masked images only."
        )
    return [by_id[i] for i in ids]


def native_predictions(
    model: torch.nn.Module,
    data: PreprocessedSet,
    dataset: FundusDataset,
    ids: Sequence[str],
    batch_size: int = 16,
    threshold: float = 0.5,
    mask_threshold: int | None = None,
    crops: CropSet | None = None,
    tta: bool = False,
) -> Iterator[tuple[str, np.ndarray, np.ndarray, float, float]]:
    """Per image of ``ids``: (id, native probabilities (H, W), true mask, input Dice, input IoU).

    The network sees the cached input (whole-photograph frame) or, with ``crops``, the image's
    crop; its probabilities go back through the frame or the crop's box
    (:func:`native_probability`). Input-size Dice/IoU compare them with the cached (or crop)
    mask at ``threshold``, as training's test step does. ``model`` is put in eval mode and
    restored afterwards.
    """
    check_options(batch_size, threshold)
    samples, rows = masked_samples(dataset, ids), rows_of(data, ids)
    if crops is None:
        inputs, masks, slots = data.images, data.masks, rows
    else:
        inputs, masks, slots = crops.images, crops.masks, crop_rows(crops, ids)
    device, was_training = module_device(model), model.training
    model.eval()
    try:
        for chunk in batches(list(zip(samples, rows, slots, strict=True)), batch_size):
            stack = np.stack([inputs[slot] for _, _, slot in chunk])
            probs = segment(model, stack, device, tta)
            cached = torch.from_numpy(np.stack([masks[slot] for _, _, slot in chunk]))
            prob_t = torch.from_numpy(probs)
            dice_in = binary_dice(prob_t, cached, threshold).tolist()
            iou_in = binary_iou(prob_t, cached, threshold).tolist()
            for k, (sample, row, slot) in enumerate(chunk):
                width, height = native_size(data, row)
                truth = read_mask(sample.mask_path, (height, width), mask_threshold)
                box = None if crops is None else crops.box(slot)
                native = native_probability(probs[k], (width, height), box, data.frame(row))
                yield sample.image_id, native, truth, dice_in[k], iou_in[k]
    finally:
        model.train(was_training)


def segmentation_scores(
    model: torch.nn.Module,
    data: PreprocessedSet,
    dataset: FundusDataset,
    ids: Sequence[str],
    posts: Sequence[PostProcess],
    batch_size: int = 16,
    threshold: float = 0.5,
    mask_threshold: int | None = None,
    crops: CropSet | None = None,
) -> dict[PostProcess, dict[str, dict[str, float]]]:
    """Per switch set of ``posts`` and per image: native ``dice``, ``iou``, ``hd95_px`` and
    input-size ``dice_input``/``iou_input``.

    Native scores compare the probabilities, mapped back as :func:`native_mask` does (through the
    image's frame, ``data.frame(row)``), with the original mask file; input-size scores compare
    them with the cached mask, as training's test step does. With ``crops`` (a segmenter trained
    on ``data.roi``) the network sees each image's crop, input-size scores use the crop's mask,
    and the probabilities are pasted back into the photograph from the crop's box. A switch set's
    flip TTA changes the probabilities (both scores); its clean-ups change the native mask. One
    forward pass per TTA setting serves every switch set that shares it.
    """
    results: dict[PostProcess, dict[str, dict[str, float]]] = {post: {} for post in posts}
    for tta in sorted({post.tta for post in posts}):
        sharing = [post for post in results if post.tta == tta]
        for image_id, native, truth, dice_in, iou_in in native_predictions(
            model, data, dataset, ids, batch_size, threshold, mask_threshold, crops, tta
        ):
            mask = native > threshold
            for post in sharing:
                scores = mask_scores(post.apply(mask), truth)
                results[post][image_id] = {**scores, "dice_input": dice_in, "iou_input": iou_in}
    return results


def segmentation_per_image(
    model: torch.nn.Module,
    data: PreprocessedSet,
    dataset: FundusDataset,
    ids: Sequence[str],
    batch_size: int = 16,
    threshold: float = 0.5,
    mask_threshold: int | None = None,
    crops: CropSet | None = None,
    post: PostProcess | None = None,
) -> dict[str, dict[str, float]]:
    """:func:`segmentation_scores` of one switch set (none by default)."""
    post = post or PostProcess()
    return segmentation_scores(
        model, data, dataset, ids, [post], batch_size, threshold, mask_threshold, crops
    )[post]


def postprocess_table(
    model: torch.nn.Module,
    data: PreprocessedSet,
    dataset: FundusDataset,
    ids: Sequence[str],
    batch_size: int = 16,
    threshold: float = 0.5,
    mask_threshold: int | None = None,
    crops: CropSet | None = None,
) -> dict[str, dict[PostProcess, float]]:
    """Native Dice of every image under all eight combinations of the three switches."""
    table: dict[str, dict[PostProcess, float]] = {}
    for tta in (False, True):
        for image_id, native, truth, _, _ in native_predictions(
            model, data, dataset, ids, batch_size, threshold, mask_threshold, crops, tta
        ):
            mask = native > threshold
            for largest in (False, True):
                for fill in (False, True):
                    post = PostProcess(largest, fill, tta)
                    table.setdefault(image_id, {})[post] = dice(post.apply(mask), truth)
    return table


def choose_native_postprocess(
    model: torch.nn.Module,
    data: PreprocessedSet,
    dataset: FundusDataset,
    ids: Sequence[str],
    batch_size: int = 16,
    threshold: float = 0.5,
    mask_threshold: int | None = None,
    crops: CropSet | None = None,
    fixed: Mapping[str, bool] | None = None,
) -> tuple[PostProcess, dict]:
    """The switches to use, chosen on native Dice of *validation* images ``ids`` (never test).

    TTA, then largest component, then hole filling: each kept when
    :func:`locseg.postprocess.choose_postprocessing` says so given the ones already kept; a
    switch in ``fixed`` is set as given. Returns the switches and a record for metrics.json
    (each step with its mean validation Dice without and with the switch).
    """
    table = postprocess_table(
        model, data, dataset, ids, batch_size, threshold, mask_threshold, crops
    )
    chosen, steps = choose_switches(table, fixed)
    record = {
        **chosen.as_dict(),
        "n_val": len(table),
        "val_dice_native": float(np.mean([t[PostProcess()] for t in table.values()])),
        "val_dice_native_post": float(np.mean([t[chosen] for t in table.values()])),
        "steps": steps,
    }
    return chosen, record


def crop_rows(crops: CropSet, ids: Sequence[str]) -> list[int]:
    """Rows of ``ids`` in a crop set; an id without a crop is an error naming it."""
    index_of = crops.index_of()
    missing = [i for i in ids if i not in index_of]
    if missing:
        raise InferenceError(f"{crops.path}: no crop for image(s) {missing[:5]}")
    return [index_of[i] for i in ids]


def native_segmentation_metrics(
    model: SegmenterModule,
    data: PreprocessedSet,
    dataset: FundusDataset,
    ids: list[str],
    batch_size: int = 16,
    threshold: float = 0.5,
    mask_threshold: int | None = None,
    crops: CropSet | None = None,
    post: PostProcess | None = None,
) -> dict:
    """Dice, IoU and HD95 of a segmenter on the photographs' own pixels, for images ``ids``.

    A segmenter trained on disc-centred crops is given its test ``crops`` (cut around the
    localizer's predicted centres): its probabilities are pasted back into the photograph.

    Returns ``{"dice_native", "iou_native", "hd95_native_px", "hd95_undefined", "n_images",
    "per_image": {id: {"dice", "iou", "hd95_px"}}}``. ``hd95_native_px`` averages the finite
    values only; ``hd95_undefined`` counts the images whose prediction is empty (HD95 NaN, see
    :mod:`locseg.metrics_native`). Runs on the model's device, without autograd.
    """
    post = post or PostProcess()
    return native_metrics_by_post(
        model, data, dataset, ids, [post], batch_size, threshold, mask_threshold, crops
    )[post]


def native_metrics_by_post(
    model: SegmenterModule,
    data: PreprocessedSet,
    dataset: FundusDataset,
    ids: list[str],
    posts: Sequence[PostProcess],
    batch_size: int = 16,
    threshold: float = 0.5,
    mask_threshold: int | None = None,
    crops: CropSet | None = None,
) -> dict[PostProcess, dict]:
    """:func:`native_segmentation_metrics` for several switch sets from shared forward passes."""
    scores = segmentation_scores(
        model, data, dataset, ids, posts, batch_size, threshold, mask_threshold, crops
    )
    native = ("dice", "iou", "hd95_px")
    return {
        post: summarise_scores({i: {k: s[k] for k in native} for i, s in per_image.items()})
        for post, per_image in scores.items()
    }
