"""Every config combination a user is told about composes and instantiates the right classes."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

import locseg.train  # noqa: F401  (registers the locseg_arm resolver)


def compose_cfg(*overrides: str, hydra: bool = False):
    GlobalHydra.instance().clear()
    with initialize_config_module("locseg.conf", version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=hydra)


@pytest.mark.parametrize("phase", ["localize", "segment"])
@pytest.mark.parametrize("experiment", ["demo", "paper", "real", "real_whole"])
@pytest.mark.parametrize("data", ["synthetic", "drions"])
def test_phase_experiment_data_compose(phase, experiment, data):
    cfg = compose_cfg(
        f"+phase={phase}", f"experiment={experiment}", f"data={data}", "paths.output_dir=/tmp/x"
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


def test_real_recipe_segments_disc_crops_and_the_whole_recipe_does_not():
    """experiment=real turns the segment DataModule into the crop one; real_whole keeps photos."""
    from locseg.handoff import ROI_DATAMODULE, roi_overrides

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


def test_logger_none_drops_loggers_and_lr_monitor():
    cfg = compose_cfg("+phase=localize", "logger=none")
    assert cfg.logger is None and cfg.callbacks.lr_monitor is None


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
