"""Photographs to network inputs, in batches, and the networks run on them.

Network inputs are uint8 (S, S) arrays, fed as (B, 1, S, S) floats in [0, 1] exactly as the
training cache is (:func:`forward`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from locseg.data.dataset import DatasetError, read_image
from locseg.data.frames import Frame
from locseg.data.preprocess import PreprocessConfig, PreprocessedSet, preprocess_framed
from locseg.inference.checkpoints import Model
from locseg.inference.native import centre_to_native
from locseg.inference.options import InferenceError
from locseg.inference.postprocess import hflip_tta
from locseg.roi.geometry import box_around, crop_input


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
