"""The paired tests agree with scipy and with the Nadeau-Bengio formula worked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from locseg.experiments.stats import (
    MINUS,
    holm_adjust,
    nadeau_bengio_ttest,
    paired_differences,
    paired_ttest,
    signed_stars,
    wilcoxon_paired,
)

A = [0.81, 0.78, 0.84, 0.80, 0.83]
B = [0.76, 0.77, 0.79, 0.74, 0.80]


def test_paired_ttest_equals_scipy_ttest_rel():
    res = paired_ttest(A, B)
    ref = stats.ttest_rel(A, B)
    assert res.statistic == pytest.approx(ref.statistic, rel=1e-12)
    assert res.pvalue == pytest.approx(ref.pvalue, rel=1e-12)
    assert res.n == 5
    assert res.mean_diff == pytest.approx(np.mean(np.subtract(A, B)))


def test_pairs_with_a_nan_are_dropped_not_propagated():
    res = paired_ttest([*A, math.nan], [*B, 0.5])
    assert res.n == 5
    assert res.pvalue == pytest.approx(stats.ttest_rel(A, B).pvalue)


@pytest.mark.parametrize("test", [paired_ttest, wilcoxon_paired])
@pytest.mark.parametrize("n", [0, 1])
def test_fewer_than_two_pairs_give_nan_pvalue(test, n):
    res = test(A[:n], B[:n])
    assert res.n == n
    assert math.isnan(res.pvalue)


def test_unequal_lengths_are_refused_with_a_hint():
    with pytest.raises(ValueError, match="equal-length.*match the pairs"):
        paired_differences([1.0, 2.0], [1.0])


def test_wilcoxon_equals_scipy():
    res = wilcoxon_paired(A, B)
    ref = stats.wilcoxon(np.subtract(A, B))
    assert res.statistic == pytest.approx(ref.statistic)
    assert res.pvalue == pytest.approx(ref.pvalue)


def test_wilcoxon_all_zero_differences_means_no_evidence():
    res = wilcoxon_paired([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert (res.statistic, res.pvalue, res.n, res.mean_diff) == (0.0, 1.0, 3, 0.0)


def test_nadeau_bengio_equals_hand_computation():
    diffs = [0.02, 0.05, 0.01, 0.04, 0.03]  # mean 0.03, sample variance 2.5e-4
    res = nadeau_bengio_ttest(diffs, n_train=80, n_test=20)
    # t = 0.03 / sqrt((1/5 + 20/80) * 2.5e-4) = 0.03 / sqrt(1.125e-4) = sqrt(8)
    assert res.statistic == pytest.approx(math.sqrt(8.0), rel=1e-9)
    assert res.pvalue == pytest.approx(2 * stats.t.sf(math.sqrt(8.0), df=4), rel=1e-9)
    assert (res.n, res.mean_diff) == (5, pytest.approx(0.03))


def test_nadeau_bengio_is_more_conservative_than_the_plain_test():
    diffs = np.subtract(A, B)
    plain = paired_ttest(A, B)
    corrected = nadeau_bengio_ttest(diffs, n_train=80, n_test=20)
    assert corrected.pvalue > plain.pvalue
    assert abs(corrected.statistic) < abs(plain.statistic)
    # with a vanishing test/train ratio the correction disappears and the plain test comes back
    limit = nadeau_bengio_ttest(diffs, n_train=1e12, n_test=1)
    assert limit.statistic == pytest.approx(plain.statistic, rel=1e-9)
    assert limit.pvalue == pytest.approx(plain.pvalue, rel=1e-6)


def test_nadeau_bengio_handles_one_fold_and_rejects_bad_sizes():
    assert math.isnan(nadeau_bengio_ttest([0.1], n_train=80, n_test=20).pvalue)
    with pytest.raises(ValueError, match="n_train=0"):
        nadeau_bengio_ttest([0.1, 0.2], n_train=0, n_test=20)


def test_holm_adjust_on_known_pvalues():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max
    adjusted = holm_adjust([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])


def test_holm_keeps_nan_out_of_the_family_and_caps_at_one():
    adjusted = holm_adjust([0.01, math.nan, 0.04])
    assert adjusted[0] == pytest.approx(0.02) and adjusted[2] == pytest.approx(0.04)
    assert math.isnan(adjusted[1])
    np.testing.assert_allclose(holm_adjust([0.6, 0.7]), [1.0, 1.0])
    assert holm_adjust([]).size == 0


@pytest.mark.parametrize(
    ("p", "diff", "mark"),
    [
        (0.0004, 0.1, "+***"),
        (0.004, -0.1, f"{MINUS}**"),
        (0.04, -0.1, f"{MINUS}*"),
        (0.2, -0.1, "ns"),
        (math.nan, 0.1, ""),
    ],
)
def test_signed_stars_show_the_direction(p, diff, mark):
    assert signed_stars(p, diff) == mark
