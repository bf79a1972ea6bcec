"""The sequential rate test: its two error rates, measured on numpy Bernoulli draws, and its
boundaries derived from its documented design."""
import math

import numpy as np
import pytest
from scipy import stats

from dropout_stats import (SequentialRateTest, min_num_samples_for_rate_test,
                           rejection_region_for_rate_test, sequential_rate_test)


def _binomial_draws(rng, keep):
    return lambda m: (int(rng.binomial(m, keep)), m)


@pytest.mark.statistical(false_fail_rate=1e-10)
def test_passes_the_null_at_its_own_rate(seed):
    rng = np.random.default_rng(seed)
    r = sequential_rate_test(_binomial_draws(rng, 0.8), 0.8, 0.004, false_fail_rate=1e-10)
    assert r.passed, r.reason


@pytest.mark.statistical(false_fail_rate=2e-10)
@pytest.mark.parametrize("shift", [-1, 1])
def test_fails_a_keep_probability_off_by_the_discrepancy(seed, shift):
    rng = np.random.default_rng(seed)
    r = sequential_rate_test(_binomial_draws(rng, 0.8 + shift * 0.004), 0.8, 0.004, false_pass_rate=1e-10)
    assert not r.passed and r.n <= r.n_max


RUNS = 2000
BOUND = stats.binom.isf(1e-9, RUNS, 0.05)   # 163: exceeded with probability <= 1e-9 at rate 0.05
DOUBLED_POWER = stats.binom.sf(BOUND, RUNS, 0.10)


@pytest.mark.statistical(false_fail_rate=2e-9)
def test_error_rates_hold_at_loose_levels(seed):
    """2000 runs at alpha = beta = 0.05: the false-fail count under the null and the false-pass
    count at keep + discrepancy are Binomial(2000, <= 0.05); each exceeds BOUND (the level-1e-9
    bound of that binomial, 163) with probability <= 1e-9.  A doubled error rate (0.1) exceeds
    it with probability DOUBLED_POWER (0.997, computed below), so this checks the guarantee."""
    assert BOUND == 163 and DOUBLED_POWER > 0.99
    rng = np.random.default_rng(seed)
    fails = sum(not sequential_rate_test(_binomial_draws(rng, 0.7), 0.7, 0.03,
                                         false_fail_rate=0.05, false_pass_rate=0.05).passed
                for _ in range(RUNS))
    passes = sum(sequential_rate_test(_binomial_draws(rng, 0.73), 0.7, 0.03,
                                      false_fail_rate=0.05, false_pass_rate=0.05).passed
                 for _ in range(RUNS))
    assert fails <= BOUND and passes <= BOUND, (fails, passes, BOUND)


def test_truncates_at_n_max_and_decides_by_the_exact_test():
    p0, p1 = 0.5, 0.55
    t = SequentialRateTest(p0, 0.05, false_fail_rate=1e-3, false_pass_rate=1e-3)
    # at this keep probability the likelihood ratio against p0 + 0.05 has zero drift
    neutral = np.log((1 - p0) / (1 - p1)) / np.log(p1 * (1 - p0) / (p0 * (1 - p1)))
    verdict = "continue"
    while verdict == "continue":
        step = min(50, t.remaining())
        kept = round((t.n + step) * neutral) - t.kept
        verdict = t.update(kept, step)
    r = t.result()
    assert r.n == r.n_max and "truncated" in r.reason
    region = rejection_region_for_rate_test(r.n, p0, false_fail_rate=1e-4)
    assert r.passed == (not region.rejects(r.kept))
    assert r.n_max > min_num_samples_for_rate_test(p0, 0.05, false_fail_rate=1e-3, false_pass_rate=1e-3)


def test_update_after_the_end_is_an_error():
    t = SequentialRateTest(0.8, 0.1)
    t.update(0, 10_000)
    assert t.verdict == "fail"
    with pytest.raises(RuntimeError, match="already ended"):
        t.update(1, 1)


def test_boundaries_are_villes_with_the_documented_split():
    """The design, derived here from its statement (sequential.py's docstring) rather than from
    the code: 90% of alpha to the two SPRTs, Ville's boundary sides / alpha_seq for each, a side
    cleared at beta / 2, truncation at the fixed-n design for (alpha / 10, beta / 2).

    Keep 0.5, discrepancy 0.1, alpha = beta = 1e-3: kept draws alone raise the log likelihood
    ratio for 0.6 by log 1.2 each, so the test fails at the first k with k log 1.2 >=
    log(2 / 0.0009): k = 43 (42 without the factor 2 of the sides, 42 with all of alpha).
    Kept and dropped in turn lower both ratios by log(0.6 * 0.4 / 0.25) a pair, so both sides
    clear at the first pair count j with j log 0.96 <= log(beta / 2): j = 187 (170 at beta)."""
    t = SequentialRateTest(0.5, 0.1, false_fail_rate=1e-3, false_pass_rate=1e-3)
    k = 0
    while t.verdict == "continue":
        t.update(1, 1)
        k += 1
    assert (t.verdict, k) == ("fail", math.ceil(math.log(2 / 0.9e-3) / math.log(1.2))) == ("fail", 43)
    t = SequentialRateTest(0.5, 0.1, false_fail_rate=1e-3, false_pass_rate=1e-3)
    j = 0
    while t.verdict == "continue":
        t.update(1, 2)
        j += 1
    assert (t.verdict, j) == ("pass", math.ceil(math.log(5e-4) / math.log(0.96))) == ("pass", 187)
    assert t.n_max == min_num_samples_for_rate_test(0.5, 0.1, false_fail_rate=1e-4, false_pass_rate=5e-4)
