"""Render an analysed sweep as report.md: tables, paired tests with marks, problems."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from locseg.experiments.report.analyse import MARK_TEST, NATIVE_DICE, Comparison, Report
from locseg.experiments.report.collect import STATUSES, kept_result_note
from locseg.experiments.report.fmt import (
    first_line,
    fmt_fraction,
    fmt_mean_std,
    fmt_num,
    fmt_p,
    fmt_range,
)
from locseg.experiments.report.postprocess import summarise_postprocessing
from locseg.experiments.stats import MINUS

__all__ = ["render_markdown", "metric_caption", "marks_legend", "WHY_OPTIMISTIC"]

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


def _md_table(header: list[str], rows: list[list[str]], align: str = "") -> list[str]:
    align = align or "l" * len(header)
    marks = {"l": "---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(marks[c] for c in align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def metric_caption(rep: Report) -> str:
    """Which Dice the numbers are, in one sentence (and why, when the report fell back)."""
    if rep.metric == NATIVE_DICE:
        text = (
            f"Test {rep.metric.label} (`test.{rep.metric.key}`): each prediction mapped back to "
            "the photograph's own pixels."
        )
    else:
        text = (
            f"Test {rep.metric.label} (`test.{rep.metric.key}`): measured on the resized network "
            "input, not on the photograph's own pixels."
        )
    return f"{text} {rep.metric_note}".strip()


def marks_legend(rep: Report) -> str:
    """How to read the marks: which test, which adjustment, which sign means what."""
    n = sum(1 for c in rep.comparisons if c.mark)
    base = rep.baseline_arm
    return (
        f"Marks use the {MARK_TEST} across the {n} comparisons of this report (every fraction "
        f"and arm): `+*` the arm is significantly better than {base}, `{MINUS}*` significantly "
        "worse (* p<0.05, ** p<0.01, *** p<0.001), `ns` no significant difference."
    )


def _md_dice(rep: Report) -> list[str]:
    lines = [f"## Segmentation: test {rep.metric.label} per fraction of labels and arm", ""]
    if not rep.dice:
        return lines + ["No segmentation job finished.", ""]
    budget = [k for k in ("n_train", "n_val") if any(k in b for b in rep.budget.values())]
    lines += [
        metric_caption(rep)
        + " Mean ± std (sample std, ddof=1) over folds; n = folds that finished."
        + (" n_train, n_val: training and validation images per fold." if budget else ""),
        "",
    ]
    rows = []
    for frac in rep.fractions:
        row = [fmt_fraction(frac)]
        row += [fmt_range(rep.budget.get(frac, {}).get(k)) for k in budget]
        for arm in rep.arms:
            s = rep.dice.get((frac, arm))
            row.append(f"{fmt_mean_std(s.mean, s.std)} (n={s.n})" if s else "—")
        rows.append(row)
    header = ["labels", *budget, *rep.arms]
    return lines + _md_table(header, rows, "r" * (1 + len(budget)) + "l" * len(rep.arms)) + [""]


def _md_localizer(rep: Report) -> list[str]:
    lines = ["## Localizer: test error of the optic-disc centre", ""]
    if not rep.localizer:
        return lines + ["No localization job finished.", ""]
    lines += [
        "Mean ± std over the test folds (a localizer shared by all folds is tested on each). "
        "The baselines predict one point for every image: the mean training centre, and the "
        "image centre; a useful localizer is far below both.",
        "",
    ]
    rows = []
    for row in rep.localizer:
        cells = [fmt_fraction(row["fraction"]), str(row["n"])]
        for key, spec in (
            ("dist_px", ".2f"),
            ("baseline_dist_px", ".2f"),
            ("image_centre_dist_px", ".2f"),
            ("dist_frac_width", ".4f"),
            ("within_radius", ".3f"),
        ):
            mean, std, n = row[key]
            cells.append(fmt_mean_std(mean, std, spec) if n else "n/a")
        rows.append(cells)
    header = [
        "labels",
        "folds",
        "distance (px)",
        "mean-centre baseline (px)",
        "image-centre baseline (px)",
        "distance / image width",
        "within disc radius",
    ]
    return lines + _md_table(header, rows, "rrlllll") + [""]


def _result_cell(c: Comparison) -> str:
    """'+* better', '−** worse', 'ns' or 'n/a': the sign is never left to the reader's guess."""
    mark = c.mark
    if not mark:
        return "n/a"
    return mark if mark == "ns" else f"{mark} {c.verdict}"


def _md_comparisons(rep: Report) -> list[str]:
    base = rep.baseline_arm
    lines = [f"## Paired comparisons against `{base}`", ""]
    if not rep.comparisons:
        return lines + ["No fraction has finished jobs of both an arm and the baseline.", ""]
    lines += [
        f"Δ = mean(arm − {base}) of test {rep.metric.label}: positive means the arm beats "
        f"{base}. {marks_legend(rep)} The plain paired tests are shown for reference, unmarked.",
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
            fmt_p(c.nb_holm),
            _result_cell(c),
            fmt_num(c.n_train, ".0f"),
            fmt_num(c.n_test, ".0f"),
        ]
        for c in rep.comparisons
    ]
    header = ["labels", "arm", "folds", "Δ Dice", "t", "p (paired t)", "t (NB)", "p (NB)"]
    header += ["p (NB, Holm)", "result", "n_train", "n_test"]
    lines += _md_table(header, fold_rows, "rlrrrrrrrlrr")
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


def _md_postprocess(rep: Report) -> list[str]:
    """Each post-processing switch on / off: validation decisions and the test Dice it moved."""
    switches, tests = summarise_postprocessing(rep.records)
    if not switches and not tests:
        return []
    lines = [
        "## Post-processing: each switch on / off",
        "",
        "Every job decides its switches one after another on its own validation images (never "
        "test): mean validation Dice at native resolution with and without each switch when it "
        "was decided, and how many jobs kept it.",
        "",
    ]
    lines += _md_table(
        ["switch", "chosen", "val Dice without", "val Dice with", "Δ"],
        [
            [
                s.switch,
                f"{s.chosen} of {s.jobs}",
                fmt_num(s.val_without, ".4f"),
                fmt_num(s.val_with, ".4f"),
                fmt_num(s.val_with - s.val_without, "+.4f"),
            ]
            for s in switches
        ],
        "lrrrr",
    )
    lines += ["", "Test Dice at native resolution, raw and with each job's chosen switches:", ""]
    lines += _md_table(
        ["arm", "jobs", "raw", "post-processed", "Δ"],
        [
            [
                t.arm,
                str(t.jobs),
                fmt_num(t.test_raw, ".4f"),
                fmt_num(t.test_post, ".4f"),
                fmt_num(t.test_post - t.test_raw, "+.4f"),
            ]
            for t in tests
        ],
        "lrrrr",
    )
    return lines + [""]


def _md_problems(rep: Report) -> list[str]:
    failed, incomplete = rep.by_status("failed"), rep.by_status("incomplete")
    stale = rep.by_status("stale")
    lines = [f"## Failed jobs ({len(failed)})", ""]
    lines += [
        f"- `{r['job']}` (`{r['dir']}`): {first_line(r.get('error'))}{kept_result_note(r)}"
        for r in failed
    ]
    lines += ["None."] if not failed else []
    lines += ["", f"## Incomplete jobs ({len(incomplete)}): no metrics.json, killed or running", ""]
    lines += [f"- `{r['job']}` (`{r['dir']}`)" for r in incomplete]
    lines += ["None."] if not incomplete else []
    lines += ["", f"## Stale jobs ({len(stale)}): metrics.json of an older config, not counted", ""]
    lines += [f"- `{r['job']}` (`{r['dir']}`): {first_line(r.get('error'))}." for r in stale]
    lines += ["None."] if not stale else []
    lines += [""]
    if rep.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in rep.notes] + [""]
    return lines


def render_markdown(rep: Report, sweep_dir: str | os.PathLike, figure: str) -> str:
    """The whole report.md; ``figure`` is the figure's file name beside it."""
    counts = ", ".join(f"{len(rep.by_status(s))} {s}" for s in STATUSES)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# locseg sweep report",
        "",
        f"Sweep: `{Path(sweep_dir).resolve()}`. Jobs: {len(rep.records)} ({counts}). "
        f"Written {stamp}.",
        "",
        f"![Test {rep.metric.label} against the fraction of labels]({figure})",
        "",
    ]
    lines += _md_dice(rep) + _md_localizer(rep) + _md_comparisons(rep) + _md_postprocess(rep)
    lines += _md_problems(rep)
    return "\n".join(lines)
