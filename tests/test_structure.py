"""Homogeneity, independence, trend and Holm: each detects its defect and passes clean masks.

Statistical tests state (false-fail rate, what they detect).  A detection test fails only if
the check misses a defect; its false-fail rate is that miss probability, computed from the
noncentral distribution of the statistic where it is not astronomically small.
"""

import dataclasses

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from scipy import stats

from dropout_stats import (
    agreement_test,
    holm_bonferroni,
    homogeneity_test,
    independence_test,
    pair_independence_test,
    trend_test,
)

ALPHA = 1e-9  # level of each check below


@pytest.mark.statistical(false_fail_rate=1e-9)
def test_homogeneity_passes_a_uniform_mask(seed):
    rng = np.random.default_rng(seed)
    n = np.full(16, 5000)
    assert homogeneity_test(rng.binomial(n, 0.8), n).pvalue > ALPHA


@pytest.mark.statistical(false_fail_rate=1e-12)
def test_homogeneity_catches_rates_that_average_to_the_right_value(seed):
    """0.1 on one half and 0.3 on the other averages to 0.2 and must fail.

    With 20,000 draws a half the chi-square noncentrality is ~1,300: a miss at level 1e-9 has
    probability < 1e-100."""
    rng = np.random.default_rng(seed)
    keep = np.concatenate([rng.random(20_000) >= 0.1, rng.random(20_000) >= 0.3])
    r = homogeneity_test(np.array([keep[:20_000].sum(), keep[20_000:].sum()]), np.array([20_000, 20_000]))
    assert r.pvalue < ALPHA


@pytest.mark.statistical(false_fail_rate=1e-9)
def test_homogeneity_pvalues_are_calibrated(seed):
    """Chi-square p-values under the null: one-sided KS (too small?) at level 1e-9 on 2000 runs."""
    rng = np.random.default_rng(seed)
    n = np.full(10, 2000)
    p = [homogeneity_test(rng.binomial(n, 0.7), n).pvalue for _ in range(2000)]
    assert stats.kstest(p, "uniform", alternative="greater").pvalue > ALPHA


@pytest.mark.statistical(false_fail_rate=2e-9)
def test_independent_masks_pass_independence_and_agreement(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.random(100_000) >= 0.2, rng.random(100_000) >= 0.2
    assert independence_test(a, b).pvalue > ALPHA
    assert agreement_test(a, b, 0.8).pvalue > ALPHA


@pytest.mark.statistical(false_fail_rate=1e-12)
def test_reused_and_correlated_masks_fail(seed):
    """A reused mask agrees everywhere; a 10%-shared mask has odds ratio ~1.9 (a miss at 1e-9
    with 100,000 positions has probability far below 1e-12)."""
    rng = np.random.default_rng(seed)
    a = rng.random(100_000) >= 0.2
    assert independence_test(a, a.copy()).pvalue < ALPHA
    assert agreement_test(a, a.copy(), 0.8).pvalue < ALPHA
    b = np.where(rng.random(100_000) < 0.1, a, rng.random(100_000) >= 0.2)
    assert independence_test(a, b).pvalue < ALPHA


@pytest.mark.statistical(false_fail_rate=1e-9)
def test_pairs_of_independent_neighbours_pass(seed):
    rng = np.random.default_rng(seed)
    m = rng.random((200, 500)) >= 0.3
    assert pair_independence_test(m, axis=-1).pvalue > ALPHA / 2
    assert pair_independence_test(m, axis=0).pvalue > ALPHA / 2


@pytest.mark.statistical(false_fail_rate=ALPHA / 2)
def test_pairs_catch_a_mask_shared_across_the_batch(seed):
    """Rows 2i and 2i+1 agree everywhere: p ~ 0 (certain).  Along the row the mask is still
    random, but only one row's 250 pairs are independent draws: the 200 copies repeat them, and
    testing all 50,000 pairs multiplied any chance deviation by 200 (it failed at base seed 2 of
    the seed sweep, p = 6.5e-59, under a declared 1e-12).  One row is tested, at ALPHA / 2."""
    rng = np.random.default_rng(seed)
    row = rng.random(500) >= 0.3
    batch = np.broadcast_to(row, (200, 500))
    assert pair_independence_test(batch, axis=0).pvalue < ALPHA
    assert pair_independence_test(batch[:1], axis=1).pvalue > ALPHA / 2


@pytest.mark.statistical(false_fail_rate=1e-9)
def test_trend_passes_a_stable_rate(seed):
    rng = np.random.default_rng(seed)
    n = np.full(20, 10_000)
    assert trend_test(rng.binomial(n, 0.8), n).pvalue > ALPHA


def _trend_miss_bound(n, keeps, alpha):
    """P(|z| < z_alpha) for the Cochran-Armitage test when call t keeps with probability
    keeps[t]: with equal n the numerator is N = sum (t - t_bar) k_t, and since p_bar (1 - p_bar)
    <= 1/4, |z| >= |N| / sqrt(S / 4) with S = n sum (t - t_bar)^2; a miss needs |N| below
    z_alpha sqrt(S / 4), i.e. N at least gap above its mean E[N] < 0; Bernstein's inequality on
    N's independent terms (t - t_bar) B, each within +-max|t - t_bar|, bounds that."""
    t = np.arange(len(keeps)) - (len(keeps) - 1) / 2
    mean = float(np.sum(t * n * np.asarray(keeps)))
    s = n * float(np.sum(t * t))
    z_alpha = -stats.norm.ppf(alpha / 2)
    gap = abs(mean) - z_alpha * np.sqrt(s / 4)
    var = float(np.sum(t * t * n * np.asarray(keeps) * (1 - np.asarray(keeps))))
    b = float(np.max(np.abs(t)))
    return float(np.exp(-gap * gap / (2 * (var + b * gap / 3)))) if gap > 0 else 1.0


MISS = _trend_miss_bound(10_000, np.linspace(0.80, 0.70, 20), ALPHA)


@pytest.mark.statistical(false_fail_rate=1e-30)  # MISS, computed: asserted below to be smaller
def test_trend_catches_a_rate_drifting_with_the_call_count(seed):
    """Keep 0.80 -> 0.70 over 20 calls of 10,000: E[z] ~ -31 against a cut-off of 6.1 at
    1e-9; the miss chance MISS is bounded by Bernstein's inequality (see _trend_miss_bound).
    (The drift 0.80 -> 0.78 declared here before gives E[z] ~ -6.7: a miss in 29% of runs.)"""
    assert MISS < 1e-30, MISS
    assert _trend_miss_bound(10_000, np.linspace(0.80, 0.78, 20), ALPHA) == 1.0  # no bound: too weak
    rng = np.random.default_rng(seed)
    n = np.full(20, 10_000)
    k = rng.binomial(n, np.linspace(0.80, 0.70, 20))
    assert trend_test(k, n).pvalue < ALPHA


def test_holm_rejects_in_order_and_stops():
    r = holm_bonferroni([0.01, 0.04, 0.03, 0.2], 0.05)
    # thresholds 0.05/4, 0.05/3, 0.05/2, 0.05/1 in p order: 0.01 <= 0.0125 yes; 0.03 <= 0.0167 no
    assert r.rejected == (True, False, False, False)
    assert r.thresholds[0] == 0.0125
    assert holm_bonferroni([1e-9, 1e-9], 1e-6).rejected == (True, True)


@given(st.lists(st.floats(0, 1), min_size=1, max_size=30), st.sampled_from([1e-6, 0.01, 0.05]))
def test_holm_is_a_step_down_between_bonferroni_and_unadjusted(pvalues, alpha):
    r = holm_bonferroni(pvalues, alpha)
    p = np.asarray(pvalues)
    rejected = np.asarray(r.rejected)
    m = p.size
    assert np.all(rejected[p <= alpha / m])  # everything Bonferroni rejects
    assert not np.any(rejected[p > alpha])  # nothing an unadjusted test keeps
    if rejected.any():  # the smallest p-values, in a prefix
        assert p[rejected].max() <= p[~rejected].min(initial=1.0)
    order = np.argsort(p, kind="stable")
    for rank, idx in enumerate(order):  # step-down: stop at the first miss
        if not rejected[idx]:
            assert p[idx] > alpha / (m - rank)
            break


def test_holm_stops_at_the_first_acceptance():
    # m = 3 at 0.05: thresholds 0.0167, 0.025, 0.05 in p order; 0.03 > 0.025 stops the walk, so
    # 0.04 is kept although it is below 0.05 (a Holm without the stop would reject it)
    assert holm_bonferroni([0.001, 0.03, 0.04], 0.05).rejected == (True, False, False)


@given(st.lists(st.floats(0, 1), min_size=1, max_size=12), st.sampled_from([1e-6, 0.05]))
def test_holm_equals_its_definition(pvalues, alpha):
    """Holm (1979) as written: H_(i) is rejected iff p_(j) <= alpha / (m - j) for every j <= i
    (0-based ranks); an independent formulation of the step-down."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: (pvalues[i], i))
    want = [False] * m
    for rank, idx in enumerate(order):
        want[idx] = all(pvalues[order[j]] <= alpha / (m - j) for j in range(rank + 1))
    assert list(holm_bonferroni(pvalues, alpha).rejected) == want


@given(st.lists(st.integers(1, 5000), min_size=2, max_size=8), st.data())
def test_homogeneity_is_scipys_chi_square_of_the_2_by_g_table(n, data):
    k = [data.draw(st.integers(0, v)) for v in n]
    total = sum(k)
    assume_ok = 0 < total < sum(n)
    if not assume_ok:
        return
    table = np.array([k, [v - kk for v, kk in zip(n, k, strict=True)]])
    chi2, p, dof, _ = stats.chi2_contingency(table, correction=False)
    r = homogeneity_test(np.array(k), np.array(n))
    assert r.statistic == pytest.approx(chi2, rel=1e-9) and r.pvalue == pytest.approx(p, rel=1e-9, abs=1e-300)


@given(st.lists(st.integers(50, 5000), min_size=3, max_size=10), st.data())
def test_trend_is_two_sided_and_equals_the_textbook_form(n, data):
    """Cochran-Armitage in its textbook form, z = (sum t k - t_bar K) / sqrt(p q (sum n t^2 -
    N t_bar^2)), with t_bar the n-weighted mean score; reversing the order flips z's sign and
    keeps the two-sided p-value."""
    k = np.array([data.draw(st.integers(0, v)) for v in n])
    n = np.array(n)
    if not 0 < k.sum() < n.sum():
        return
    t = np.arange(len(n))
    big_n, big_k = n.sum(), k.sum()
    p = big_k / big_n
    t_bar = (n * t).sum() / big_n
    z = ((t * k).sum() - t_bar * big_k) / np.sqrt(p * (1 - p) * ((n * t * t).sum() - big_n * t_bar**2))
    r = trend_test(k, n)
    assert r.statistic == pytest.approx(z, rel=1e-9, abs=1e-12)
    assert r.pvalue == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-9, abs=1e-300)
    assert trend_test(k[::-1], n[::-1]).pvalue == pytest.approx(r.pvalue, rel=1e-9, abs=1e-300)


# -- the contract at its edges: validation, degenerate tables, defaults (exact, no randomness) ---


def test_results_are_frozen():
    r = homogeneity_test(np.array([1, 2]), np.array([3, 3]))
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.pvalue = 0.5
    with pytest.raises(dataclasses.FrozenInstanceError):
        holm_bonferroni([0.1], 0.05).rejected = (True,)


@pytest.mark.parametrize(
    "kept,n,error,match",
    [
        ([[1, 2]], [[3, 3]], ValueError, r"1-D of one length"),  # 2-D, same shapes
        ([1, 2], [3, 3, 3], ValueError, r"1-D of one length"),  # 1-D, different lengths
        ([1], [3], ValueError, r"kept \(length 1\) must hold at least 2 groups"),
        ([1.0, 2.0], [3, 3], TypeError, r"integer arrays"),  # kept float, n int
        ([1, 2], [3.0, 3.0], TypeError, r"integer arrays"),
        ([-1, 1], [2, 2], ValueError, r"group 0: kept \(-1\) must be in \[0, n \(2\)\]"),
        ([1, 0], [2, 0], ValueError, r"group 1: kept \(0\) must be in \[0, n \(0\)\]"),
        ([1, 3], [2, 2], ValueError, r"group 1: kept \(3\) must be in \[0, n \(2\)\]"),
        # the first bad group is named, after valid groups at every bound (kept 0, kept = n, n = 1)
        ([0, 1, 5], [1, 1, 2], ValueError, r"group 2: kept \(5\) must be in \[0, n \(2\)\]"),
    ],
)
@pytest.mark.parametrize("test", [homogeneity_test, trend_test])
def test_counts_are_validated(test, kept, n, error, match):
    with pytest.raises(error, match=match):
        test(np.array(kept), np.array(n))


@pytest.mark.parametrize("test", [homogeneity_test, trend_test])
def test_counts_at_their_bounds_are_accepted(test):
    """kept = 0, kept = n and n = 1 are valid groups (no error, every draw counted)."""
    r = test(np.array([0, 1, 3, 1]), np.array([1, 1, 3, 2]))
    assert r.n == 7 and r.detail == ("4 groups, pooled keep 0.714286" if test is homogeneity_test else "4 calls")


@pytest.mark.parametrize("test", [homogeneity_test, trend_test])
@pytest.mark.parametrize("kept", [[0, 0, 0], [4, 5, 6]])
def test_all_kept_or_all_dropped_is_no_evidence(test, kept):
    r = test(np.array(kept), np.array([4, 5, 6]))
    assert (r.statistic, r.pvalue, r.n, r.detail) == (0.0, 1.0, 15, "all kept or all dropped")


tables = st.tuples(*[st.integers(0, 12)] * 4).filter(
    lambda t: min(t[0] + t[1], t[0] + t[2], t[2] + t[3], t[1] + t[3]) > 0
)


@given(tables)
@example((3, 0, 2, 4))
@example((3, 2, 0, 4))
@example((0, 2, 3, 4))
@example((3, 2, 4, 0))
@example((0, 3, 4, 0))
@example((3, 0, 0, 4))
def test_independence_is_scipys_fisher_test_with_its_odds_ratio(t):
    """The 2 x 2 table of two masks against scipy.stats.fisher_exact on the same counts: the
    sample odds ratio (inf when an off-diagonal cell is 0) and the two-sided p-value."""
    n11, n10, n01, n00 = t
    a = np.array([True] * (n11 + n10) + [False] * (n01 + n00))
    b = np.array([True] * n11 + [False] * n10 + [True] * n01 + [False] * n00)
    r = independence_test(a, b)
    ref = stats.fisher_exact([[n11, n10], [n01, n00]])
    assert r.statistic == pytest.approx(ref.statistic, rel=1e-12, abs=0) and r.n == a.size
    assert r.pvalue == pytest.approx(ref.pvalue, rel=1e-9, abs=0)
    assert r.detail == f"both kept {n11}, only first {n10}, only second {n01}"


@pytest.mark.parametrize(
    "a,b",
    [
        ([True, True, True], [True, False, True]),  # a all kept
        ([False, False], [True, False]),  # a all dropped
        ([True, False, True], [False, False, False]),
    ],
)  # b all dropped
def test_a_constant_mask_has_nothing_to_test(a, b):
    r = independence_test(np.array(a), np.array(b))
    assert (r.statistic, r.pvalue, r.detail) == (1.0, 1.0, "a margin is constant: nothing to test")


def test_one_element_masks_are_tested_and_empty_ones_refused():
    one = np.array([True])
    assert independence_test(one, one).pvalue == 1.0
    assert agreement_test(one, one, 0.5).statistic == 1.0
    for f in (lambda e: independence_test(e, e), lambda e: agreement_test(e, e, 0.5)):
        with pytest.raises(ValueError, match=r"mask_a \(size 0\) must not be empty"):
            f(np.array([], bool))


def test_agreement_is_scipys_binomial_test_on_the_agreeing_count():
    a = np.array([True] * 60 + [False] * 40)
    b = np.array([True] * 50 + [False] * 30 + [True] * 20)
    r = agreement_test(a, b, 0.7)  # agree on 50 + 20 = 70 of 100; p^2 + q^2 = 0.58
    assert r.statistic == 0.7 and r.n == 100
    assert r.pvalue == pytest.approx(stats.binomtest(70, 100, 0.7**2 + 0.3**2).pvalue, rel=1e-9, abs=0)


def _pairs_reference(mask, axis):
    """Fisher's exact test on the disjoint pairs (0, 1), (2, 3), ... along axis, built by hand."""
    m = np.moveaxis(mask, axis, 0)
    half = m.shape[0] // 2
    first = np.concatenate([m[2 * i].ravel() for i in range(half)])
    second = np.concatenate([m[2 * i + 1].ravel() for i in range(half)])
    table = [[np.sum(first & second), np.sum(first & ~second)], [np.sum(~first & second), np.sum(~first & ~second)]]
    return stats.fisher_exact(table).pvalue


@pytest.mark.parametrize(
    "shape,axis", [((7, 5, 3), 0), ((7, 5, 3), 1), ((7, 5, 3), -1), ((7, 5, 3), -3), ((4, 2), 1), ((9,), 0)]
)
def test_pairs_are_the_disjoint_neighbours_along_the_axis(shape, axis):
    """Odd lengths drop the last element; any axis, negative or not, and length exactly 2."""
    rng = np.random.default_rng(11)
    mask = rng.random(shape) < 0.6
    mask.flat[::4] = True  # some structure, so that p-values differ between axes
    r = pair_independence_test(mask, axis=axis)
    assert r.pvalue == pytest.approx(_pairs_reference(mask, axis), rel=1e-9, abs=0)


def test_pairs_default_to_the_last_axis():
    rng = np.random.default_rng(12)
    mask = rng.random((6, 8, 10)) < 0.5
    mask[1::2] = mask[0::2]  # pairs along axis 0 are copies; along the last axis, independent
    assert pair_independence_test(mask).pvalue == pair_independence_test(mask, axis=2).pvalue
    assert pair_independence_test(mask).pvalue != pair_independence_test(mask, axis=0).pvalue


@pytest.mark.parametrize(
    "mask,axis,match",
    [
        (np.array(True), -1, r"mask \(a scalar\) must have at least one axis"),
        (np.ones((3, 4), bool), 2, r"axis \(2\) must be in \[-2, 2\)"),
        (np.ones((3, 4), bool), -3, r"axis \(-3\) must be in \[-2, 2\)"),
        (np.ones((1, 4, 5), bool), 0, r"mask \(length 1 along axis 0\) must have >= 2 elements there"),
    ],
)
def test_pairs_refuse_what_has_no_pair(mask, axis, match):
    with pytest.raises(ValueError, match=match):
        pair_independence_test(mask, axis=axis)


@pytest.mark.parametrize(
    "pvalues,match",
    [
        ([[0.1, 0.2]], "must be 1-D"),
        ([0.1, np.nan], r"must lie in \[0, 1\]"),
        ([-0.1, 0.5], r"must lie in \[0, 1\]"),
        ([0.5, 1.1], r"must lie in \[0, 1\]"),
    ],
)
def test_holm_refuses_what_is_not_a_p_value(pvalues, match):
    with pytest.raises(ValueError, match=match):
        holm_bonferroni(pvalues, 0.05)


def test_holm_rejects_a_p_value_equal_to_its_threshold():
    """p_(i) <= alpha / (m - i), the equality included: p-values exactly at 0.05 / 2 and 0.05."""
    assert holm_bonferroni([0.05 / 2, 0.05], 0.05).rejected == (True, True)
