"""One training job: data and model built from the config, fit, tested, recorded.

The only place where data and models meet: the config names a DataModule and a LightningModule,
:func:`run_job` builds both, fits, tests the best checkpoint and writes ``metrics.json``
atomically (``python -m locseg.train`` is its command line).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

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

import locseg
from locseg.evaluation.postprocess import switch_options
from locseg.evaluation.scoring import add_native_metrics, localizer_facts, stage_metrics
from locseg.experiments.environment import environment
from locseg.experiments.sweep import (
    ENCODER_FILE,
    config_hash,
    finished_result,
    job_identity,
    write_failure,
    write_job,
    write_metrics,
)
from locseg.io import write_text_atomic
from locseg.training.handoff import (
    file_sha256,
    hand_on_encoder,
    resolve_encoder,
    roi_overrides,
    set_roi_test_centres,
)

log = logging.getLogger("locseg.train")


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
    validated = trainer.validate(model, datamodule=datamodule, ckpt_path=ckpt_path)
    skipped = datamodule.test_skipped  # a crop-scale localizer: never on a whole photograph
    tested = None if skipped else trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path)
    result = {
        "val": stage_metrics(validated, "val"),
        "test": None if skipped else stage_metrics(tested, "test"),
        "best_checkpoint": best.best_model_path if ckpt_path else None,
        "epochs": trainer.current_epoch,
        **datamodule.counts(),
    }
    if skipped:
        result["test_skipped"] = skipped
    if cfg.phase == "localize":
        result.update(localizer_facts(trainer, model, datamodule, ckpt_path, run_dir))
    if cfg.phase == "localize" and trainer.is_global_zero:
        result["encoder"] = str(hand_on_encoder(run_dir / ENCODER_FILE, model, datamodule, cfg))
    if cfg.phase == "segment":
        per_image = model.test_per_image_dice
        result["per_image_test_dice"] = {
            datamodule.id_of(i): d for i, d in sorted(per_image.items())
        }
        if trainer.is_global_zero:
            add_native_metrics(result, model, datamodule, cfg.get("postprocess"), localizer)
    return result


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
    metrics["environment"] = environment()  # what "same seed, same numbers" depends on
    if _is_rank_zero():  # under DDP every process runs this job; one writes the result
        write_metrics(run_dir, metrics)
    log.info("%s: test %s -> %s", cfg.run_name, _headline(metrics), run_dir / "metrics.json")
    return metrics


def job_failed(cfg: DictConfig, run_dir: Path, job: dict, error: Exception, start: float) -> None:
    """Record the failure; re-raise it in a single run, let a sweep go on.

    A finished result already in ``run_dir`` (e.g. a re-run refused by the splits) is kept: the
    failure goes beside it (:func:`~locseg.experiments.sweep.write_failure`).
    """
    failed = {**job, "status": "failed", "error": f"{type(error).__name__}: {error}"}
    write_failure(run_dir, {**failed, "wall_time_s": time.perf_counter() - start})
    if not in_multirun():
        raise error
    log.exception("job %s failed; the sweep goes on", cfg.run_name, exc_info=error)
    return None


def _headline(metrics: dict) -> str:
    if metrics.get("test_skipped"):  # a crop-scale localizer: its validation error instead
        return f"not tested, val dist_px={metrics['val'].get('dist_px', math.nan):.4f}"
    test = metrics.get("test") or {}
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
