"""``python -m locseg.evaluate ckpt=RUN/checkpoints/best.ckpt data.root=DIR output=OUT``

Score any localizer or segmenter checkpoint on any canonical dataset folder, with the metrics of
training, and write ``OUT/metrics.json`` (means and what was evaluated) and ``OUT/per_image.csv``
(one row per image), both atomically. Like lightning-hydra-template's ``eval.py`` and nnU-Net's
evaluation: the model is loaded with the preprocessing stored in it, and the images are a fold's
test set from the persisted splits (``data.fold=K``, default: the fold the checkpoint was trained
for) or every labelled image (``data.split=all``).

- segmenter: ``dice``/``iou`` at the network's input size (as training's test step) and
  ``dice_native``, ``iou_native``, ``hd95_native_px`` on the photograph's own pixels against the
  original mask files (:mod:`locseg.evaluation.metrics` defines the empty-prediction case), mapped
  back through each image's frame (``data.preprocess.crop_fov``); ``postprocess.largest``,
  ``postprocess.fill`` and ``postprocess.tta`` switch on the clean-ups and flip TTA;
- a segmenter trained on disc-centred crops (``data.roi``) needs ``loc_ckpt=LOC.ckpt``: each
  image is cropped around the centre that localizer predicts (``roi_centres=true``: around the
  true centre, an oracle bound), segmented, and pasted back into the photograph for the native
  metrics; ``centre_dist_px`` is each crop centre's distance from the true centre;
- localizer: ``dist_px`` (native pixels), ``mse_px2``, ``dist_frac_width``, the mean-training-centre
  baseline ``baseline_dist_px``, the image-centre baseline ``image_centre_dist_px`` and
  ``within_radius`` (images with a mask only).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

import locseg  # noqa: F401  (sets the no-network environment defaults first)
from locseg.data.dataset import DatasetError, FundusDataset, load_dataset
from locseg.data.preprocess import PreprocessedSet, default_cache_dir, preprocess_dataset
from locseg.data.splits import (
    check_fold,
    dataset_splits,
    evaluation_pool,
    excluded_ids_hash,
    splits_path,
)
from locseg.evaluation.native import segmentation_per_image
from locseg.experiments.environment import environment
from locseg.experiments.sweep import ENCODER_FILE
from locseg.inference.batches import batches, forward, module_device, predict_centres, rows_of
from locseg.inference.checkpoints import Model, load_model
from locseg.inference.native import centre_to_native
from locseg.inference.options import InferenceError, check_options, resolve_device
from locseg.inference.postprocess import PostProcess
from locseg.io import write_json_atomic, write_text_atomic
from locseg.models.encoder_io import EncoderCheckpointError, load_encoder_checkpoint
from locseg.models.localizer import localization_errors
from locseg.roi.datamodule import CropSet, build_crops, true_centres
from locseg.roi.geometry import RoiError, box_around, check_centre_source

log = logging.getLogger("locseg.evaluate")

SPLITS = ("test", "all")
# Split parameters when neither the command line nor the checkpoint's run gives one (train's).
SPLIT_DEFAULTS = {"fold": 0, "num_folds": 5, "val_fraction": 0.2, "split_seed": 1234}
SEGMENT_COLUMNS = ("dice", "iou", "dice_native", "iou_native", "hd95_native_px")
LOCALIZE_COLUMNS = (
    "dist_px",
    "mse_px2",
    "dist_frac_width",
    "baseline_dist_px",
    "image_centre_dist_px",
    "within_radius",
)


# --------------------------------------------------------------------------- what to evaluate


RUN_CONFIG = "config_resolved.yaml"
FOLD_FIX = (
    "give data.fold=K (the fold whose test images it was trained without) or data.split=all "
    "(every labelled image, training images included)"
)


def training_run(ckpt: Path) -> dict | None:
    """The data section of the checkpoint's run (``RUN/config_resolved.yaml``), if it is there."""
    path = ckpt.parent.parent / RUN_CONFIG
    if not path.is_file():
        return None
    try:
        data = OmegaConf.to_container(OmegaConf.load(path)).get("data") or {}
    except Exception:  # a damaged or foreign file: evaluate without it
        log.warning("%s: unreadable, split options fall back to the defaults", path)
        return None
    keys = ("root", "fold", "num_folds", "val_fraction", "split_seed")
    return {"config": str(path), **{k: data.get(k) for k in keys}, "pool": data.get("pool") or []}


def encoder_record(ckpt: Path) -> dict | None:
    """What a localizer's run recorded in ``RUN/encoder.pt`` about the images it never saw:
    ``per_fold``, ``fold``, ``dataset``, ``excluded_hash`` (see ``locseg.handoff``)."""
    path = ckpt.parent.parent / ENCODER_FILE
    if not path.is_file():
        return None
    try:
        extra = load_encoder_checkpoint(path).get("extra") or {}
    except EncoderCheckpointError as error:
        log.warning("%s", error)
        return None
    return {"path": str(path), **extra} if extra.get("excluded_hash") else None


@dataclass
class TrainingScope:
    """What is known of the images a checkpoint trained on: its run's config and, for a
    localizer, its ``encoder.pt`` (either may be missing)."""

    ckpt: Path
    role: str
    run: dict | None
    encoder: dict | None

    @classmethod
    def of(cls, ckpt: Path, role: str) -> TrainingScope:
        return cls(
            ckpt, role, training_run(ckpt), encoder_record(ckpt) if role == "localizer" else None
        )

    def trained_on(self, root: Path) -> bool:
        return self.run is not None and same_folder(self.run["root"], root)

    def pool_holds(self, root: Path) -> bool:
        """``root`` is one of the localizer's training pool folders (``data.pool``)."""
        pool = (self.run or {}).get("pool") or []
        return self.role == "localizer" and any(same_folder(p, root) for p in pool)

    def encoder_fold(self, dataset: FundusDataset, splits: Mapping | None) -> int | None:
        """The fold of ``dataset`` whose test images a per-fold localizer's encoder.pt excludes."""
        if self.encoder is None or not self.encoder.get("per_fold") or splits is None:
            return None
        for k, entry in enumerate(splits["folds"]):
            if excluded_ids_hash(list(entry["test"])) == self.encoder["excluded_hash"]:
                return k
        return None

    def serves_every_fold(self, dataset: FundusDataset) -> bool:
        """A shared localizer whose encoder.pt excludes every image folds are made of here."""
        if self.encoder is None or self.encoder.get("per_fold"):
            return False
        pool = [s.image_id for s in evaluation_pool(dataset)]
        return self.encoder["excluded_hash"] == excluded_ids_hash(pool)


def same_folder(a: str | Path | None, b: str | Path) -> bool:
    return a is not None and Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def split_options(requested: Mapping, run: dict | None, root: Path) -> dict:
    """Fold parameters: the command line, else the checkpoint's run, else train's defaults.

    The run's fold counts only when it trained on this very folder; its fold scheme
    (``num_folds``, ``val_fraction``, ``split_seed``) is kept for any folder. The fold is None
    when unknown: no fold asked for and no run config (see :func:`resolve_fold`); a run of
    another folder never saw this folder's folds, so its default fold 0 is a fair test.
    """
    options = {}
    for key, default in SPLIT_DEFAULTS.items():
        value = requested.get(key)
        if value is None and run is not None and (key != "fold" or same_folder(run["root"], root)):
            value = run.get(key)
        if value is None and (key != "fold" or run is not None):
            value = default
        options[key] = value
    return options


def split_request(options: Mapping) -> tuple[int, float, int]:
    return int(options["num_folds"]), float(options["val_fraction"]), int(options["split_seed"])


def resolve_fold(
    scope: TrainingScope,
    dataset: FundusDataset,
    options: Mapping,
    cache_dir: Path,
    requested: int | None,
) -> tuple[int, str]:
    """The test fold and where it came from; never a guess.

    The command line first, then the run's config, then a localizer's ``encoder.pt`` (the fold
    whose test images it excludes, or its own fold for a shared localizer that excludes every
    image folds are made of here). Otherwise an :class:`InferenceError` naming the fix.
    """
    if requested is not None:
        return int(requested), "data.fold"
    if options["fold"] is not None:
        return int(options["fold"]), str(scope.run["config"])
    if scope.serves_every_fold(dataset):
        return int(scope.encoder.get("fold") or 0), scope.encoder["path"]
    if scope.encoder is not None and scope.encoder.get("per_fold"):
        splits = dataset_splits(dataset, *split_request(options), cache_dir)
        fold = scope.encoder_fold(dataset, splits)
        if fold is not None:
            return fold, scope.encoder["path"]
    config = scope.ckpt.parent.parent / RUN_CONFIG
    known = f"; {scope.encoder['path']} names other images" if scope.encoder else ""
    raise InferenceError(
        f"{scope.ckpt}: the fold it was trained for is unknown (no {config}{known}), so its "
        f"test images cannot be told from its training images; {FOLD_FIX}"
    )


def select_ids(
    dataset: FundusDataset, role: str, split: str, options: Mapping, cache_dir: Path
) -> tuple[list[str], Path | None]:
    """Image ids to score and the splits file they came from (None for ``split=all``)."""
    if split not in SPLITS:
        raise DatasetError(f"data.split={split!r} is not one of {', '.join(SPLITS)}")
    if split == "all":
        samples = dataset.masked() if role == "segmenter" else dataset.centred()
        if not samples:
            raise DatasetError(
                f"{dataset.root}: no {'masked' if role == 'segmenter' else 'labelled'} image to "
                f"evaluate a {role} on; add masks/ or centers.csv rows."
            )
        return [s.image_id for s in samples], None
    check_fold(int(options["fold"]), int(options["num_folds"]))
    path = splits_path(dataset, cache_dir, *split_request(options))
    splits = dataset_splits(dataset, *split_request(options), cache_dir)
    return list(splits["folds"][int(options["fold"])]["test"]), path


def leakage_warnings(
    scope: TrainingScope,
    dataset: FundusDataset,
    split: str,
    fold: int,
    ids: Sequence[str],
    splits: Mapping | None = None,
) -> list[str]:
    """Say so when the evaluated images include the checkpoint's own training images, and only
    then.

    A localizer's ``encoder.pt`` says which images it never trained on: every image folds are
    made of (a shared localizer: pool folders, or the dataset's centre-only images with no
    patient in the folds), so any fold's test images are unseen, or one fold's test images (a
    per-fold localizer, which trained on the dataset's other images). A segmenter trained on its
    fold's other masked images (its run's config says which fold).
    """
    root = dataset.root
    if scope.pool_holds(root):
        where = "one of the localizer's training pool folders (data.pool)"
        return [f"{root} is {where}: its centred images were its training or validation images"]
    pool_ids = {s.image_id for s in evaluation_pool(dataset)}
    if scope.serves_every_fold(dataset) and set(ids) <= pool_ids:
        return []
    # A per-fold localizer of this dataset (not one of another folder whose ids look alike).
    mine = scope.run is None or scope.trained_on(root)
    own_fold = scope.encoder_fold(dataset, splits) if mine else None
    if own_fold is not None:  # a per-fold localizer of this dataset
        if split == "test" and own_fold == fold:
            return []
        return [seen_warning(own_fold, split, fold, "its encoder.pt excludes only that fold's")]
    if scope.run is not None and scope.run.get("pool") and scope.role == "localizer":
        return []  # trained on its pool folders alone, and this is not one of them
    if not scope.trained_on(root):
        return []
    if split == "all":
        return ["data.split=all on the checkpoint's own dataset includes its training images"]
    shared = scope.role == "localizer" and (
        not scope.encoder.get("per_fold") if scope.encoder else bool(dataset.centre_only())
    )
    if scope.run.get("fold") is not None and int(scope.run["fold"]) != fold and not shared:
        return [seen_warning(int(scope.run["fold"]), split, fold)]
    return []


def known_splits(
    scope: TrainingScope, dataset: FundusDataset, options: Mapping, cache_dir: Path
) -> dict | None:
    """The dataset's folds when a per-fold localizer's encoder.pt is to be matched against them
    (None otherwise, or when the folds cannot be read)."""
    if scope.encoder is None or not scope.encoder.get("per_fold"):
        return None
    try:
        return dataset_splits(dataset, *split_request(options), cache_dir)
    except DatasetError as error:
        log.warning("cannot match %s to this dataset's folds: %s", scope.encoder["path"], error)
        return None


def seen_warning(trained: int, split: str, fold: int, why: str = "") -> str:
    images = f"the test images of fold {fold}" if split == "test" else "the labelled images"
    because = f" ({why} test images)" if why else ""
    return (
        f"the checkpoint was trained for fold {trained} of this dataset{because}, so {images} "
        "were among its training or validation images"
    )


# --------------------------------------------------------------------------- scoring


def evaluate_segmenter(
    model: Model,
    data: PreprocessedSet,
    dataset: FundusDataset,
    ids: Sequence[str],
    batch_size: int,
    threshold: float,
    mask_threshold: int | None,
    crops: CropSet | None = None,
    centre_errors: Mapping[str, float] | None = None,
    post: PostProcess | None = None,
) -> tuple[dict, dict[str, dict[str, float]]]:
    """Means and per-image rows: input-size Dice/IoU (as training) and native Dice/IoU/HD95.

    With ``crops`` (a crop segmenter) input-size scores are on the crops and each row also holds
    ``centre_dist_px``, the crop centre's distance from the true centre. ``post``: flip TTA and
    mask clean-ups (:class:`locseg.inference.postprocess.PostProcess`), off by default.
    """
    per_image = segmentation_per_image(
        model.module, data, dataset, ids, batch_size, threshold, mask_threshold, crops, post
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


def native_centres(uv: np.ndarray, frames: Sequence, sizes: np.ndarray) -> list[np.ndarray]:
    """(B, 2) normalised centres, each in its frame -> native (x, y) px."""
    return [centre_to_native(p, f, s) for p, f, s in zip(uv, frames, sizes, strict=True)]


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


def load_localizer(loc_ckpt: str | Path | None, device: torch.device) -> Model | None:
    if not loc_ckpt:
        return None
    model = load_model(Path(loc_ckpt).expanduser(), device)
    if model.role != "localizer":
        raise InferenceError(
            f"loc_ckpt={loc_ckpt} is a {model.role}'s checkpoint, not a localizer's"
        )
    return model


def _mean(values: Sequence[float]) -> float:
    """Mean over the finite values (NaN marks a value that does not apply); NaN if none."""
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


# --------------------------------------------------------------------------- the run


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
    check_options(batch_size, threshold)
    ckpt, output = Path(ckpt).expanduser(), Path(output).expanduser()
    roi_centres = check_centre_source(roi_centres, "roi_centres")
    post = postprocess if isinstance(postprocess, PostProcess) else None
    post = post or PostProcess.from_options(postprocess)
    model = load_model(ckpt, resolve_device(device))
    uses_roi = model.role == "segmenter" and model.roi is not None
    localizer = load_localizer(loc_ckpt, resolve_device(device)) if uses_roi else None
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
            model, localizer, dataset, data, ids, roi_centres, cache_dir, mask_threshold, batch_size
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
            model,
            data,
            dataset,
            ids,
            batch_size,
            threshold,
            mask_threshold,
            crops,
            centre_errors,
            post,
        )
        columns = SEGMENT_COLUMNS if crops is None else (*SEGMENT_COLUMNS, "centre_dist_px")
    else:
        means, rows = evaluate_localizer(model, data, ids, batch_size)
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
        "threshold": threshold if model.role == "segmenter" else None,
        "postprocess": post.as_dict() if model.role == "segmenter" else None,
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


def print_result(result: dict) -> None:
    from rich.console import Console

    console = Console()
    where = f"fold {result['fold']} test" if result["split"] == "test" else "all labelled"
    console.print(
        f"[bold]{result['role']}[/] on {result['n_images']} image(s) ({where}) of "
        f"{result['dataset']}",
        highlight=False,
        soft_wrap=True,
    )
    for name, value in result["metrics"].items():
        console.print(f"  {name}: {'n/a' if value is None else f'{value:.4g}'}", highlight=False)
    for warning in result["warnings"]:
        console.print(f"  [yellow]warning:[/] {warning}", highlight=False)
    for name in ("metrics.json", "per_image.csv"):
        console.print(f"  {Path(result['output']) / name}", highlight=False, soft_wrap=True)


USAGE = (
    "python -m locseg.evaluate ckpt=RUN/checkpoints/best.ckpt data.root=DIR output=OUT "
    "[data.fold=K | data.split=all] [loc_ckpt=LOC.ckpt for a segmenter trained on data.roi]"
)


def evaluate_config(cfg: DictConfig) -> dict:
    """The Hydra config -> :func:`evaluate`, writing into Hydra's run folder (``output``)."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        given = ", ".join(f"{key}=..." for key in missing)
        raise InferenceError(f"missing {given}; usage: {USAGE}")
    data = cfg.data
    return evaluate(
        cfg.ckpt,
        data.root,
        HydraConfig.get().runtime.output_dir,  # ${output}, resolved once by Hydra
        split=data.split,
        fold=data.fold,
        num_folds=data.num_folds,
        val_fraction=data.val_fraction,
        split_seed=data.split_seed,
        mask_threshold=data.mask_threshold,
        cache_dir=data.cache_dir,
        batch_size=cfg.batch_size,
        device=cfg.device,
        threshold=cfg.threshold,
        loc_ckpt=cfg.get("loc_ckpt"),
        roi_centres=cfg.get("roi_centres", "predicted"),
        postprocess=OmegaConf.to_container(cfg.postprocess) if cfg.get("postprocess") else None,
    )


@hydra.main(version_base="1.3", config_path="pkg://locseg.conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    """Exit 1 with the reason (naming the file or value) on bad input, 0 after writing."""
    try:
        result = evaluate_config(cfg)
    except (InferenceError, DatasetError, RoiError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    print_result(result)


if __name__ == "__main__":
    main()
