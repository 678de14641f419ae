"""Hydra entry point: ``python -m locseg.train +phase=localize`` or ``+phase=segment``.

Parses the config and runs one job (:func:`locseg.training.job.run_job`: data and model built,
fit, tested, ``metrics.json`` written); a sweeper optimises :func:`objective`.
"""

from __future__ import annotations

import logging
import math

import hydra
from omegaconf import DictConfig, OmegaConf

import locseg  # sets the no-network environment defaults first
from locseg.experiments.sweep import arm_name
from locseg.training.job import run_job

__all__ = ["main", "objective", "run_job"]

log = logging.getLogger("locseg.train")
locseg.quiet_known_noise()
OmegaConf.register_new_resolver("locseg_arm", arm_name, replace=True)
OmegaConf.register_new_resolver("locseg_min", lambda *values: min(values), replace=True)


def objective(cfg: DictConfig, metrics: dict | None) -> float | None:
    """The value a sweeper optimises: the monitored *validation* metric, never a test one.

    None for a failed job and for a diverged one (a NaN or infinite metric): the Optuna sweeper
    records that trial as FAIL and the search goes on (``max_failure_rate: 1.0`` in
    conf/hparams_search). A NaN itself would end the study: Optuna 2 refuses to tell it.
    """
    name = str(cfg.monitor.metric).split("/", 1)[1]
    value = ((metrics or {}).get("val") or {}).get(name)
    if metrics is None or metrics.get("status", "ok") != "ok" or value is None:
        return None
    if not math.isfinite(float(value)):
        log.warning(
            "%s: %s=%s, the trial diverged; a sweep records it as failed",
            cfg.run_name,
            cfg.monitor.metric,
            value,
        )
        return None
    return float(value)


@hydra.main(version_base="1.3", config_path="pkg://locseg.conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return objective(cfg, run_job(cfg))


if __name__ == "__main__":
    main()
