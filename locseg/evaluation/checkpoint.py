"""Score one checkpoint on a canonical dataset folder; write metrics.json and per_image.csv.

What ``python -m locseg.evaluate`` runs (the module docstring there lists the metrics): the model
is loaded with the preprocessing stored in it, the images are chosen by
:mod:`locseg.evaluation.scope`, a crop segmenter's crops are placed by :mod:`locseg.roi.centres`.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from locseg.data.dataset import FundusDataset, load_dataset
from locseg.data.preprocess import PreprocessedSet, default_cache_dir, preprocess_dataset
from locseg.evaluation.native import segmentation_per_image
from locseg.evaluation.scope import (
    TrainingScope,
    known_splits,
    leakage_warnings,
    resolve_fold,
    select_ids,
    split_options,
)
from locseg.experiments.environment import environment
from locseg.inference.batches import batches, forward, module_device, rows_of
from locseg.inference.checkpoints import Model, load_localizer, load_model
from locseg.inference.native import native_centres
from locseg.inference.options import InferenceOptions
from locseg.inference.postprocess import PostProcess
from locseg.io import write_json_atomic, write_text_atomic
from locseg.models.localizer import localization_errors
from locseg.roi.centres import roi_crops
from locseg.roi.datamodule import CropSet
from locseg.roi.geometry import check_centre_source

SEGMENT_COLUMNS = ("dice", "iou", "dice_native", "iou_native", "hd95_native_px")


LOCALIZE_COLUMNS = (
    "dist_px",
    "mse_px2",
    "dist_frac_width",
    "baseline_dist_px",
    "image_centre_dist_px",
    "within_radius",
)


def evaluate_segmenter(
    model: Model,
    data: PreprocessedSet,
    dataset: FundusDataset,
    ids: Sequence[str],
    options: InferenceOptions,
    mask_threshold: int | None,
    crops: CropSet | None = None,
    centre_errors: Mapping[str, float] | None = None,
) -> tuple[dict, dict[str, dict[str, float]]]:
    """Means and per-image rows: input-size Dice/IoU (as training) and native Dice/IoU/HD95.

    With ``crops`` (a crop segmenter) input-size scores are on the crops and each row also holds
    ``centre_dist_px``, the crop centre's distance from the true centre. ``options.post``: flip
    TTA and mask clean-ups (:class:`locseg.inference.postprocess.PostProcess`), off by default.
    """
    per_image = segmentation_per_image(
        model.module,
        data,
        dataset,
        ids,
        options.batch_size,
        options.threshold,
        mask_threshold,
        crops,
        post=options.post,
    )
    rows = {
        image_id: {
            "dice": s["dice_input"],
            "iou": s["iou_input"],
            "dice_native": s["dice"],
            "iou_native": s["iou"],
            "hd95_native_px": s["hd95_px"],
        }
        for image_id, s in per_image.items()
    }
    columns = SEGMENT_COLUMNS
    if centre_errors is not None:
        for image_id, row in rows.items():
            row["centre_dist_px"] = float(centre_errors[image_id])
        columns = (*SEGMENT_COLUMNS, "centre_dist_px")
    means = {name: _mean([r[name] for r in rows.values()]) for name in columns}
    hd95 = [r["hd95_native_px"] for r in rows.values()]
    means["hd95_undefined"] = sum(not math.isfinite(v) for v in hd95)
    return means, rows


def evaluate_localizer(
    model: Model, data: PreprocessedSet, ids: Sequence[str], batch_size: int
) -> tuple[dict, dict[str, dict[str, float]]]:
    """Means and per-image rows of the centre error, beside both baselines, in native pixels."""
    rows_idx = rows_of(data, ids)
    device = module_device(model.module)
    baseline = model.module.baseline_center.detach().float().cpu()
    rows: dict[str, dict[str, float]] = {}
    for chunk in batches(list(zip(ids, rows_idx, strict=True)), batch_size):
        index = [row for _, row in chunk]
        frames = [data.frame(row) for row in index]
        pred = torch.from_numpy(forward(model.module, data.images[index], device))
        center = torch.from_numpy(data.centers[index])
        size = torch.from_numpy(data.native_sizes[index])
        frame_size = torch.tensor([f.as_list()[2:] for f in frames], dtype=torch.float32)
        errors = localization_errors(
            pred, center, size, torch.from_numpy(data.radii[index]), baseline, frame_size
        )
        pred_px = native_centres(pred.numpy(), frames, size.numpy())
        true_px = native_centres(center.numpy(), frames, size.numpy())
        for k, (image_id, _) in enumerate(chunk):
            known = bool(errors["radius_known"][k])
            rows[image_id] = {
                "pred_x": pred_px[k][0],
                "pred_y": pred_px[k][1],
                "true_x": true_px[k][0],
                "true_y": true_px[k][1],
                **{name: float(errors[name][k]) for name in LOCALIZE_COLUMNS[:-1]},
                "within_radius": float(errors["within_radius"][k]) if known else math.nan,
            }
    means = {name: _mean([r[name] for r in rows.values()]) for name in LOCALIZE_COLUMNS}
    return means, rows


def _mean(values: Sequence[float]) -> float:
    """Mean over the finite values (NaN marks a value that does not apply); NaN if none."""
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def evaluate(
    ckpt: str | Path,
    root: str | Path,
    output: str | Path,
    split: str = "test",
    fold: int | None = None,
    num_folds: int | None = None,
    val_fraction: float | None = None,
    split_seed: int | None = None,
    mask_threshold: int | None = None,
    cache_dir: str | Path | None = None,
    batch_size: int = 16,
    device: str = "auto",
    threshold: float = 0.5,
    loc_ckpt: str | Path | None = None,
    roi_centres: str = "predicted",
    postprocess: Mapping | PostProcess | None = None,
) -> dict:
    """Evaluate one checkpoint; write ``output/metrics.json`` and ``output/per_image.csv``.

    ``loc_ckpt`` and ``roi_centres`` (``predicted`` | ``true``) serve a segmenter trained on
    disc-centred crops (``data.roi``); they are ignored for a whole-photograph model.
    ``postprocess`` (``{largest, fill, tta}``, all off by default) applies to a segmenter's
    native masks; a training run records the switches its validation images chose
    (``postprocess_choice`` in its metrics.json).

    Returns what metrics.json holds. Raises :class:`InferenceError` (checkpoint, options) or
    :class:`DatasetError` (data folder, fold), each naming the file or value and the fix.
    """
    start = time.perf_counter()
    how = InferenceOptions(batch_size, device, threshold)
    ckpt, output = Path(ckpt).expanduser(), Path(output).expanduser()
    roi_centres = check_centre_source(roi_centres, "roi_centres")
    how = how.with_post(postprocess)
    model = load_model(ckpt, how.target())
    uses_roi = model.role == "segmenter" and model.roi is not None
    localizer = load_localizer(loc_ckpt, how.target()) if uses_roi else None
    dataset = load_dataset(root, mask_threshold)
    cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    scope = TrainingScope.of(ckpt, model.role)
    requested = {"fold": fold, "num_folds": num_folds, "val_fraction": val_fraction}
    options = split_options({**requested, "split_seed": split_seed}, scope.run, dataset.root)
    fold_from = None
    if split == "test":
        options["fold"], fold_from = resolve_fold(scope, dataset, options, cache_dir, fold)
    ids, splits_file = select_ids(dataset, model.role, split, options, cache_dir)
    data = preprocess_dataset(dataset, model.preprocess, cache_dir, mask_threshold)
    crops, centre_errors, warnings = None, None, []
    if uses_roi:
        crops, centre_errors = roi_crops(
            model,
            localizer,
            dataset,
            data,
            ids,
            roi_centres,
            cache_dir,
            mask_threshold,
            how.batch_size,
        )
        if localizer is not None and roi_centres == "predicted":
            loc_scope = TrainingScope.of(localizer.path, "localizer")
            loc_splits = known_splits(loc_scope, dataset, options, cache_dir)
            warnings += [
                f"localizer: {w}"
                for w in leakage_warnings(
                    loc_scope, dataset, split, options["fold"], ids, loc_splits
                )
            ]
    if model.role == "segmenter":
        means, rows = evaluate_segmenter(
            model, data, dataset, ids, how, mask_threshold, crops, centre_errors
        )
        columns = SEGMENT_COLUMNS if crops is None else (*SEGMENT_COLUMNS, "centre_dist_px")
    else:
        means, rows = evaluate_localizer(model, data, ids, how.batch_size)
        columns = ("pred_x", "pred_y", "true_x", "true_y", *LOCALIZE_COLUMNS)
    sizes = {i: data.native_sizes[r] for i, r in zip(ids, rows_of(data, ids), strict=True)}
    write_per_image(output / "per_image.csv", rows, sizes, columns)
    result = {
        "role": model.role,
        "checkpoint": str(ckpt),
        "dataset": str(dataset.root),
        "split": split,
        "fold": int(options["fold"]) if split == "test" else None,
        "fold_from": fold_from,
        "split_options": options if split == "test" else None,
        "splits_file": str(splits_file) if splits_file else None,
        "n_images": len(ids),
        "threshold": how.threshold if model.role == "segmenter" else None,
        "postprocess": how.post.as_dict() if model.role == "segmenter" else None,
        "preprocess": model.preprocess.as_dict(),
        "device": str(module_device(model.module)),
        "environment": environment(module_device(model.module)),
        "metrics": {k: _json_number(v) for k, v in means.items()},
        "training_run": scope.run,
        "roi": roi_record(model, localizer, roi_centres) if uses_roi else None,
        "warnings": leakage_warnings(
            scope,
            dataset,
            split,
            options["fold"],
            ids,
            known_splits(scope, dataset, options, cache_dir),
        )
        + warnings,
        "output": str(output),
        "wall_time_s": time.perf_counter() - start,
    }
    write_json_atomic(output / "metrics.json", result)
    return result


def roi_record(model: Model, localizer: Model | None, centres_from: str) -> dict:
    """The crop region the segmenter was trained on and where the test centres came from."""
    return {
        **(model.roi or {}),
        "centres": centres_from,
        "localizer": str(localizer.path) if localizer and centres_from == "predicted" else None,
    }


def _json_number(value: float | int) -> float | int | None:
    """NaN (e.g. no finite HD95) becomes null: metrics.json stays strict JSON."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _cell(value: float) -> str:
    return "" if not math.isfinite(value) else f"{value:.10g}"


def write_per_image(
    path: Path,
    rows: Mapping[str, Mapping[str, float]],
    sizes: Mapping[str, np.ndarray],
    columns: Sequence[str],
) -> Path:
    """One row per image; a metric that does not apply (NaN) is an empty cell."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", "width", "height", *columns])
    for image_id, row in rows.items():
        width, height = (int(v) for v in sizes[image_id])
        writer.writerow([image_id, width, height, *(_cell(row[c]) for c in columns)])
    return write_text_atomic(path, buffer.getvalue())
