"""Aggregate collected records: Dice per (fraction, arm), paired tests, localizer error.

Significance marks come from one place: the Nadeau-Bengio corrected resampled t-test over folds,
Holm-adjusted across every comparison of the report (all fractions and arms). The plain fold-paired
and per-image tests are kept for the tables, unmarked.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from locseg.experiments.report.collect import ARM_ORDER
from locseg.experiments.stats import (
    TestResult,
    holm_adjust,
    nadeau_bengio_ttest,
    paired_ttest,
    signed_stars,
    wilcoxon_paired,
)

__all__ = [
    "DiceMetric",
    "NATIVE_DICE",
    "INPUT_DICE",
    "ArmSummary",
    "Comparison",
    "Report",
    "choose_dice_metric",
    "build_report",
    "finite",
]

NAN = math.nan
MARK_TEST = "Nadeau-Bengio corrected resampled t-test over folds, Holm-adjusted"


@dataclass(frozen=True)
class DiceMetric:
    """Which Dice the report compares: where it is in metrics.json and how to name it."""

    key: str  # in metrics.json["test"]
    per_image_key: str  # {image id: Dice} in metrics.json
    label: str


NATIVE_DICE = DiceMetric("dice_native", "per_image_test_dice_native", "Dice at native resolution")
INPUT_DICE = DiceMetric("dice", "per_image_test_dice", "Dice at network input resolution")


@dataclass
class ArmSummary:
    """Test Dice of one arm at one fraction over its finished folds."""

    fold_dice: dict[Any, float]
    mean: float
    std: float

    @property
    def n(self) -> int:
        return len(self.fold_dice)


@dataclass
class Comparison:
    """One non-baseline arm against the baseline arm at one fraction.

    ``nb_holm`` is the Nadeau-Bengio p-value after Holm's adjustment over the whole report: the
    one the stars use.
    """

    fraction: float
    arm: str
    folds: TestResult
    nadeau_bengio: TestResult
    images_t: TestResult
    images_wilcoxon: TestResult
    n_train: float
    n_test: float
    nb_holm: float = NAN

    @property
    def mark(self) -> str:
        """'+*' better, '\u2212*' worse, 'ns', or '' when the test could not run."""
        return signed_stars(self.nb_holm, self.nadeau_bengio.mean_diff)

    @property
    def verdict(self) -> str:
        """The mark in words: 'better', 'worse', 'no significant difference' or 'not tested'."""
        mark = self.mark
        if not mark:
            return "not tested"
        if mark == "ns":
            return "no significant difference"
        return "better" if mark.startswith("+") else "worse"


@dataclass
class Report:
    records: list[dict]
    baseline_arm: str
    arms: list[str]
    fractions: list[float]
    dice: dict[tuple[float, str], ArmSummary]
    comparisons: list[Comparison]
    localizer: list[dict]
    metric: DiceMetric = INPUT_DICE
    metric_note: str = ""
    budget: dict[float, dict[str, tuple[float, float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def by_status(self, status: str) -> list[dict]:
        return [r for r in self.records if r["status"] == status]


def finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    mean = float(arr.mean()) if arr.size else NAN
    std = float(arr.std(ddof=1)) if arr.size > 1 else NAN
    return mean, std


def _frac_key(fraction: Any) -> float:
    """Fractions from configs may carry float noise (0.30000000000000004): group on 6 decimals."""
    return round(float(fraction), 6) if finite(fraction) else NAN


def _is_segment_ok(rec: dict) -> bool:
    return rec["status"] == "ok" and rec.get("phase") != "localize" and rec["arm"] != "localize"


def _test_value(rec: dict, key: str) -> Any:
    return (rec.get("test") or {}).get(key)


def choose_dice_metric(records: list[dict]) -> tuple[DiceMetric, str]:
    """The native Dice when every finished segment job wrote it, else the network-input Dice.

    Mixing the two would compare numbers measured on different pixel grids, so one job without
    ``test.dice_native`` sends the whole report back to ``test.dice``. Returns the metric and a
    sentence for the report when it had to fall back.
    """
    jobs = [
        r
        for r in records
        if _is_segment_ok(r)
        and any(finite(_test_value(r, m.key)) for m in (NATIVE_DICE, INPUT_DICE))
    ]
    lacking = [r for r in jobs if not finite(_test_value(r, NATIVE_DICE.key))]
    if jobs and not lacking:
        return NATIVE_DICE, ""
    if not jobs or len(lacking) == len(jobs):
        return INPUT_DICE, ""
    return INPUT_DICE, (
        f"{len(lacking)} of {len(jobs)} finished segment jobs have no `test.{NATIVE_DICE.key}` "
        f"(e.g. `{lacking[0]['dir']}`), so every job is compared on `test.{INPUT_DICE.key}`; "
        "re-run those jobs to compare at native resolution."
    )


def _latest_ok_segment_jobs(records: list[dict], key: str, notes: list[str]) -> dict[tuple, dict]:
    """Finished segment jobs keyed by (fraction, arm, fold); a re-run's newest result wins."""
    jobs: dict[tuple, dict] = {}
    for rec in records:
        if not _is_segment_ok(rec):
            continue
        if not finite(_test_value(rec, key)):
            notes.append(f"job `{rec['job']}` ({rec['dir']}) finished without a finite test.{key}.")
            continue
        job_key = (_frac_key(rec.get("fraction")), rec["arm"], rec.get("fold"))
        if job_key in jobs:
            old = jobs[job_key]
            keep, drop = (rec, old) if rec["metrics_mtime"] >= old["metrics_mtime"] else (old, rec)
            notes.append(
                f"two results for fraction {job_key[0]}, arm {job_key[1]}, fold {job_key[2]}: "
                f"using `{keep['dir']}`, ignoring `{drop['dir']}`."
            )
            jobs[job_key] = keep
        else:
            jobs[job_key] = rec
    return jobs


def _summarize_dice(jobs: dict[tuple, dict], key: str) -> dict[tuple[float, str], ArmSummary]:
    grouped: dict[tuple[float, str], dict[Any, float]] = defaultdict(dict)
    for (frac, arm, fold), rec in jobs.items():
        grouped[(frac, arm)][fold] = float(rec["test"][key])
    out = {}
    for group, fold_dice in grouped.items():
        mean, std = _mean_std(list(fold_dice.values()))
        out[group] = ArmSummary(
            dict(sorted(fold_dice.items(), key=lambda kv: str(kv[0]))), mean, std
        )
    return out


def _label_budget(jobs: dict[tuple, dict]) -> dict[float, dict[str, tuple[float, float]]]:
    """Per fraction, the (min, max) of n_train and n_val over the jobs used: the label budget."""
    values: dict[float, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for (frac, _, _), rec in jobs.items():
        for key in ("n_train", "n_val"):
            if finite(rec.get(key)):
                values[frac][key].append(float(rec[key]))
    return {
        frac: {key: (min(vals), max(vals)) for key, vals in by_key.items()}
        for frac, by_key in values.items()
    }


def _per_image_pairs(arm_jobs: list[dict], base_jobs: list[dict], key: str) -> tuple[list, list]:
    """Per-image Dice of two arms matched by image id (averaged over folds that tested it)."""
    a_vals: dict[str, list[float]] = defaultdict(list)
    b_vals: dict[str, list[float]] = defaultdict(list)
    for a_rec, b_rec in zip(arm_jobs, base_jobs, strict=True):
        a_img = a_rec.get(key) or {}
        b_img = b_rec.get(key) or {}
        for image_id in sorted(set(a_img) & set(b_img)):
            if finite(a_img[image_id]) and finite(b_img[image_id]):
                a_vals[image_id].append(float(a_img[image_id]))
                b_vals[image_id].append(float(b_img[image_id]))
    ids = sorted(a_vals)
    return [float(np.mean(a_vals[i])) for i in ids], [float(np.mean(b_vals[i])) for i in ids]


def _mean_field(recs: list[dict], key: str) -> float:
    vals = [float(r[key]) for r in recs if finite(r.get(key))]
    return float(np.mean(vals)) if vals else NAN


def _compare(
    jobs: dict[tuple, dict],
    frac: float,
    arm: str,
    baseline: str,
    metric: DiceMetric,
    notes: list[str],
) -> Comparison:
    folds = sorted(
        {f for (fr, a, f) in jobs if fr == frac and a == arm}
        & {f for (fr, a, f) in jobs if fr == frac and a == baseline},
        key=str,
    )
    arm_jobs = [jobs[(frac, arm, f)] for f in folds]
    base_jobs = [jobs[(frac, baseline, f)] for f in folds]
    a = [float(r["test"][metric.key]) for r in arm_jobs]
    b = [float(r["test"][metric.key]) for r in base_jobs]
    n_train = _mean_field(arm_jobs + base_jobs, "n_train")
    n_test = _mean_field(arm_jobs + base_jobs, "n_test")
    if len(folds) >= 2 and finite(n_train) and finite(n_test) and n_train > 0 and n_test > 0:
        nb = nadeau_bengio_ttest(np.subtract(a, b), n_train, n_test)
    else:
        if len(folds) >= 2:
            notes.append(
                f"Nadeau-Bengio test skipped at fraction {frac} for {arm}: n_train/n_test missing."
            )
        diffs = np.subtract(a, b)
        mean = float(diffs.mean()) if len(folds) else NAN
        nb = TestResult("Nadeau-Bengio corrected t-test", NAN, NAN, len(folds), mean)
    img_a, img_b = _per_image_pairs(arm_jobs, base_jobs, metric.per_image_key)
    return Comparison(
        fraction=frac,
        arm=arm,
        folds=paired_ttest(a, b),
        nadeau_bengio=nb,
        images_t=paired_ttest(img_a, img_b),
        images_wilcoxon=wilcoxon_paired(img_a, img_b),
        n_train=n_train,
        n_test=n_test,
    )


def _summarize_localizer(records: list[dict]) -> list[dict]:
    """Mean +/- std of the localizer's test error per fraction, beside the mean-centre baseline."""
    groups: dict[float, list[dict]] = defaultdict(list)
    for rec in records:
        localizer = rec.get("phase") == "localize" or rec["arm"] == "localize"
        if rec["status"] == "ok" and localizer and not rec.get("test_skipped"):
            groups[_frac_key(rec.get("fraction"))].append(rec)
    rows = []
    for frac in sorted(groups, key=lambda f: (math.isnan(f), f)):
        recs = groups[frac]
        tests = [t for r in recs for t in localizer_tests(r)]
        row: dict[str, Any] = {"fraction": frac, "n": len(tests)}
        for key in LOCALIZER_KEYS:
            vals = [float(t[key]) for t in tests if finite(t.get(key))]
            row[key] = (*_mean_std(vals), len(vals))
        rows.append(row)
    return rows


LOCALIZER_KEYS = (
    "dist_px",
    "baseline_dist_px",
    "image_centre_dist_px",
    "dist_frac_width",
    "within_radius",
    "mse_px2",
)


def localizer_tests(rec: dict) -> list[dict]:
    """A shared localizer is tested on every fold (``test_folds``): one test result per fold."""
    return list((rec.get("test_folds") or {}).values()) or [rec.get("test") or {}]


def _ordered_arms(arms: set[str], baseline: str) -> list[str]:
    known = [a for a in ARM_ORDER if a in arms]
    ordered = known + sorted(arms - set(ARM_ORDER))
    if baseline in ordered:
        ordered.remove(baseline)
        ordered.insert(0, baseline)
    return ordered


def build_report(records: list[dict], baseline_arm: str = "scratch") -> Report:
    """Dice per (fraction, arm), paired tests against ``baseline_arm`` with Holm-adjusted marks."""
    notes: list[str] = []
    metric, metric_note = choose_dice_metric(records)
    jobs = _latest_ok_segment_jobs(records, metric.key, notes)
    dice = _summarize_dice(jobs, metric.key)
    arms = _ordered_arms({arm for _, arm in dice}, baseline_arm)
    fractions = sorted({frac for frac, _ in dice})
    comparisons = []
    if dice and baseline_arm not in arms:
        notes.append(
            f"baseline arm `{baseline_arm}` has no finished job: no paired test was run "
            f"(arms found: {', '.join(arms)}; choose one with --baseline-arm)."
        )
    else:
        for frac in fractions:
            for arm in arms:
                if arm != baseline_arm and (frac, arm) in dice and (frac, baseline_arm) in dice:
                    comparisons.append(_compare(jobs, frac, arm, baseline_arm, metric, notes))
    adjusted = holm_adjust([c.nadeau_bengio.pvalue for c in comparisons])
    comparisons = [replace(c, nb_holm=float(p)) for c, p in zip(comparisons, adjusted, strict=True)]
    return Report(
        records=records,
        baseline_arm=baseline_arm,
        arms=arms,
        fractions=fractions,
        dice=dice,
        comparisons=comparisons,
        localizer=_summarize_localizer(records),
        metric=metric,
        metric_note=metric_note,
        budget=_label_budget(jobs),
        notes=notes,
    )
