"""Collect a sweep's job folders into records: job.json overlaid by metrics.json, with a status.

Reads files only (no numpy, no scipy), so a wrong folder is answered at once.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

__all__ = [
    "ReportError",
    "collect",
    "stale_reason",
    "kept_result_note",
    "JOB_FILE",
    "METRICS_FILE",
    "FAILURE_FILE",
    "ARM_ORDER",
]

JOB_FILE = "job.json"
METRICS_FILE = "metrics.json"
FAILURE_FILE = "failure.json"  # a failed re-run beside a finished metrics.json it kept
STATUSES = ("ok", "failed", "incomplete", "stale")
ARM_ORDER = ["scratch", "localizer-frozen", "localizer-finetune", "localize"]


class ReportError(Exception):
    """The sweep folder cannot be reported on (missing, or holds no job)."""


def _read_json(path: Path) -> tuple[dict | None, str | None]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return None, f"cannot read {path.name}: {exc}"
    if not isinstance(data, dict):
        return None, f"cannot read {path.name}: expected a JSON object, got {type(data).__name__}"
    return data, None


def _infer_arm(rec: dict) -> str:
    """The arm from job.json, or from phase/init/freeze_encoder for jobs written without one."""
    if rec.get("arm"):
        return str(rec["arm"])
    if rec.get("phase") == "localize":
        return "localize"
    if rec.get("init") == "scratch":
        return "scratch"
    if rec.get("init") == "localizer":
        return "localizer-frozen" if rec.get("freeze_encoder") else "localizer-finetune"
    return "unknown"


def _job_dirs(sweep: Path) -> list[Path]:
    names = (JOB_FILE, METRICS_FILE, FAILURE_FILE)
    found = {p.parent for name in names for p in sweep.rglob(name)}
    return sorted(found)


def stale_reason(job_hash: str, metrics_hash: str) -> str:
    """Why a job's metrics.json is not its current result (the sentence the report shows)."""
    return (
        f"job.json has config hash {job_hash}, metrics.json {metrics_hash}: a re-run started "
        "and did not finish; re-run the sweep"
    )


def _stale_hashes(job: dict | None, metrics: dict) -> tuple[str, str] | None:
    """(job hash, metrics hash) when job.json was rewritten by a re-run with another config.

    job.json is written when a job starts, metrics.json when it ends: differing hashes mean the
    metrics belong to an earlier config and the re-run is still running or was killed.
    """
    job_hash = (job or {}).get("config_hash")
    metrics_hash = metrics.get("config_hash")
    if job_hash and metrics_hash and job_hash != metrics_hash:
        return str(job_hash), str(metrics_hash)
    return None


def kept_result_note(rec: dict) -> str:
    """What the report adds to a failed re-run that kept an earlier finished result."""
    if not rec.get("kept_result"):
        return ""
    return (
        f" (its earlier finished result, config hash {rec['kept_result']}, is kept in "
        f"{METRICS_FILE} and not counted)"
    )


def _latest_failure(job_dir: Path) -> dict | None:
    """failure.json when it is newer than metrics.json: the job's last run failed after an
    earlier one had finished (train.py keeps that result rather than overwrite it)."""
    path, metrics_path = job_dir / FAILURE_FILE, job_dir / METRICS_FILE
    if not path.is_file():
        return None
    if metrics_path.is_file() and path.stat().st_mtime < metrics_path.stat().st_mtime:
        return None  # a later run finished: the failure no longer applies
    failure, err = _read_json(path)
    if failure is None:
        return {"status": "failed", "error": err}
    failure.setdefault("kept_result", None)
    return {**failure, "status": "failed", "error": failure.get("error") or "failed re-run"}


def _load_job(job_dir: Path, sweep: Path) -> dict:
    """One record: job.json, overlaid by metrics.json when the job finished; status normalised.

    A failure.json newer than metrics.json (a re-run failed, e.g. in set-up, and kept the
    finished result) makes the record that failure: status failed with its error, the kept
    numbers not counted.
    """
    job, job_err = _read_json(job_dir / JOB_FILE) if (job_dir / JOB_FILE).exists() else ({}, None)
    rec: dict[str, Any] = dict(job or {})
    metrics_path = job_dir / METRICS_FILE
    failure = _latest_failure(job_dir)
    if failure is not None:  # job.json's identity and the failure; never the kept numbers
        rec.update(failure)
    elif metrics_path.exists():
        metrics, err = _read_json(metrics_path)
        stale = _stale_hashes(job, metrics) if metrics is not None else None
        if metrics is None:
            rec.update(status="failed", error=err)
        elif stale is not None:  # keep job.json's identity, never the old numbers
            rec.update(status="stale", error=stale_reason(*stale), metrics_config_hash=stale[1])
        else:
            rec.update(metrics)
            rec["status"] = "ok" if metrics.get("status", "ok") == "ok" else "failed"
            if rec["status"] == "failed" and not rec.get("error"):
                rec["error"] = "job reported status failed without an error message"
        rec["metrics_mtime"] = metrics_path.stat().st_mtime
    elif job_err:
        rec.update(status="failed", error=job_err)
    else:
        rec.update(status="incomplete", error=None)
    rec.setdefault("job", job_dir.name)
    rec["arm"] = _infer_arm(rec)
    rec["dir"] = job_dir.relative_to(sweep).as_posix() or "."
    return rec


def _sort_key(rec: dict) -> tuple:
    arm = rec["arm"]
    arm_rank = ARM_ORDER.index(arm) if arm in ARM_ORDER else len(ARM_ORDER)
    phase_rank = 0 if rec.get("phase") == "localize" else 1
    frac = rec.get("fraction")
    fold = rec.get("fold")
    return (
        phase_rank,
        frac if isinstance(frac, int | float) else math.inf,
        arm_rank,
        arm,
        fold if isinstance(fold, int | float) else math.inf,
        rec["dir"],
    )


def collect(sweep_dir: str | os.PathLike) -> list[dict]:
    """Every job under ``sweep_dir`` (any depth) as a dict with a status from ``STATUSES``.

    A job is a folder holding ``job.json`` (written at start) and/or ``metrics.json`` (written at
    the end). 'stale': the two disagree on the config hash (a re-run did not finish); 'failed':
    metrics.json says so, or a newer ``failure.json`` records a re-run that failed. Raises
    ``ReportError`` if the folder is missing or holds no job.
    """
    sweep = Path(sweep_dir)
    if not sweep.is_dir():
        raise ReportError(
            f"sweep folder {sweep} does not exist (or is not a folder): pass the output folder "
            "of a sweep, e.g. the Hydra multirun directory"
        )
    records = [_load_job(d, sweep) for d in _job_dirs(sweep)]
    if not records:
        raise ReportError(
            f"no job found under {sweep}: no {JOB_FILE} or {METRICS_FILE} in any subfolder; "
            "did the sweep start, and is this its output folder?"
        )
    return sorted(records, key=_sort_key)
