"""Hydra entry point: ``python -m locseg.train +phase=localize`` or ``+phase=segment``.

The only place where data and models meet: the config names a DataModule and a LightningModule,
this file builds both, fits, tests the best checkpoint and writes ``metrics.json`` atomically.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.rank_zero import rank_zero_only
from rich import print as rich_print
from rich.syntax import Syntax
from rich.tree import Tree

import locseg  # sets the no-network environment defaults first
from locseg.experiments.sweep import (
    ENCODER_FILE,
    arm_name,
    config_hash,
    find_encoder,
    finished_result,
    job_identity,
    write_job,
    write_metrics,
)
from locseg.inference import (
    InferenceError,
    choose_native_postprocess,
    native_segmentation_metrics,
    roi_localizer_path,
    roi_test_centres,
)
from locseg.io import write_text_atomic
from locseg.models.encoder_io import EncoderCheckpointError, load_encoder_checkpoint, save_encoder
from locseg.postprocess import switch_options

log = logging.getLogger("locseg.train")
locseg.quiet_known_noise()
OmegaConf.register_new_resolver("locseg_arm", arm_name, replace=True)


def print_config_tree(cfg: DictConfig, save_to: Path) -> None:
    """Show the resolved config as a rich tree and keep it with the run."""
    tree = Tree("config", guide_style="dim")
    for key, value in cfg.items():
        text = (
            OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        )
        tree.add(f"[bold]{key}[/]").add(Syntax(text, "yaml"))
    rich_print(tree)
    write_text_atomic(save_to, OmegaConf.to_yaml(cfg, resolve=True))


def instantiate_all(group: DictConfig | None) -> list:
    """Instantiate every entry of a callbacks/logger group, skipping nulled ones."""
    if not group:
        return []
    return [instantiate(node) for node in group.values() if node and "_target_" in node]


def job_record(cfg: DictConfig, run_dir: Path, digest: str) -> dict:
    """Who this job is: the keys the report groups by."""
    segment = cfg.phase == "segment"
    return {
        "job": cfg.run_name,
        "phase": cfg.phase,
        "arm": cfg.arm,
        "fold": int(cfg.data.fold),
        "fraction": float(cfg.data.fraction),
        "init": cfg.model.init if segment else None,
        "freeze_encoder": bool(cfg.model.freeze_encoder) if segment else None,
        "dataset": cfg.data.name,
        "config_hash": digest,
        "run_dir": str(run_dir),
    }


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


def build_model(cfg: DictConfig, datamodule, encoder: Path | None) -> pl.LightningModule:
    overrides = {"preprocess": datamodule.signature()}
    if encoder is not None:
        overrides["encoder_ckpt"] = str(encoder)
    try:
        model = instantiate(cfg.model, **overrides)
    except InstantiationException as error:  # show the model's own message, not Hydra's wrapper
        raise (error.__cause__ or error) from None
    if cfg.phase == "localize":
        model.set_baseline_center(datamodule.mean_train_center())
    return model


def stage_metrics(results: list[dict], stage: str) -> dict[str, float]:
    values = results[0] if results else {}
    return {k.split("/", 1)[1]: float(v) for k, v in values.items() if k.startswith(f"{stage}/")}


def prepare(cfg: DictConfig) -> tuple[pl.LightningDataModule, Path | None, Path | None]:
    """The job's data (cache built, folds fixed), a localizer arm's checked encoder and, with
    ``roi``, the checked localizer whose centres place the test crops (every arm needs it)."""
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    switch_options(cfg.get("postprocess"))  # a bad switch fails before any work
    datamodule = instantiate(cfg.data, **roi_overrides(cfg))
    datamodule.prepare_data()
    datamodule.setup("fit")
    uses_encoder = cfg.phase == "segment" and cfg.model.init == "localizer"
    encoder = resolve_encoder(cfg, datamodule) if uses_encoder else None
    return datamodule, encoder, set_roi_test_centres(cfg, datamodule)


ROI_DATAMODULE = "locseg.data.roi_datamodule.RoiSegmentationDataModule"


def roi_overrides(cfg: DictConfig) -> dict:
    """``roi=disc`` turns a segment job's DataModule into the crop one (data.image_size = crop)."""
    roi = cfg.get("roi") if cfg.phase == "segment" else None
    return {"_target_": ROI_DATAMODULE, "roi": roi} if roi else {}


def set_roi_test_centres(cfg: DictConfig, datamodule) -> Path | None:
    """Test crops go around the centres the localizer predicts (never the true ones).

    The localizer is ``roi.localizer_ckpt`` or the localize run beside the encoder in use; its
    ``encoder.pt`` must pass the same leakage check as a localizer arm's encoder. Returns its
    checkpoint (None when the test crops do not come from a localizer).
    """
    if getattr(datamodule, "centre_source", None) != "predicted":
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


def train(
    cfg: DictConfig,
    run_dir: Path,
    datamodule,
    encoder: Path | None,
    localizer: Path | None = None,
) -> dict:
    """Fit, evaluate the best checkpoint on val and test, hand the encoder on."""
    pl.seed_everything(cfg.seed, workers=True)
    model = build_model(cfg, datamodule, encoder)
    loggers = instantiate_all(cfg.get("logger"))
    trainer = instantiate(
        cfg.trainer, callbacks=instantiate_all(cfg.get("callbacks")), logger=loggers or False
    )
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    trainer.fit(model, datamodule=datamodule)
    best = trainer.checkpoint_callback
    ckpt_path = "best" if best is not None and best.best_model_path else None
    result = {
        "val": stage_metrics(
            trainer.validate(model, datamodule=datamodule, ckpt_path=ckpt_path), "val"
        ),
        "test": stage_metrics(
            trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path), "test"
        ),
        "best_checkpoint": best.best_model_path if ckpt_path else None,
        "epochs": trainer.current_epoch,
        **datamodule.counts(),
    }
    if cfg.phase == "localize":
        result.update(localizer_facts(trainer, model, datamodule, ckpt_path, run_dir))
    if cfg.phase == "localize" and trainer.is_global_zero:
        extra = {
            "per_fold": datamodule.per_fold,
            "fold": int(cfg.data.fold),
            "dataset": cfg.data.name,
            "excluded_hash": datamodule.excluded_hash,
        }
        result["encoder"] = str(
            save_encoder(
                run_dir / ENCODER_FILE,
                model.encoder,
                model.hparams.input_size,
                model.hparams.preprocess,
                extra,
            )
        )
    if cfg.phase == "segment":
        per_image = model.test_per_image_dice
        result["per_image_test_dice"] = {
            datamodule.id_of(i): d for i, d in sorted(per_image.items())
        }
        if trainer.is_global_zero:
            add_native_metrics(result, model, datamodule, cfg.get("postprocess"), localizer)
    return result


def localizer_facts(trainer, model, datamodule, ckpt_path, run_dir: Path) -> dict:
    """The pool's leakage guard and, for a localizer shared by all folds, every fold's test error.

    ``test`` above is fold ``data.fold``; a shared localizer never saw any evaluated image, so
    it is scored on each fold's segmentation test images, the ones its encoder will serve.
    """
    facts = {"pool_dropped": len(datamodule.dropped), "per_fold": datamodule.per_fold}
    if trainer.is_global_zero:
        datamodule.write_dropped(run_dir / "pool_dropped.csv")
    if not datamodule.per_fold:
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
    crops = datamodule.test_crops() if hasattr(datamodule, "test_crops") else None
    common = {"batch_size": datamodule.batch_size, "mask_threshold": datamodule.mask_threshold}
    data, dataset = datamodule.data, datamodule.dataset
    test = datamodule.selection["test"]
    native = native_segmentation_metrics(model, data, dataset, test, crops=crops, **common)
    val_crops = datamodule.val_crops() if hasattr(datamodule, "val_crops") else None
    post, choice = choose_native_postprocess(
        model,
        data,
        dataset,
        datamodule.selection["val"],
        crops=val_crops,
        fixed=switch_options(postprocess),
        **common,
    )
    posted = native
    if post.any:
        posted = native_segmentation_metrics(
            model, data, dataset, test, crops=crops, post=post, **common
        )
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


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_job(cfg: DictConfig) -> dict | None:
    """One job with its bookkeeping: skip if done, record start, write metrics, always close W&B.

    A job's identity is its config plus what the config does not show: the folds, the cached
    pixels, the encoder's bytes and, with ``roi``, the bytes of the localizer that places the
    test crops, so retraining the localizer or changing the data reruns it.
    """
    locseg.quiet_known_noise()  # again here: launcher workers (joblib) do not run our imports
    run_dir = Path(cfg.paths.output_dir)
    start = time.perf_counter()
    try:
        datamodule, encoder, localizer = prepare(cfg)
    except Exception as error:
        return job_failed(cfg, run_dir, job_record(cfg, run_dir, config_hash(cfg)), error, start)
    identity = {**datamodule.identity(), "encoder": file_sha256(encoder) if encoder else None}
    if localizer is not None:  # roi: every arm's test crops depend on the localizer's bytes
        identity["localizer"] = file_sha256(localizer)
    digest = job_identity(config_hash(cfg), identity)
    done = finished_result(run_dir, digest) if cfg.skip_done else None
    if done is not None:
        log.info("skipping %s: %s already holds its result", cfg.run_name, run_dir)
        return done
    print_config_tree(cfg, run_dir / "config_resolved.yaml")
    job = {**job_record(cfg, run_dir, digest), "identity": identity}
    write_job(run_dir, job)
    try:
        trained = train(cfg, run_dir, datamodule, encoder, localizer)
        metrics = {**job, "status": "ok", "error": None, **trained}
    except Exception as error:
        return job_failed(cfg, run_dir, job, error, start)
    finally:
        close_wandb()
    metrics["wall_time_s"] = time.perf_counter() - start
    if _is_rank_zero():  # under DDP every process runs this job; one writes the result
        write_metrics(run_dir, metrics)
    log.info("%s: test %s -> %s", cfg.run_name, _headline(metrics), run_dir / "metrics.json")
    return metrics


def job_failed(cfg: DictConfig, run_dir: Path, job: dict, error: Exception, start: float) -> None:
    """Record the failure; re-raise it in a single run, let a sweep go on."""
    failed = {**job, "status": "failed", "error": f"{type(error).__name__}: {error}"}
    write_metrics(run_dir, {**failed, "wall_time_s": time.perf_counter() - start})
    if not in_multirun():
        raise error
    log.exception("job %s failed; the sweep goes on", cfg.run_name, exc_info=error)
    return None


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _headline(metrics: dict) -> str:
    test = metrics.get("test", {})
    key = "dice" if "dice" in test else "dist_px"
    value = test.get(key, math.nan)
    return f"{key}={value:.4f}"


def _is_rank_zero() -> bool:
    return getattr(rank_zero_only, "rank", 0) == 0


def close_wandb() -> None:
    """Finish the W&B run so the next multirun job starts its own."""
    import wandb

    if wandb.run is not None:
        wandb.finish()


def objective(cfg: DictConfig, metrics: dict | None) -> float | None:
    """The value a sweeper optimises: the monitored *validation* metric, never a test one."""
    if metrics is None:
        return None
    name = str(cfg.monitor.metric).split("/", 1)[1]
    return metrics.get("val", {}).get(name)


@hydra.main(version_base="1.3", config_path="pkg://locseg.conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return objective(cfg, run_job(cfg))


if __name__ == "__main__":
    main()
