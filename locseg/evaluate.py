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

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

import locseg  # noqa: F401  (sets the no-network environment defaults first)
from locseg.data.dataset import DatasetError
from locseg.evaluation.checkpoint import evaluate
from locseg.inference.options import InferenceError
from locseg.roi.geometry import RoiError

__all__ = ["evaluate", "evaluate_config", "main"]


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
