"""Homogeneity, independence, trend and Holm: each detects its defect and passes clean masks.

Statistical tests state (false-fail rate, what they detect).  A detection test fails only if
the check misses a defect; its false-fail rate is that miss probability, computed from the
noncentral distribution of the statistic where it is not astronomically small.
"""
import numpy as np
import pytest
from hypothesis import given, strategies as st
from scipy import stats

from dropout_stats import (agreement_test, holm_bonferroni, homogeneity_test, independence_test,
                           pair_independence_test, trend_test)

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


@pytest.mark.statistical(false_fail_rate=1e-12)
def test_pairs_catch_a_mask_shared_across_the_batch(seed):
    rng = np.random.default_rng(seed)
    row = rng.random(500) >= 0.3
    batch = np.broadcast_to(row, (200, 500))
    assert pair_independence_test(batch, axis=0).pvalue < ALPHA
    assert pair_independence_test(batch, axis=1).pvalue > 0  # along the row it is still random


@pytest.mark.statistical(false_fail_rate=1e-9)
def test_trend_passes_a_stable_rate(seed):
    rng = np.random.default_rng(seed)
    n = np.full(20, 10_000)
    assert trend_test(rng.binomial(n, 0.8), n).pvalue > ALPHA


@pytest.mark.statistical(false_fail_rate=1e-12)
def test_trend_catches_a_rate_drifting_with_the_call_count(seed):
    """Keep 0.80 -> 0.78 over 20 calls of 10,000: z ~ 16, a miss at 1e-9 (|z| < 6.1) needs a
    10-sigma deviation."""
    rng = np.random.default_rng(seed)
    n = np.full(20, 10_000)
    k = rng.binomial(n, np.linspace(0.80, 0.78, 20))
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
    assert np.all(rejected[p <= alpha / m])            # everything Bonferroni rejects
    assert not np.any(rejected[p > alpha])             # nothing an unadjusted test keeps
    if rejected.any():                                 # the smallest p-values, in a prefix
        assert p[rejected].max() <= p[~rejected].min(initial=1.0)
    order = np.argsort(p, kind="stable")
    for rank, idx in enumerate(order):                 # step-down: stop at the first miss
        if not rejected[idx]:
            assert p[idx] > alpha / (m - rank)
            break
