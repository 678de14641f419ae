"""Job identity and bookkeeping for sweeps: config hash, skip-if-done, encoder lookup per fold.

Every job writes ``job.json`` when it starts and ``metrics.json`` when it ends (status ok or
failed), both atomically. A killed job therefore leaves a ``job.json`` alone, which the report
calls incomplete, and a re-run of the sweep redoes exactly the jobs without a finished result.
A re-run that fails where ``metrics.json`` holds a finished result keeps that result and writes
its failure beside it (``failure.json``), which the report shows with its error; the next
finished or skipped-as-done run of the job removes it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from locseg.io import write_json_atomic

JOB_FILE = "job.json"
METRICS_FILE = "metrics.json"
FAILURE_FILE = "failure.json"
ENCODER_FILE = "encoder.pt"
# Keys that change where or how loudly a job runs, not what it computes (also: any key "*dir").
_NOT_IDENTITY = {"paths", "logger", "hydra", "skip_done", "run_name"}


def arm_name(init: str, freeze_encoder: bool) -> str:
    """The experimental arm of a segment job: scratch, localizer-frozen or localizer-finetune."""
    if init == "scratch":
        return "scratch"
    return f"{init}-{'frozen' if freeze_encoder else 'finetune'}"


def _identity(node):
    if isinstance(node, dict):
        return {
            k: _identity(v)
            for k, v in node.items()
            if k not in _NOT_IDENTITY and not str(k).endswith("dir")
        }
    return node


def config_hash(cfg: DictConfig) -> str:
    """A short hash of the resolved config, without run-location keys (folders, loggers)."""
    identity = _identity(OmegaConf.to_container(cfg, resolve=True))
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def job_identity(config_digest: str, identity: dict) -> str:
    """The config hash combined with what the config does not show (folds, cache, encoder)."""
    text = json.dumps({"config": config_digest, **identity}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _stored_metrics(run_dir: Path) -> dict | None:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return metrics if isinstance(metrics, dict) else None


def finished_result(run_dir: Path, expected_hash: str) -> dict | None:
    """The stored metrics if this run dir already holds a successful job with the same hash.

    That result is then the job's current one: a failure recorded by an earlier re-run of
    another config (``failure.json``) no longer applies and is removed.
    """
    metrics = _stored_metrics(run_dir)
    if metrics is None:
        return None
    if metrics.get("status") == "ok" and metrics.get("config_hash") == expected_hash:
        clear_failure(run_dir)
        return metrics
    return None


def write_job(run_dir: Path, job: dict) -> None:
    write_json_atomic(Path(run_dir) / JOB_FILE, job)


def write_metrics(run_dir: Path, metrics: dict) -> None:
    """The job's result; a finished one supersedes any earlier failure (``failure.json``)."""
    write_json_atomic(Path(run_dir) / METRICS_FILE, metrics)
    if metrics.get("status") == "ok":
        clear_failure(run_dir)


def write_failure(run_dir: Path, failed: dict) -> Path:
    """Record a failed job without losing a finished result.

    ``metrics.json`` when it holds no finished (status ok) result; otherwise the finished result
    stays and the failure goes beside it in ``failure.json`` (what the report shows as the job's
    state, with its error). Returns the file written.
    """
    stored = _stored_metrics(run_dir)
    if stored is not None and stored.get("status") == "ok":
        path = Path(run_dir) / FAILURE_FILE
        write_json_atomic(path, {**failed, "kept_result": stored.get("config_hash")})
        return path
    write_metrics(run_dir, failed)
    clear_failure(run_dir)
    return Path(run_dir) / METRICS_FILE


def clear_failure(run_dir: Path) -> None:
    (Path(run_dir) / FAILURE_FILE).unlink(missing_ok=True)


def encoder_candidates(sweep_dir: Path, fold: int) -> list[Path]:
    """Where a sweep keeps the localizer for ``fold``: its own, else the one shared by all folds."""
    root = Path(sweep_dir) / "localize"
    return [root / f"fold_{fold}" / ENCODER_FILE, root / "shared" / ENCODER_FILE]


def find_encoder(sweep_dir: str | Path | None, fold: int) -> Path:
    """Locate a segment job's encoder checkpoint from the sweep layout; fail fast if absent."""
    if sweep_dir is None:
        raise FileNotFoundError(
            "model.init=localizer needs an encoder: set model.encoder_ckpt=RUN/encoder.pt, or "
            "sweep_dir=SWEEP where SWEEP/localize/ holds a localizer run (see multirun_templates/)."
        )
    candidates = encoder_candidates(Path(sweep_dir), fold)
    for path in candidates:
        if path.is_file():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise FileNotFoundError(
        f"no encoder checkpoint for fold {fold}: tried {tried}. Run the localization sweep first: "
        f"python -m locseg.train -m +sweep=localize sweep_dir={sweep_dir} (or localize_per_fold)."
    )
