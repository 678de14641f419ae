"""python -m locseg.report SWEEP_DIR: collect a sweep's metrics.json files into a report.

Writes ``results.csv`` (one row per job), ``report.md`` (Dice per fraction and arm, the localizer's
error, paired tests against the baseline arm, failed and incomplete jobs) and
``dice_vs_fraction.png`` (the paper's Figure 2) into SWEEP_DIR, and logs the table and the figure
to W&B (offline unless WANDB_MODE says otherwise). It reads files only: no torch, no models, so it
starts fast and can run anywhere the sweep folder is.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from locseg.io import write_text_atomic

if TYPE_CHECKING:
    from locseg.experiments.stats import TestResult

# scipy.stats and matplotlib are imported where used, so that --help and a wrong folder answer
# at once instead of after seconds of imports.

__all__ = ["ReportError", "collect", "build_report", "write_report", "main"]

JOB_FILE = "job.json"
METRICS_FILE = "metrics.json"
RESULTS_CSV = "results.csv"
REPORT_MD = "report.md"
FIGURE_PNG = "dice_vs_fraction.png"
ARM_ORDER = ["scratch", "localizer-frozen", "localizer-finetune", "localize"]
METRIC_ORDER = ["dice", "iou", "dist_px", "baseline_dist_px", "dist_frac_width", "within_radius"]
METRIC_ORDER += ["mse_px2", "loss"]
NAN = math.nan


class ReportError(Exception):
    """The sweep folder cannot be reported on (missing, or holds no job)."""


# --------------------------------------------------------------------------------------- collect


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
    found = {p.parent for name in (JOB_FILE, METRICS_FILE) for p in sweep.rglob(name)}
    return sorted(found)


def _load_job(job_dir: Path, sweep: Path) -> dict:
    """One record: job.json, overlaid by metrics.json when the job finished; status normalised."""
    job, job_err = _read_json(job_dir / JOB_FILE) if (job_dir / JOB_FILE).exists() else ({}, None)
    rec: dict[str, Any] = dict(job or {})
    metrics_path = job_dir / METRICS_FILE
    if metrics_path.exists():
        metrics, err = _read_json(metrics_path)
        if metrics is None:
            rec.update(status="failed", error=err)
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
    """Every job under ``sweep_dir`` (any depth) as a dict, status 'ok', 'failed' or 'incomplete'.

    A job is a folder holding ``job.json`` (written at start) and/or ``metrics.json`` (written at
    the end). Raises ``ReportError`` if the folder is missing or holds no job.
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


# ----------------------------------------------------------------------------------- aggregation


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
    """One non-baseline arm against the baseline arm at one fraction."""

    fraction: float
    arm: str
    folds: TestResult
    nadeau_bengio: TestResult
    images_t: TestResult
    images_wilcoxon: TestResult
    n_train: float
    n_test: float


@dataclass
class Report:
    records: list[dict]
    baseline_arm: str
    arms: list[str]
    fractions: list[float]
    dice: dict[tuple[float, str], ArmSummary]
    comparisons: list[Comparison]
    localizer: list[dict]
    notes: list[str] = field(default_factory=list)

    def by_status(self, status: str) -> list[dict]:
        return [r for r in self.records if r["status"] == status]


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    mean = float(arr.mean()) if arr.size else NAN
    std = float(arr.std(ddof=1)) if arr.size > 1 else NAN
    return mean, std


def _frac_key(fraction: Any) -> float:
    """Fractions from configs may carry float noise (0.30000000000000004): group on 6 decimals."""
    return round(float(fraction), 6) if _finite(fraction) else NAN


def _latest_ok_segment_jobs(records: list[dict], notes: list[str]) -> dict[tuple, dict]:
    """Finished segment jobs keyed by (fraction, arm, fold); a re-run's newest result wins."""
    jobs: dict[tuple, dict] = {}
    for rec in records:
        if rec["status"] != "ok" or rec.get("phase") == "localize" or rec["arm"] == "localize":
            continue
        dice = (rec.get("test") or {}).get("dice")
        if not _finite(dice):
            notes.append(f"job `{rec['job']}` ({rec['dir']}) finished without a finite test Dice.")
            continue
        key = (_frac_key(rec.get("fraction")), rec["arm"], rec.get("fold"))
        if key in jobs:
            old = jobs[key]
            keep, drop = (rec, old) if rec["metrics_mtime"] >= old["metrics_mtime"] else (old, rec)
            notes.append(
                f"two results for fraction {key[0]}, arm {key[1]}, fold {key[2]}: using "
                f"`{keep['dir']}`, ignoring `{drop['dir']}`."
            )
            jobs[key] = keep
        else:
            jobs[key] = rec
    return jobs


def _summarize_dice(jobs: dict[tuple, dict]) -> dict[tuple[float, str], ArmSummary]:
    grouped: dict[tuple[float, str], dict[Any, float]] = defaultdict(dict)
    for (frac, arm, fold), rec in jobs.items():
        grouped[(frac, arm)][fold] = float(rec["test"]["dice"])
    out = {}
    for key, fold_dice in grouped.items():
        mean, std = _mean_std(list(fold_dice.values()))
        out[key] = ArmSummary(dict(sorted(fold_dice.items(), key=lambda kv: str(kv[0]))), mean, std)
    return out


def _per_image_pairs(arm_jobs: list[dict], base_jobs: list[dict]) -> tuple[list, list]:
    """Per-image Dice of two arms matched by image id (averaged over folds that tested it)."""
    a_vals: dict[str, list[float]] = defaultdict(list)
    b_vals: dict[str, list[float]] = defaultdict(list)
    for a_rec, b_rec in zip(arm_jobs, base_jobs, strict=True):
        a_img = a_rec.get("per_image_test_dice") or {}
        b_img = b_rec.get("per_image_test_dice") or {}
        for image_id in sorted(set(a_img) & set(b_img)):
            if _finite(a_img[image_id]) and _finite(b_img[image_id]):
                a_vals[image_id].append(float(a_img[image_id]))
                b_vals[image_id].append(float(b_img[image_id]))
    ids = sorted(a_vals)
    return [float(np.mean(a_vals[i])) for i in ids], [float(np.mean(b_vals[i])) for i in ids]


def _mean_field(recs: list[dict], key: str) -> float:
    vals = [float(r[key]) for r in recs if _finite(r.get(key))]
    return float(np.mean(vals)) if vals else NAN


def _compare(
    jobs: dict[tuple, dict], frac: float, arm: str, baseline: str, notes: list[str]
) -> Comparison:
    from locseg.experiments.stats import (
        TestResult,
        nadeau_bengio_ttest,
        paired_ttest,
        wilcoxon_paired,
    )

    folds = sorted(
        {f for (fr, a, f) in jobs if fr == frac and a == arm}
        & {f for (fr, a, f) in jobs if fr == frac and a == baseline},
        key=str,
    )
    arm_jobs = [jobs[(frac, arm, f)] for f in folds]
    base_jobs = [jobs[(frac, baseline, f)] for f in folds]
    a = [float(r["test"]["dice"]) for r in arm_jobs]
    b = [float(r["test"]["dice"]) for r in base_jobs]
    n_train = _mean_field(arm_jobs + base_jobs, "n_train")
    n_test = _mean_field(arm_jobs + base_jobs, "n_test")
    if len(folds) >= 2 and _finite(n_train) and _finite(n_test) and n_train > 0 and n_test > 0:
        nb = nadeau_bengio_ttest(np.subtract(a, b), n_train, n_test)
    else:
        if len(folds) >= 2:
            notes.append(
                f"Nadeau-Bengio test skipped at fraction {frac} for {arm}: n_train/n_test missing."
            )
        diffs = np.subtract(a, b)
        nb = TestResult(
            "Nadeau-Bengio corrected t-test",
            NAN,
            NAN,
            len(folds),
            float(diffs.mean()) if len(folds) else NAN,
        )
    img_a, img_b = _per_image_pairs(arm_jobs, base_jobs)
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
        if rec["status"] == "ok" and (rec.get("phase") == "localize" or rec["arm"] == "localize"):
            groups[_frac_key(rec.get("fraction"))].append(rec)
    rows = []
    for frac in sorted(groups, key=lambda f: (math.isnan(f), f)):
        recs = groups[frac]
        row: dict[str, Any] = {"fraction": frac, "n": len(recs)}
        for key in ("dist_px", "baseline_dist_px", "dist_frac_width", "within_radius", "mse_px2"):
            vals = [float(r["test"][key]) for r in recs if _finite((r.get("test") or {}).get(key))]
            row[key] = (*_mean_std(vals), len(vals))
        rows.append(row)
    return rows


def _ordered_arms(arms: set[str], baseline: str) -> list[str]:
    known = [a for a in ARM_ORDER if a in arms]
    rest = sorted(arms - set(ARM_ORDER))
    ordered = known + rest
    if baseline in ordered:
        ordered.remove(baseline)
        ordered.insert(0, baseline)
    return ordered


def build_report(records: list[dict], baseline_arm: str = "scratch") -> Report:
    """Aggregate collected records: Dice per (fraction, arm), paired tests, localizer error."""
    notes: list[str] = []
    jobs = _latest_ok_segment_jobs(records, notes)
    dice = _summarize_dice(jobs)
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
                    comparisons.append(_compare(jobs, frac, arm, baseline_arm, notes))
    return Report(
        records=records,
        baseline_arm=baseline_arm,
        arms=arms,
        fractions=fractions,
        dice=dice,
        comparisons=comparisons,
        localizer=_summarize_localizer(records),
        notes=notes,
    )


# ----------------------------------------------------------------------------------- formatting


def fmt_p(p: float) -> str:
    """Three significant digits; 'n/a' when the test could not run (fewer than two pairs)."""
    return f"{p:.3g}" if _finite(p) else "n/a"


def fmt_num(x: float, spec: str = ".3f") -> str:
    return format(x, spec) if _finite(x) else "n/a"


def fmt_mean_std(mean: float, std: float, spec: str = ".3f") -> str:
    if not _finite(mean):
        return "n/a"
    return f"{mean:{spec}} ± {std:{spec}}" if _finite(std) else f"{mean:{spec}}"


def fmt_fraction(frac: float) -> str:
    if not _finite(frac):
        return "n/a"
    pct = 100.0 * frac
    return f"{pct:.0f}%" if abs(pct - round(pct)) < 1e-6 else f"{pct:.3g}%"


def _first_line(text: Any) -> str:
    lines = str(text or "").strip().splitlines()
    return lines[0] if lines else "(no error message)"


def _md_table(header: list[str], rows: list[list[str]], align: str = "") -> list[str]:
    align = align or "l" * len(header)
    marks = {"l": "---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(marks[c] for c in align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _md_dice(rep: Report) -> list[str]:
    lines = ["## Segmentation: test Dice per fraction of labels and arm", ""]
    if not rep.dice:
        return lines + ["No segmentation job finished.", ""]
    lines += [
        "Mean ± std (sample std, ddof=1) of test Dice over folds; n = folds that finished.",
        "",
    ]
    rows = []
    for frac in rep.fractions:
        row = [fmt_fraction(frac)]
        for arm in rep.arms:
            s = rep.dice.get((frac, arm))
            row.append(f"{fmt_mean_std(s.mean, s.std)} (n={s.n})" if s else "—")
        rows.append(row)
    return lines + _md_table(["labels", *rep.arms], rows, "r" + "l" * len(rep.arms)) + [""]


def _md_localizer(rep: Report) -> list[str]:
    lines = ["## Localizer: test error of the optic-disc centre", ""]
    if not rep.localizer:
        return lines + ["No localization job finished.", ""]
    lines += [
        "Mean ± std over localization jobs. The baseline predicts the mean training centre for "
        "every image; a useful localizer is far below it.",
        "",
    ]
    rows = []
    for row in rep.localizer:
        cells = [fmt_fraction(row["fraction"]), str(row["n"])]
        for key, spec in (
            ("dist_px", ".2f"),
            ("baseline_dist_px", ".2f"),
            ("dist_frac_width", ".4f"),
            ("within_radius", ".3f"),
        ):
            mean, std, n = row[key]
            cells.append(fmt_mean_std(mean, std, spec) if n else "n/a")
        rows.append(cells)
    header = [
        "labels",
        "jobs",
        "distance (px)",
        "mean-centre baseline (px)",
        "distance / image width",
        "within disc radius",
    ]
    return lines + _md_table(header, rows, "rrllll") + [""]


WHY_OPTIMISTIC = (
    "**Why the plain fold test is optimistic.** In k-fold cross-validation any two training sets "
    "share (k−2)/(k−1) of their images, so the k fold scores are positively correlated, not "
    "independent; the plain paired t-test divides the variance of the differences by k as if they "
    "were, underestimates it and gives p-values that are too small (too many false discoveries). "
    "The Nadeau-Bengio corrected resampled t-test inflates that variance by "
    "(1/k + n_test/n_train) instead of 1/k, with k−1 degrees of freedom; trust it over the plain "
    "test. The per-image tests take test images as the unit: they capture the variability of the "
    'test sample but not that of the training set, so they answer "on these images" rather than '
    '"with a new training set".'
)


def _md_comparisons(rep: Report) -> list[str]:
    base = rep.baseline_arm
    lines = [f"## Paired comparisons against `{base}`", ""]
    if not rep.comparisons:
        return lines + ["No fraction has finished jobs of both an arm and the baseline.", ""]
    lines += [
        f"Δ = mean(arm − {base}) of test Dice: positive means the arm beats {base}. "
        "Stars in the figure use the fold-paired t-test.",
        "",
        "### Over folds (fold-matched mean test Dice)",
        "",
    ]
    fold_rows = [
        [
            fmt_fraction(c.fraction),
            c.arm,
            str(c.folds.n),
            fmt_num(c.folds.mean_diff, "+.3f"),
            fmt_num(c.folds.statistic, ".3f"),
            fmt_p(c.folds.pvalue),
            fmt_num(c.nadeau_bengio.statistic, ".3f"),
            fmt_p(c.nadeau_bengio.pvalue),
            fmt_num(c.n_train, ".0f"),
            fmt_num(c.n_test, ".0f"),
        ]
        for c in rep.comparisons
    ]
    header = ["labels", "arm", "folds", "Δ Dice", "t", "p (paired t)", "t (NB)", "p (NB)"]
    lines += _md_table([*header, "n_train", "n_test"], fold_rows, "rlrrrrrrrr")
    lines += ["", "### Over test images (per-image Dice matched by image id)", ""]
    lines += [
        "An image tested in several folds counts once, with its Dice averaged over those folds.",
        "",
    ]
    img_rows = [
        [
            fmt_fraction(c.fraction),
            c.arm,
            str(c.images_t.n),
            fmt_num(c.images_t.mean_diff, "+.3f"),
            fmt_num(c.images_t.statistic, ".3f"),
            fmt_p(c.images_t.pvalue),
            fmt_num(c.images_wilcoxon.statistic, ".1f"),
            fmt_p(c.images_wilcoxon.pvalue),
        ]
        for c in rep.comparisons
    ]
    header = ["labels", "arm", "images", "Δ Dice", "t", "p (paired t)", "W", "p (Wilcoxon)"]
    lines += _md_table(header, img_rows, "rlrrrrrr")
    return lines + ["", WHY_OPTIMISTIC, ""]


def _md_problems(rep: Report) -> list[str]:
    failed, incomplete = rep.by_status("failed"), rep.by_status("incomplete")
    lines = [f"## Failed jobs ({len(failed)})", ""]
    lines += [f"- `{r['job']}` (`{r['dir']}`): {_first_line(r.get('error'))}" for r in failed]
    lines += ["None."] if not failed else []
    lines += ["", f"## Incomplete jobs ({len(incomplete)}): no metrics.json, killed or running", ""]
    lines += [f"- `{r['job']}` (`{r['dir']}`)" for r in incomplete]
    lines += ["None."] if not incomplete else []
    lines += [""]
    if rep.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in rep.notes] + [""]
    return lines


def render_markdown(rep: Report, sweep_dir: str | os.PathLike) -> str:
    counts = {s: len(rep.by_status(s)) for s in ("ok", "failed", "incomplete")}
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# locseg sweep report",
        "",
        f"Sweep: `{Path(sweep_dir).resolve()}`. Jobs: {len(rep.records)} ({counts['ok']} ok, "
        f"{counts['failed']} failed, {counts['incomplete']} incomplete). Written {stamp}.",
        "",
        f"![Test Dice against the fraction of labels]({FIGURE_PNG})",
        "",
    ]
    lines += _md_dice(rep) + _md_localizer(rep) + _md_comparisons(rep) + _md_problems(rep)
    return "\n".join(lines)


# -------------------------------------------------------------------------------------- outputs


def results_table(records: list[dict]) -> tuple[list[str], list[list[Any]]]:
    """Flat table, one row per job: identity, status, test and val metrics, sizes, time, folder."""

    def metric_cols(split: str) -> list[str]:
        names = {k for r in records for k in (r.get(split) or {})}
        ordered = [m for m in METRIC_ORDER if m in names] + sorted(names - set(METRIC_ORDER))
        return [f"{split}_{m}" for m in ordered]

    test_cols, val_cols = metric_cols("test"), metric_cols("val")
    ident = ["job", "phase", "arm", "fraction", "fold", "status", "init", "freeze_encoder"]
    tail = ["n_train", "n_val", "n_test", "wall_time_s", "config_hash", "error", "dir"]
    columns = ident + test_cols + val_cols + tail
    rows = []
    for rec in records:
        row = []
        for col in columns:
            split, _, metric = col.partition("_")
            if col in test_cols or col in val_cols:
                value = (rec.get(split) or {}).get(metric)
            elif col == "error":
                value = _first_line(rec["error"]) if rec.get("error") else None
            else:
                value = rec.get(col)
            row.append(value)
        rows.append(row)
    return columns, rows


def write_results_csv(path: Path, columns: list[str], rows: list[list[Any]]) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return write_text_atomic(path, buf.getvalue())


def write_figure(rep: Report, path: Path) -> Path:
    from locseg.experiments.figures import plot_dice_vs_fraction

    curves = {
        arm: [(f, rep.dice[(f, arm)].mean, rep.dice[(f, arm)].std) for f in rep.fractions]
        for arm in rep.arms
    }
    curves = {arm: [pt for pt in pts if (pt[0], arm) in rep.dice] for arm, pts in curves.items()}
    pvalues: dict[str, dict[float, float]] = defaultdict(dict)
    for c in rep.comparisons:
        pvalues[c.arm][c.fraction] = c.folds.pvalue
    return plot_dice_vs_fraction(curves, dict(pvalues), path, baseline_arm=rep.baseline_arm)


def log_to_wandb(sweep_dir: Path, columns: list[str], rows: list[list[Any]], figure: Path) -> None:
    """Log the results table and the figure to W&B; offline unless WANDB_MODE says otherwise."""
    import wandb  # lazy: a heavy import, only needed here

    run = wandb.init(
        project="locseg",
        job_type="report",
        dir=str(sweep_dir),
        mode=os.environ.get("WANDB_MODE", "offline"),
    )
    try:
        table_rows = [[_wandb_cell(v) for v in row] for row in rows]
        run.log(
            {
                "results": wandb.Table(columns=columns, data=table_rows),
                "dice_vs_fraction": wandb.Image(str(figure)),
            }
        )
    finally:
        wandb.finish()


def _wandb_cell(value: Any) -> Any:
    """W&B tables need one type per column: keep numbers/bools, stringify the rest, None stays."""
    if value is None or isinstance(value, bool | int | float):
        return value
    return str(value)


def _run(sweep_dir: str | os.PathLike, use_wandb: bool, baseline_arm: str):
    sweep = Path(sweep_dir)
    records = collect(sweep)
    rep = build_report(records, baseline_arm=baseline_arm)
    columns, rows = results_table(records)
    paths = {
        "results_csv": write_results_csv(sweep / RESULTS_CSV, columns, rows),
        "figure": write_figure(rep, sweep / FIGURE_PNG),
    }
    paths["report_md"] = write_text_atomic(sweep / REPORT_MD, render_markdown(rep, sweep))
    if use_wandb:
        try:
            log_to_wandb(sweep, columns, rows, paths["figure"])
        except Exception as exc:  # the files are written; W&B is a copy, so warn, do not fail
            print(
                f"locseg.report: warning: W&B logging failed ({exc}); files are written, "
                "rerun with --no-wandb to skip it",
                file=sys.stderr,
            )
    return paths, rep


def write_report(
    sweep_dir: str | os.PathLike, wandb: bool = False, baseline_arm: str = "scratch"
) -> dict[str, Path]:
    """Collect the sweep and write results.csv, report.md and the figure; returns their paths."""
    return _run(sweep_dir, wandb, baseline_arm)[0]


# ------------------------------------------------------------------------------------------ CLI


def _print_summary(rep: Report, paths: dict[str, Path]) -> None:
    from rich.console import Console
    from rich.table import Table

    from locseg.experiments.figures import significance_stars

    console = Console()
    counts = {s: len(rep.by_status(s)) for s in ("ok", "failed", "incomplete")}
    console.print(
        f"[bold]{len(rep.records)} jobs[/]: [green]{counts['ok']} ok[/], "
        f"[red]{counts['failed']} failed[/], [yellow]{counts['incomplete']} incomplete[/]"
    )
    if rep.dice:
        table = Table(title="Test Dice (mean ± std over folds)")
        table.add_column("labels", justify="right")
        for arm in rep.arms:
            table.add_column(arm)
        pvals = {(c.fraction, c.arm): c.folds.pvalue for c in rep.comparisons}
        for frac in rep.fractions:
            cells = []
            for arm in rep.arms:
                s = rep.dice.get((frac, arm))
                stars = significance_stars(pvals.get((frac, arm), NAN))
                cells.append(f"{fmt_mean_std(s.mean, s.std)} {stars}".strip() if s else "—")
            table.add_row(fmt_fraction(frac), *cells)
        console.print(table)
    for row in rep.localizer:
        mean, std, _ = row["dist_px"]
        base, _, _ = row["baseline_dist_px"]
        console.print(
            f"Localizer ({row['n']} jobs): {fmt_mean_std(mean, std, '.2f')} px "
            f"(mean-centre baseline {fmt_num(base, '.2f')} px)"
        )
    for rec in rep.by_status("failed"):
        console.print(f"[red]failed[/] {rec['job']}: {_first_line(rec.get('error'))}")
    for rec in rep.by_status("incomplete"):
        console.print(f"[yellow]incomplete[/] {rec['job']}")
    console.print(f"report: {paths['report_md']}")
    console.print(f"figure: {paths['figure']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m locseg.report",
        description="Collect a sweep's metrics.json files into results.csv, report.md and "
        "dice_vs_fraction.png (written into SWEEP_DIR).",
    )
    parser.add_argument("sweep_dir", metavar="SWEEP_DIR", help="output folder of a sweep")
    parser.add_argument("--no-wandb", action="store_true", help="do not log to W&B")
    parser.add_argument(
        "--baseline-arm", default="scratch", help="arm the others are tested against"
    )
    args = parser.parse_args(argv)
    try:
        paths, rep = _run(args.sweep_dir, not args.no_wandb, args.baseline_arm)
    except ReportError as exc:
        print(f"locseg.report: error: {exc}", file=sys.stderr)
        return 2
    _print_summary(rep, paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
