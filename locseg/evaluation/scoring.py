"""What a finished job reports beyond Lightning's logged metrics.

A localizer shared by all folds is scored on every fold's test images; a segmenter is scored on
the photographs' own pixels, with post-processing chosen on validation images only.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig

from locseg.evaluation.native import LabelledSet, choose_native_postprocess
from locseg.evaluation.postprocess import switch_options
from locseg.inference.postprocess import PostProcess


def stage_metrics(results: list[dict], stage: str) -> dict[str, float]:
    values = results[0] if results else {}
    return {k.split("/", 1)[1]: float(v) for k, v in values.items() if k.startswith(f"{stage}/")}


def localizer_facts(trainer, model, datamodule, ckpt_path, run_dir: Path) -> dict:
    """The pool's leakage guard and, for a localizer shared by all folds, every fold's test error.

    ``test`` above is fold ``data.fold``; a shared localizer never saw any evaluated image, so
    it is scored on each fold's segmentation test images, the ones its encoder will serve.
    """
    facts = {"pool_dropped": len(datamodule.dropped), "per_fold": datamodule.per_fold}
    if trainer.is_global_zero:
        datamodule.write_dropped(run_dir / "pool_dropped.csv")
    if not datamodule.per_fold and datamodule.test_skipped is None:
        folds = {}
        for k in range(datamodule.num_folds):
            datamodule.use_test_fold(k)
            tested = trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
            folds[str(k)] = stage_metrics(tested, "test")
        datamodule.use_test_fold(datamodule.fold)
        facts["test_folds"] = folds
    return facts


def add_native_metrics(
    result: dict,
    model: pl.LightningModule,
    datamodule,
    postprocess: DictConfig | None = None,
    localizer: Path | None = None,
) -> None:
    """Score the best checkpoint on each test photograph's own pixels (the headline Dice).

    ``dice_native`` is the raw prediction; ``dice_native_post`` uses the post-processing
    switches chosen on the fold's *validation* images (``postprocess_choice``). A crop segmenter
    is scored on its test crops (around the localizer's centres), pasted back.
    """
    crops = datamodule.test_crops()
    common = {"batch_size": datamodule.batch_size, "mask_threshold": datamodule.mask_threshold}
    data, dataset = datamodule.data, datamodule.dataset
    post, choice = choose_native_postprocess(
        model,
        data,
        dataset,
        datamodule.selection["val"],
        crops=datamodule.val_crops(),
        fixed=switch_options(postprocess),
        **common,
    )
    raw = PostProcess()
    test = LabelledSet(model, data, dataset, datamodule.selection["test"], crops=crops, **common)
    scored = test.metrics_by_post([raw, post])
    native, posted = scored[raw], scored[post]
    for key in ("dice_native", "iou_native", "hd95_native_px", "hd95_undefined"):
        result["test"][key] = native[key]
        result["test"][f"{key}_post"] = posted[key]
    result["postprocess_choice"] = choice
    result["per_image_test_dice_native"] = {i: s["dice"] for i, s in native["per_image"].items()}
    result["per_image_test_dice_native_post"] = {
        i: s["dice"] for i, s in posted["per_image"].items()
    }
    result["per_image_test_native"] = native["per_image"]
    if crops is not None:
        errors = datamodule.centre_errors()
        result["roi"] = {
            **datamodule.roi_facts(),
            "localizer": str(localizer) if localizer else None,
            "centre_dist_px": sum(errors.values()) / len(errors),
        }
        result["per_image_test_centre_dist_px"] = errors
