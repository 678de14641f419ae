"""Choose a recipe on a tuning sweep: rank its variants by one metric, pick the best.

The rule this serves (docs/recipe.md): no image that any reported fold tests on enters a choice.
A tuning sweep therefore runs on *another* dataset than the one the recipe is reported on
(``make tune-drions`` tunes DRIONS-DB's recipe on idrid-od and ``make tune-idrid`` the other
way round), so its jobs may be scored on any of their own images, test folds included.

A variant is what a job was given on the command line (Hydra's ``.hydra/overrides.yaml``) and
differs between the sweep's jobs, except the keys a variant is averaged over (``AVERAGED``: folds,
label budgets, seeds); the keys every job shares are the sweep's common ground.
Reads files only, like the report.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import yaml

from locseg.experiments.report.collect import ReportError, collect

__all__ = ["AVERAGED", "Variant", "rank_variants", "render", "chosen_overrides"]

AVERAGED = ("data.fold", "data.fraction", "data.n_masks", "data.draw", "seed")


@dataclass(frozen=True)
class Variant:
    """One grid point: its overrides, the metric's mean over its jobs, and what it cost."""

    overrides: tuple[tuple[str, str], ...]
    score: float
    jobs: int
    failed: int
    wall_s: float

    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.overrides) or "(no override)"


def _overrides(job_dir: Path) -> dict[str, str]:
    """The job's command-line overrides, as Hydra recorded them (``key=value`` strings)."""
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        raise ReportError(
            f"{path} is missing: a tuning sweep must be a Hydra multirun (python -m locseg.train "
            "-m +sweep=tune ...), whose jobs record their overrides there"
        )
    items = yaml.safe_load(path.read_text()) or []
    return dict(str(item).split("=", 1) for item in items if "=" in str(item))


def _metric(record: dict, metric: str) -> float:
    value: object = record
    for part in metric.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return float(value) if isinstance(value, int | float) else math.nan


def rank_variants(
    sweep_dir: Path, metric: str = "test.dice_native", averaged: tuple[str, ...] = AVERAGED
) -> list[Variant]:
    """Every variant of the sweep, best first (highest mean ``metric``; ties: cheaper first).

    A variant's score is the mean over its jobs, which differ only in the ``averaged`` keys.

    Failed jobs count against a variant: it is ranked only on complete evidence, and a variant
    with any failed or unfinished job goes last (its score is NaN).
    """
    records = [r for r in collect(sweep_dir) if r.get("phase") == "segment"]
    if not records:
        raise ReportError(f"no segment job under {sweep_dir}: run the tuning sweep first")
    given = {r["dir"]: _overrides(Path(sweep_dir) / r["dir"]) for r in records}
    keys = sorted({k for o in given.values() for k in o})
    varying = [k for k in keys if k not in averaged and len({o.get(k) for o in given.values()}) > 1]
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for rec in records:
        groups[tuple((k, given[rec["dir"]].get(k, "")) for k in varying)].append(rec)
    variants = []
    for overrides, recs in groups.items():
        scores = [_metric(r, metric) for r in recs if r["status"] == "ok"]
        failed = len(recs) - len(scores)
        complete = failed == 0 and all(math.isfinite(s) for s in scores)
        variants.append(
            Variant(
                overrides=overrides,
                score=sum(scores) / len(scores) if complete else math.nan,
                jobs=len(recs),
                failed=failed,
                wall_s=sum(float(r.get("wall_time_s") or 0.0) for r in recs),
            )
        )
    return sorted(variants, key=lambda v: (math.isnan(v.score), -v.score, v.wall_s))


def chosen_overrides(variants: list[Variant]) -> dict[str, str]:
    """The best variant's overrides; refuses when no variant finished every job."""
    if not variants or math.isnan(variants[0].score):
        raise ReportError("no variant finished all of its jobs: nothing to choose")
    return dict(variants[0].overrides)


def render(variants: list[Variant], metric: str, sweep_dir: Path) -> str:
    """A markdown table, best first, with the chosen variant in bold."""
    lines = [
        f"# Tuning sweep {sweep_dir}",
        "",
        f"Ranked by the mean `{metric}` over each variant's jobs (best first).",
        "",
        f"| variant | {metric} | jobs | failed | s |",
        "|---|---:|---:|---:|---:|",
    ]
    for i, v in enumerate(variants):
        score = "n/a" if math.isnan(v.score) else f"{v.score:.4f}"
        label = f"**{v.label()}**" if i == 0 and not math.isnan(v.score) else v.label()
        lines.append(f"| {label} | {score} | {v.jobs} | {v.failed} | {v.wall_s:.0f} |")
    return "\n".join(lines) + "\n"
