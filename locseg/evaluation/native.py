"""A segmenter scored on the photographs' own pixels, over a labelled, cached image set.

The network sees each image's cached input (its frame) or, for a crop segmenter, its crop; the
probabilities go back to the photograph (:mod:`locseg.inference.native`) and are compared with
the original mask files (:mod:`locseg.evaluation.metrics`). Post-processing is chosen here on
validation images (:func:`choose_native_postprocess`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from locseg.data.dataset import FundusDataset, Sample, read_mask
from locseg.data.preprocess import PreprocessedSet
from locseg.evaluation.metrics import dice, mask_scores, summarise_scores
from locseg.evaluation.postprocess import choose_switches
from locseg.inference.batches import batches, module_device, rows_of, segment
from locseg.inference.native import native_probability, native_size
from locseg.inference.options import InferenceError, check_options
from locseg.inference.postprocess import PostProcess
from locseg.models.losses import binary_dice, binary_iou
from locseg.roi.datamodule import CropSet


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


def crop_rows(crops: CropSet, ids: Sequence[str]) -> list[int]:
    """Rows of ``ids`` in a crop set; an id without a crop is an error naming it."""
    index_of = crops.index_of()
    missing = [i for i in ids if i not in index_of]
    if missing:
        raise InferenceError(f"{crops.path}: no crop for image(s) {missing[:5]}")
    return [index_of[i] for i in ids]


@dataclass
class LabelledSet:
    """A segmenter and the labelled images it is scored on: what every function here takes.

    ``data`` is the cache preprocessed as the model was trained; ``ids`` the images to score
    (each needs a mask file). With ``crops`` (a segmenter trained on ``data.roi``) the network
    sees each image's crop instead of its cached input. ``threshold`` cuts the probabilities;
    ``mask_threshold`` reads mask files that are not strictly binary.
    """

    model: torch.nn.Module
    data: PreprocessedSet
    dataset: FundusDataset
    ids: Sequence[str]
    batch_size: int = 16
    threshold: float = 0.5
    mask_threshold: int | None = None
    crops: CropSet | None = None

    def predictions(
        self, tta: bool = False
    ) -> Iterator[tuple[str, np.ndarray, np.ndarray, float, float]]:
        """Per image: (id, native probabilities (H, W), true mask, input Dice, input IoU).

        The network sees the cached input (whole-photograph frame) or, with ``crops``, the
        image's crop; its probabilities go back through the frame or the crop's box
        (:func:`native_probability`). Input-size Dice/IoU compare them with the cached (or crop)
        mask at ``threshold``, as training's test step does. ``model`` is put in eval mode and
        restored afterwards.
        """
        model, data, crops, threshold = self.model, self.data, self.crops, self.threshold
        check_options(self.batch_size, threshold)
        samples, rows = masked_samples(self.dataset, self.ids), rows_of(data, self.ids)
        if crops is None:
            inputs, masks, slots = data.images, data.masks, rows
        else:
            inputs, masks, slots = crops.images, crops.masks, crop_rows(crops, self.ids)
        device, was_training = module_device(model), model.training
        model.eval()
        try:
            for chunk in batches(list(zip(samples, rows, slots, strict=True)), self.batch_size):
                stack = np.stack([inputs[slot] for _, _, slot in chunk])
                probs = segment(model, stack, device, tta)
                cached = torch.from_numpy(np.stack([masks[slot] for _, _, slot in chunk]))
                prob_t = torch.from_numpy(probs)
                dice_in = binary_dice(prob_t, cached, threshold).tolist()
                iou_in = binary_iou(prob_t, cached, threshold).tolist()
                for k, (sample, row, slot) in enumerate(chunk):
                    width, height = native_size(data, row)
                    truth = read_mask(sample.mask_path, (height, width), self.mask_threshold)
                    box = None if crops is None else crops.box(slot)
                    native = native_probability(probs[k], (width, height), box, data.frame(row))
                    yield sample.image_id, native, truth, dice_in[k], iou_in[k]
        finally:
            model.train(was_training)

    def scores(
        self, posts: Sequence[PostProcess]
    ) -> dict[PostProcess, dict[str, dict[str, float]]]:
        """Per switch set of ``posts`` and per image: native ``dice``, ``iou``, ``hd95_px`` and
        input-size ``dice_input``/``iou_input``.

        Native scores compare the probabilities, mapped back as
        :func:`~locseg.inference.native.native_mask` does (through the image's frame,
        ``data.frame(row)``), with the original mask file; input-size scores compare them with
        the cached mask, as training's test step does. With ``crops`` the
        input-size scores use the crop's mask, and the probabilities are pasted back into the
        photograph from the crop's box. A switch set's flip TTA changes the probabilities (both
        scores); its clean-ups change the native mask. One forward pass per TTA setting serves
        every switch set that shares it.
        """
        results: dict[PostProcess, dict[str, dict[str, float]]] = {post: {} for post in posts}
        for tta in sorted({post.tta for post in posts}):
            sharing = [post for post in results if post.tta == tta]
            for image_id, native, truth, dice_in, iou_in in self.predictions(tta):
                mask = native > self.threshold
                for post in sharing:
                    scores = mask_scores(post.apply(mask), truth)
                    results[post][image_id] = {
                        **scores,
                        "dice_input": dice_in,
                        "iou_input": iou_in,
                    }
        return results

    def postprocess_table(self) -> dict[str, dict[PostProcess, float]]:
        """Native Dice of every image under all eight combinations of the three switches."""
        table: dict[str, dict[PostProcess, float]] = {}
        for tta in (False, True):
            for image_id, native, truth, _, _ in self.predictions(tta):
                mask = native > self.threshold
                for largest in (False, True):
                    for fill in (False, True):
                        post = PostProcess(largest, fill, tta)
                        table.setdefault(image_id, {})[post] = dice(post.apply(mask), truth)
        return table

    def metrics_by_post(self, posts: Sequence[PostProcess]) -> dict[PostProcess, dict]:
        """:func:`native_segmentation_metrics` for several switch sets from shared passes."""
        native = ("dice", "iou", "hd95_px")
        return {
            post: summarise_scores({i: {k: s[k] for k in native} for i, s in per_image.items()})
            for post, per_image in self.scores(posts).items()
        }


# The functions below take LabelledSet's fields, positionally or by name, then their own option.


def segmentation_per_image(
    *labelled: Any, post: PostProcess | None = None, **fields: Any
) -> dict[str, dict[str, float]]:
    """:meth:`LabelledSet.scores` of one switch set (none by default)."""
    post = post or PostProcess()
    return LabelledSet(*labelled, **fields).scores([post])[post]


def choose_native_postprocess(
    *labelled: Any, fixed: Mapping[str, bool] | None = None, **fields: Any
) -> tuple[PostProcess, dict]:
    """The switches to use, chosen on native Dice of *validation* images ``ids`` (never test).

    TTA, then largest component, then hole filling: each kept when
    :func:`locseg.evaluation.postprocess.choose_postprocessing` says so given the ones already
    kept; a switch in ``fixed`` is set as given. Returns the switches and a record for metrics.json
    (each step with its mean validation Dice without and with the switch).
    """
    table = LabelledSet(*labelled, **fields).postprocess_table()
    chosen, steps = choose_switches(table, fixed)
    record = {
        **chosen.as_dict(),
        "n_val": len(table),
        "val_dice_native": float(np.mean([t[PostProcess()] for t in table.values()])),
        "val_dice_native_post": float(np.mean([t[chosen] for t in table.values()])),
        "steps": steps,
    }
    return chosen, record


def native_segmentation_metrics(
    *labelled: Any, post: PostProcess | None = None, **fields: Any
) -> dict:
    """Dice, IoU and HD95 of a segmenter on the photographs' own pixels, for images ``ids``.

    A segmenter trained on disc-centred crops is given its test ``crops`` (cut around the
    localizer's predicted centres): its probabilities are pasted back into the photograph.

    Returns ``{"dice_native", "iou_native", "hd95_native_px", "hd95_undefined", "n_images",
    "per_image": {id: {"dice", "iou", "hd95_px"}}}``. ``hd95_native_px`` averages the finite
    values only; ``hd95_undefined`` counts the images whose prediction is empty (HD95 NaN, see
    :mod:`locseg.evaluation.metrics`). Runs on the model's device, without autograd.
    """
    post = post or PostProcess()
    return LabelledSet(*labelled, **fields).metrics_by_post([post])[post]
