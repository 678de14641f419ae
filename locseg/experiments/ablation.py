"""An ablation across sweeps: which localizer (head, pool) makes which arm beat scratch.

Each sweep is one localizer variant (its own localize runs and localizer arms); the scratch arm
runs once, in the baseline sweep, on the same folds, and every variant is paired with it by fold.
Pairing is refused (:class:`AblationError`) unless the paired jobs share what their identity
records beyond the config: the folds (splits hash, and each fold's test images), the cached
pixels (dataset content and preprocessing) and the localizer placing test crops (``roi``).
Reads ``metrics.json`` files only, like the report.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from locseg.experiments.report.analyse import (
    choose_dice_metric,
    finite,
    localizer_tests,
)
from locseg.experiments.report.collect import collect
from locseg.experiments.report.fmt import fmt_fraction, fmt_p
from locseg.experiments.stats import holm_adjust, nadeau_bengio_ttest, signed_stars

BASELINE_ARM = "scratch"
# What a job's identity (train.py) records beyond its config that pairing needs equal.
IDENTITY_FACTS = {
    "splits": "folds (splits hash)",
    "cache": "data (cache: dataset content and preprocessing)",
    "localizer": "localizer placing the test crops (its checkpoint's sha256)",
}


class AblationError(ValueError):
    """Sweeps that cannot be paired: other folds, data or test-crop localizer."""


@dataclass
class Cell:
    mean: float
    std: float
    delta: float  # mean paired difference to scratch over folds
    p: float  # Nadeau-Bengio
    p_holm: float = math.nan


def _segment_jobs(records: list[dict], key: str) -> dict[tuple[float, str, int], dict]:
    return {
        (float(r["fraction"]), r["arm"], int(r["fold"])): r
        for r in records
        if r["status"] == "ok" and r.get("phase") == "segment" and finite(r["test"].get(key))
    }


def localizer_error(records: list[dict]) -> dict[str, float]:
    """Mean test error over folds, in % of image width, beside both constant baselines."""
    tests = [
        t
        for r in records
        if r["status"] == "ok" and r.get("phase") == "localize"
        for t in localizer_tests(r)
    ]
    out = {}
    for key in ("dist_frac_width", "dist_px", "baseline_dist_px", "image_centre_dist_px"):
        values = [float(t[key]) for t in tests if finite(t.get(key))]
        out[key] = float(np.mean(values)) if values else math.nan
    return out


def _cell(jobs, base, fraction, arm) -> Cell | None:
    folds = sorted({f for fr, a, f in jobs if fr == fraction and a == arm} & set(base))
    if not folds:
        return None
    a = np.array([jobs[(fraction, arm, f)]["test"]["_dice"] for f in folds])
    b = np.array([base[f]["test"]["_dice"] for f in folds])
    n_train = np.mean([jobs[(fraction, arm, f)].get("n_train", math.nan) for f in folds])
    n_test = np.mean([jobs[(fraction, arm, f)].get("n_test", math.nan) for f in folds])
    ok = len(folds) >= 2 and n_train > 0 and n_test > 0
    p = nadeau_bengio_ttest(a - b, n_train, n_test).pvalue if ok else math.nan
    return Cell(
        float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0, float((a - b).mean()), p
    )


def _short(values: set) -> str:
    """The values side by side; a sha256 (64 hex digits) by its first 12."""
    shown = sorted(
        "none" if v is None else str(v)[:12] if len(str(v)) == 64 else str(v) for v in values
    )
    return ", ".join(shown) if shown else "none"


def _test_ids(jobs: list[dict]) -> dict[int, set[frozenset]]:
    """Each fold's test images, from the per-image Dice every segment job records."""
    by_fold: dict[int, set[frozenset]] = defaultdict(set)
    for job in jobs:
        ids = job.get("per_image_test_dice") or job.get("per_image_test_dice_native")
        if ids:
            by_fold[int(job["fold"])].add(frozenset(ids))
    return by_fold


def comparability(
    sweeps: Mapping[str, Path], records: Mapping[str, list[dict]], baseline: str
) -> list[str]:
    """Why each sweep's arms cannot be paired with the baseline's scratch arm (empty: they can).

    A job's identity (job.json) holds the splits hash, the cache and, with ``roi``, the sha256
    of the localizer whose centres place the test crops; a fact a job does not record (older
    runs) is not compared. Test images are compared fold by fold.
    """
    scratch = [r for r in _ok_segment(records[baseline]) if r["arm"] == BASELINE_ARM]
    base_where = f"{baseline} ({sweeps[baseline]}) scratch"
    problems = []
    for label, recs in records.items():
        arms = [r for r in _ok_segment(recs) if r["arm"] != BASELINE_ARM]
        if not arms or not scratch:
            continue
        where = f"{label} ({sweeps[label]})"
        for key, what in IDENTITY_FACTS.items():
            recorded = [r for r in arms + scratch if key in (r.get("identity") or {})]
            if not recorded:
                continue
            mine = {(r.get("identity") or {}).get(key) for r in arms}
            theirs = {(r.get("identity") or {}).get(key) for r in scratch}
            if mine != theirs:
                problems.append(
                    f"{where} and {base_where} differ in {what}: {_short(mine)} vs {_short(theirs)}"
                )
        mine_ids, base_ids = _test_ids(arms), _test_ids(scratch)
        for fold in sorted(set(mine_ids) & set(base_ids)):
            if mine_ids[fold] != base_ids[fold]:
                problems.append(
                    f"{where} and {base_where} differ in the test images of fold {fold}"
                )
    return problems


def _ok_segment(records: list[dict]) -> list[dict]:
    return [r for r in records if r["status"] == "ok" and r.get("phase") == "segment"]


def ablation(sweeps: Mapping[str, Path], baseline: str) -> tuple[list[dict], str]:
    """One row per (variant, arm) with a cell per fraction; p-values Holm-adjusted over all.

    Raises :class:`AblationError` naming the sweeps and what differs when a variant's arms
    cannot be paired with the baseline's scratch arm (see :func:`comparability`).
    """
    records = {label: collect(path) for label, path in sweeps.items()}
    problems = comparability(sweeps, records, baseline)
    if problems:
        raise AblationError(
            "these sweeps cannot be paired fold by fold:\n  - "
            + "\n  - ".join(problems)
            + "\nRun every sweep on the same data, folds (data.num_folds, data.split_seed) and "
            "test-crop localizer (roi.localizer_ckpt), or leave the odd sweep out."
        )
    everything = [r for recs in records.values() for r in recs]
    metric, _ = choose_dice_metric(everything)
    for r in everything:
        if r["status"] == "ok" and r.get("phase") == "segment":
            r["test"]["_dice"] = r["test"].get(metric.key)
    base_jobs = _segment_jobs(records[baseline], "_dice")
    fractions = sorted({fr for fr, _, _ in base_jobs})
    scratch = defaultdict(dict)
    for (fr, arm, fold), job in base_jobs.items():
        if arm == BASELINE_ARM:
            scratch[fr][fold] = job
    rows = []
    for label, recs in records.items():
        jobs = _segment_jobs(recs, "_dice")
        arms = sorted({a for _, a, _ in jobs} - {BASELINE_ARM})
        for arm in arms:
            cells = {fr: _cell(jobs, scratch[fr], fr, arm) for fr in fractions}
            rows.append({"variant": label, "arm": arm, "cells": cells, **localizer_error(recs)})
    rows.append(
        {
            "variant": "-",
            "arm": BASELINE_ARM,
            "cells": {fr: _cell(base_jobs, scratch[fr], fr, BASELINE_ARM) for fr in fractions},
        }
    )
    cells = [c for row in rows[:-1] for c in row["cells"].values() if c is not None]
    for cell, adjusted in zip(cells, holm_adjust([c.p for c in cells]), strict=True):
        cell.p_holm = float(adjusted)
    return rows, metric.label


def render(rows: list[dict], metric_label: str) -> str:
    fractions = sorted({fr for row in rows for fr in row["cells"]})
    header = ["localizer (variant)", "error % width", "arm"] + [fmt_fraction(f) for f in fractions]
    lines = [
        f"Test {metric_label}, mean ± std over folds; Δ = paired difference to scratch; marks: "
        "Nadeau-Bengio corrected t-test, Holm-adjusted over the table (+ better, − worse: "
        "* p<0.05, ** p<0.01, *** p<0.001).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * len(header)) + "|",
    ]
    for row in rows:
        error = row.get("dist_frac_width", math.nan)
        cells = []
        for fr in fractions:
            c = row["cells"].get(fr)
            if c is None:
                cells.append("n/a")
            elif row["arm"] == BASELINE_ARM:
                cells.append(f"{c.mean:.3f} ± {c.std:.3f}")
            else:
                mark = signed_stars(c.p_holm, c.delta) or "ns"
                cells.append(
                    f"{c.mean:.3f} ± {c.std:.3f} (Δ {c.delta:+.3f} {mark}, p {fmt_p(c.p)})"
                )
        err = f"{100 * error:.1f}%" if finite(error) else ""
        lines.append("| " + " | ".join([row["variant"], err, row["arm"], *cells]) + " |")
    return "\n".join(lines) + "\n"
