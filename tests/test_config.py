"""Every config combination a user is told about composes and instantiates the right classes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, WandbLogger

import locseg.train  # noqa: F401  (registers the locseg_arm resolver)
from locseg.data import datamodules
from locseg.data.preprocess import PreprocessConfig
from locseg.models.localizer import LocalizerModule
from locseg.models.segmenter import SegmenterModule
from locseg.roi.datamodule import RoiSegmentationDataModule
from locseg.training.handoff import roi_overrides
from locseg.training.job import instantiate_all


def compose_cfg(*overrides: str, hydra: bool = False):
    GlobalHydra.instance().clear()
    with initialize_config_module("locseg.conf", version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=hydra)


@pytest.mark.parametrize("phase", ["localize", "segment"])
@pytest.mark.parametrize(
    "experiment", ["demo", "paper", "real", "real_drions", "real_idrid", "real_whole"]
)
@pytest.mark.parametrize("data", ["synthetic", "drions"])
def test_phase_experiment_data_compose_and_instantiate(
    phase, experiment, data, tmp_path, monkeypatch
):
    """Each ``_target_`` is built as the training job builds it (datamodule, module, callbacks,
    loggers with wandb offline, and the trainer where this machine has its accelerator)."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_cfg(
        f"+phase={phase}",
        f"experiment={experiment}",
        f"data={data}",
        f"paths.output_dir={tmp_path}",
    )
    module = {"localize": "LocalizerModule", "segment": "SegmenterModule"}[phase]
    datamodule = {"localize": "LocalizationDataModule", "segment": "SegmentationDataModule"}[phase]
    assert cfg.model._target_.endswith(module) and cfg.data._target_.endswith(datamodule)
    assert cfg.trainer.max_steps == cfg.steps[phase]
    assert cfg.model.input_size == cfg.data.image_size
    if experiment == "paper":
        assert (cfg.net.depth, cfg.net.base_width, cfg.data.image_size) == (4, 32, 256)
        assert cfg.trainer.accelerator == "gpu"
    OmegaConf.resolve(cfg)  # every interpolation resolves

    built = instantiate(cfg.data, **roi_overrides(cfg))
    crops = phase == "segment" and experiment in ("real", "real_drions", "real_idrid")
    expected_dm = RoiSegmentationDataModule if crops else getattr(datamodules, datamodule)
    assert type(built) is expected_dm
    assert built.preprocess_config == PreprocessConfig(
        image_size=cfg.data.image_size, **cfg.data.preprocess
    )
    assert (built.fold, built.num_folds, built.name) == (0, cfg.data.num_folds, data)
    model = instantiate(cfg.model, preprocess=built.signature())
    assert type(model) is {"localize": LocalizerModule, "segment": SegmenterModule}[phase]
    assert model.hparams.input_size == cfg.data.image_size
    assert model.hparams.preprocess == built.signature()
    assert (model.hparams.depth, model.hparams.base_width) == (cfg.net.depth, cfg.net.base_width)
    assert len(model.encoder.levels) == cfg.net.depth
    callbacks = instantiate_all(cfg.callbacks)
    kinds = {type(c) for c in callbacks}
    assert {ModelCheckpoint, EarlyStopping, LearningRateMonitor} <= kinds
    checkpoint = next(c for c in callbacks if isinstance(c, ModelCheckpoint))
    assert checkpoint.monitor == cfg.monitor.metric and Path(checkpoint.dirpath).parent == tmp_path
    loggers = instantiate_all(cfg.logger)
    assert {type(lg) for lg in loggers} == {WandbLogger, CSVLogger}
    wandb = next(lg for lg in loggers if isinstance(lg, WandbLogger))
    assert wandb._wandb_init["mode"] == "offline"
    if cfg.trainer.accelerator in ("cpu", "auto") or torch.cuda.is_available():
        trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
        assert trainer.max_steps == cfg.steps[phase]
        assert trainer.checkpoint_callback is checkpoint


def test_real_recipe_segments_disc_crops_and_the_whole_recipe_does_not():
    """experiment=real turns the segment DataModule into the crop one; real_whole keeps photos."""
    from locseg.training.handoff import ROI_DATAMODULE, roi_overrides

    real = compose_cfg("+phase=segment", "experiment=real", "data=drions")
    assert roi_overrides(real) == {"_target_": ROI_DATAMODULE, "roi": real.roi}
    assert (real.roi.side_diameters, real.net.base_width, real.model.scheduler) == (
        2.0,
        16,
        "cosine",
    )
    whole = compose_cfg("+phase=segment", "experiment=real_whole", "data=drions")
    assert whole.get("roi") is None and roi_overrides(whole) == {}
    localize = compose_cfg("+phase=localize", "experiment=real", "data=drions")
    assert roi_overrides(localize) == {}, "the localizer always sees whole photographs"
    assert localize.net.base_width == real.net.base_width, "the encoder must fit the segmenter"


@pytest.mark.parametrize(
    ("init", "freeze", "arm"),
    [
        ("scratch", True, "scratch"),
        ("localizer", True, "localizer-frozen"),
        ("localizer", False, "localizer-finetune"),
    ],
)
def test_arm_names(init, freeze, arm):
    cfg = compose_cfg("+phase=segment", f"model.init={init}", f"model.freeze_encoder={freeze}")
    assert cfg.arm == arm


def test_logger_none_drops_loggers_and_lr_monitor(tmp_path):
    cfg = compose_cfg("+phase=localize", "logger=none", f"paths.output_dir={tmp_path}")
    assert cfg.logger is None and cfg.callbacks.lr_monitor is None
    assert instantiate_all(cfg.logger) == []
    callbacks = instantiate_all(cfg.callbacks)
    assert callbacks and not any(isinstance(c, LearningRateMonitor) for c in callbacks)
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=False)
    assert trainer.loggers == []


def test_wandb_is_offline_by_default(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = compose_cfg("+phase=localize", "paths.output_dir=/tmp/x")
    assert cfg.logger.wandb.mode == "offline"


@pytest.mark.parametrize(
    ("launcher", "target"),
    [("joblib", "JoblibLauncher"), ("submitit_local", "LocalLauncher"), ("slurm", "SlurmLauncher")],
)
def test_launchers_compose(launcher, target):
    cfg = compose_cfg("+phase=segment", f"hydra/launcher={launcher}", hydra=True)
    assert cfg.hydra.launcher._target_.endswith(target)


def test_sweep_templates_compose():
    cfg = compose_cfg("+sweep=segment", "sweep_dir=/tmp/s", hydra=True)
    assert cfg.phase == "segment"
    assert cfg.hydra.sweeper.params["init"] == "scratch,localizer-frozen,localizer-finetune"
    assert cfg.hydra.sweep.subdir == "segment/frac_1.0/fold_0/scratch"
    finetune = compose_cfg("+sweep=segment", "init=localizer-finetune", hydra=True)
    assert finetune.model.freeze_encoder is False and finetune.arm == "localizer-finetune"
    frozen = compose_cfg("+phase=segment", "init=localizer-frozen")
    assert frozen.model.init == "localizer" and frozen.arm == "localizer-frozen"
