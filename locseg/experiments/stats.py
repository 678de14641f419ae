"""Paired tests for comparing two training arms: plain t-test, Wilcoxon, Nadeau-Bengio corrected.

Pure functions on numbers (no files, no models). Each returns a small ``TestResult``; too few pairs
give a NaN p-value instead of an exception, so one missing fold never stops a report. Holm's
adjustment and the star codes live here too, so the markdown, the console and the figure mark
significance the same way. scipy is imported inside the tests that need it (about a second), so
that a report that fails on a wrong folder answers at once.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "TestResult",
    "paired_differences",
    "paired_ttest",
    "wilcoxon_paired",
    "nadeau_bengio_ttest",
    "holm_adjust",
    "significance_stars",
    "signed_stars",
]

MINUS = "\u2212"  # a real minus sign: a hyphen is easy to miss beside a star


@dataclass(frozen=True)
class TestResult:
    """Outcome of one paired test. ``mean_diff`` is mean(a - b): positive means ``a`` is higher."""

    __test__ = False  # not a pytest class, despite the name

    test: str
    statistic: float
    pvalue: float
    n: int
    mean_diff: float


def paired_differences(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    """Return a - b over the pairs where both are finite; unequal lengths are a caller bug."""
    a_arr = np.asarray(a, dtype=float).ravel()
    b_arr = np.asarray(b, dtype=float).ravel()
    if a_arr.shape != b_arr.shape:
        raise ValueError(
            f"paired test needs equal-length samples, got {a_arr.size} and {b_arr.size}: "
            "match the pairs (same fold / same image) before testing"
        )
    diffs = a_arr - b_arr
    return diffs[np.isfinite(diffs)]


def _mean_or_nan(x: np.ndarray) -> float:
    return float(np.mean(x)) if x.size else math.nan


def paired_ttest(a: Sequence[float], b: Sequence[float]) -> TestResult:
    """Student's paired t-test (``scipy.stats.ttest_rel``) treating each pair as independent."""
    from scipy import stats

    diffs = paired_differences(a, b)
    n = int(diffs.size)
    if n < 2:
        return TestResult("paired t-test", math.nan, math.nan, n, _mean_or_nan(diffs))
    with warnings.catch_warnings():  # zero variance: scipy returns nan/inf with a RuntimeWarning
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_rel(diffs, np.zeros_like(diffs))
    return TestResult(
        "paired t-test", float(res.statistic), float(res.pvalue), n, float(diffs.mean())
    )


def wilcoxon_paired(a: Sequence[float], b: Sequence[float]) -> TestResult:
    """Wilcoxon signed-rank test on a - b: robust to the skewed per-image Dice distribution.

    All-zero differences mean no evidence of any difference: statistic 0 and p-value 1
    (scipy versions disagree there, some raise).
    """
    from scipy import stats

    diffs = paired_differences(a, b)
    n = int(diffs.size)
    if n < 2:
        return TestResult("Wilcoxon signed-rank", math.nan, math.nan, n, _mean_or_nan(diffs))
    if np.all(diffs == 0):
        return TestResult("Wilcoxon signed-rank", 0.0, 1.0, n, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.wilcoxon(diffs)
    return TestResult(
        "Wilcoxon signed-rank", float(res.statistic), float(res.pvalue), n, float(diffs.mean())
    )


def nadeau_bengio_ttest(diffs: Sequence[float], n_train: float, n_test: float) -> TestResult:
    """Corrected resampled t-test (Nadeau & Bengio, 2003) on per-fold score differences.

    Cross-validation folds share most of their training images, so fold scores are positively
    correlated and the plain variance estimate ``var/k`` is too small. The correction inflates it
    to ``(1/k + n_test/n_train) * var``; t has k-1 degrees of freedom.
    """
    from scipy import stats

    d = np.asarray(diffs, dtype=float).ravel()
    d = d[np.isfinite(d)]
    k = int(d.size)
    if k < 2:
        return TestResult("Nadeau-Bengio corrected t-test", math.nan, math.nan, k, _mean_or_nan(d))
    if not (n_train > 0 and n_test > 0):
        raise ValueError(
            f"Nadeau-Bengio test needs positive n_train and n_test, got n_train={n_train}, "
            f"n_test={n_test}: read them from the jobs' metrics.json"
        )
    mean = float(d.mean())
    var = float(d.var(ddof=1))
    scale = (1.0 / k + n_test / n_train) * var
    if scale == 0.0:  # identical differences: follow scipy's convention (nan if 0, else inf)
        t = math.nan if mean == 0.0 else math.copysign(math.inf, mean)
    else:
        t = mean / math.sqrt(scale)
    p = math.nan if math.isnan(t) else float(2.0 * stats.t.sf(abs(t), df=k - 1))
    return TestResult("Nadeau-Bengio corrected t-test", float(t), p, k, mean)


def holm_adjust(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni step-down adjusted p-values, in the input order.

    Controls the family-wise error over all the comparisons of a report (every fraction and arm)
    without assuming independence; uniformly more powerful than Bonferroni. A NaN p-value (test
    not run) stays NaN and is not counted in the family size. scipy has no Holm
    (``scipy.stats.false_discovery_control`` is Benjamini-Hochberg/Yekutieli), hence these lines.
    """
    p = np.asarray(pvalues, dtype=float).ravel()
    out = np.full(p.shape, math.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = finite.size
    if m == 0:
        return out
    order = finite[np.argsort(p[finite], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)  # step-down: adjusted p never decreases
    return out


def significance_stars(p: float | None) -> str:
    """Conventional star code for a p-value; '' when the test could not be run."""
    if p is None or not math.isfinite(p):
        return ""
    if p < 0.001:
        return "***"
    if p < 0.01:
        return "**"
    if p < 0.05:
        return "*"
    return "ns"


def signed_stars(p: float | None, mean_diff: float) -> str:
    """Stars with the direction: '+*' the arm is significantly better, '−*' worse, 'ns', ''.

    A bare star would hide that an arm was significantly *worse* than the baseline.
    """
    stars = significance_stars(p)
    if stars in ("", "ns"):
        return stars
    if not math.isfinite(mean_diff) or mean_diff == 0.0:
        return stars
    return ("+" if mean_diff > 0 else MINUS) + stars
