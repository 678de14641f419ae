"""Fake sweeps for the report tests: job.json and metrics.json written by hand, no training."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

PER_IMAGE_OFFSETS = (-0.02, 0.0, 0.01, 0.01)  # per-image Dice = fold Dice + offset


def job_record(name: str, phase: str, fold: int, fraction: float, arm: str, run_dir: Path) -> dict:
    """What train.py writes to job.json at the start of a job."""
    init = {"scratch": "scratch", "localize": None}.get(arm, "localizer")
    freeze = None if phase == "localize" else arm == "localizer-frozen"
    return {
        "job": name,
        "phase": phase,
        "fold": fold,
        "fraction": fraction,
        "init": init,
        "freeze_encoder": freeze,
        "arm": arm,
        "config_hash": f"hash-{name}",
        "run_dir": str(run_dir),
    }


def write_job(run_dir: Path, job: dict, metrics: dict | None) -> None:
    """job.json, and metrics.json (job fields + ``metrics``) unless ``metrics`` is None."""
    run_dir.mkdir(parents=True)
    (run_dir / "job.json").write_text(json.dumps(job))
    if metrics is not None:
        (run_dir / "metrics.json").write_text(json.dumps({**job, **metrics}))


def md_table(text: str, heading: str) -> list[dict[str, str]]:
    """Rows of the first markdown table after ``heading``, as dicts keyed by the header."""
    lines = text.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    header, body = rows[0], rows[2:]
    return [dict(zip(header, row, strict=True)) for row in body]


def write_segment_sweep(
    root: Path,
    dice: Mapping[tuple[float, str, int], float],
    n_train: Mapping[float, int],
    n_test: int = 8,
    native: Mapping[tuple[float, str, int], float] | None = None,
    identity: Mapping[str, str] | None = None,
    image_prefix: str = "img",
) -> Path:
    """One finished segment job per (fraction, arm, fold) of ``dice``, under root/segment/I.

    ``native`` adds ``test.dice_native`` and ``per_image_test_dice_native`` for the keys it holds.
    ``identity`` is what train.py records beyond the config (splits, cache, localizer);
    ``image_prefix`` names the test images (another prefix: other test images).
    """
    for i, ((fraction, arm, fold), value) in enumerate(sorted(dice.items())):
        run_dir = root / "segment" / f"{i}"
        test = {"dice": value, "iou": value - 0.1}
        metrics = {
            "status": "ok",
            "error": None,
            "n_train": n_train[fraction],
            "n_val": 4,
            "n_test": n_test,
            "per_image_test_dice": per_image(value, fold, image_prefix),
        }
        if native is not None and (fraction, arm, fold) in native:
            test["dice_native"] = native[(fraction, arm, fold)]
            metrics["per_image_test_dice_native"] = per_image(native[(fraction, arm, fold)], fold)
        name = f"seg-{arm}-{fraction}-{fold}"
        job = job_record(name, "segment", fold, fraction, arm, run_dir)
        if identity is not None:
            job["identity"] = dict(identity)
        write_job(run_dir, job, {**metrics, "test": test})
    return root


def per_image(fold_dice: float, fold: int, prefix: str = "img") -> dict[str, float]:
    return {f"{prefix}{fold}{i}": fold_dice + off for i, off in enumerate(PER_IMAGE_OFFSETS)}
