"""Hydra entry point: ``python -m locseg.train +phase=localize`` or ``+phase=segment``.

The only place where data and models meet: the config names a DataModule and a LightningModule,
this file builds both, fits, tests the best checkpoint and writes ``metrics.json`` atomically.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
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

import locseg  # noqa: F401  (sets the no-network environment defaults first)
from locseg.experiments.sweep import (
    ENCODER_FILE,
    arm_name,
    config_hash,
    find_encoder,
    finished_result,
    write_job,
    write_metrics,
)
from locseg.io import write_text_atomic
from locseg.models.encoder_io import load_encoder_checkpoint, save_encoder

log = logging.getLogger("locseg.train")
# Expected and harmless here: a frozen encoder is in eval mode on purpose; tiny folds have fewer
# batches than the logging interval; a deprecation inside Lightning itself.
for message in (
    r".*module\(s\) in eval mode at the start of training.*",
    r".*is smaller than the logging interval.*",
    r".*isinstance\(treespec, LeafSpec\).*",
    r".*does not have many workers.*",
):
    warnings.filterwarnings("ignore", message=message)
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


def resolve_encoder(cfg: DictConfig) -> Path:
    """The encoder checkpoint of a localizer-initialised segment job, checked for leakage."""
    path = Path(cfg.model.encoder_ckpt or find_encoder(cfg.sweep_dir, cfg.data.fold))
    extra = load_encoder_checkpoint(path).get("extra") or {}
    if extra.get("per_fold") and extra.get("fold") != cfg.data.fold:
        raise ValueError(
            f"{path}: this localizer was trained for fold {extra.get('fold')} and saw the test "
            f"images of fold {cfg.data.fold}. Use the encoder of fold {cfg.data.fold} "
            f"(localize with data.fold={cfg.data.fold})."
        )
    return path


def build_model(cfg: DictConfig, datamodule) -> pl.LightningModule:
    overrides = {"preprocess": datamodule.signature()}
    if cfg.phase == "segment" and cfg.model.init == "localizer":
        overrides["encoder_ckpt"] = str(resolve_encoder(cfg))
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


def train(cfg: DictConfig, run_dir: Path) -> dict:
    """Fit, evaluate the best checkpoint on val and test, hand the encoder on."""
    pl.seed_everything(cfg.seed, workers=True)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = build_model(cfg, datamodule)
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
    if cfg.phase == "localize" and trainer.is_global_zero:
        extra = {
            "per_fold": datamodule.per_fold,
            "fold": int(cfg.data.fold),
            "dataset": cfg.data.name,
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
    return result


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_job(cfg: DictConfig) -> dict | None:
    """One job with its bookkeeping: skip if done, record start, write metrics, always close W&B."""
    run_dir = Path(cfg.paths.output_dir)
    digest = config_hash(cfg)
    done = finished_result(run_dir, digest) if cfg.skip_done else None
    if done is not None:
        log.info("skipping %s: %s already holds its result", cfg.run_name, run_dir)
        return done
    print_config_tree(cfg, run_dir / "config_resolved.yaml")
    job = job_record(cfg, run_dir, digest)
    write_job(run_dir, job)
    start = time.perf_counter()
    try:
        metrics = {**job, "status": "ok", "error": None, **train(cfg, run_dir)}
    except Exception as error:
        failed = {**job, "status": "failed", "error": f"{type(error).__name__}: {error}"}
        write_metrics(run_dir, {**failed, "wall_time_s": time.perf_counter() - start})
        if not in_multirun():
            raise
        log.exception("job %s failed; the sweep goes on", cfg.run_name)
        return None
    finally:
        close_wandb()
    metrics["wall_time_s"] = time.perf_counter() - start
    if _is_rank_zero():  # under DDP every process runs this job; one writes the result
        write_metrics(run_dir, metrics)
    log.info("%s: test %s -> %s", cfg.run_name, _headline(metrics), run_dir / "metrics.json")
    return metrics


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


@hydra.main(version_base="1.3", config_path="pkg://locseg.conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = run_job(cfg)
    return None if metrics is None else metrics.get("test", {}).get("dice")


if __name__ == "__main__":
    main()
