"""The sequential rate test: its two error rates, measured on numpy Bernoulli draws, and its
boundaries derived from its documented design."""

import dataclasses
import math

import numpy as np
import pytest
from scipy import stats

from dropout_stats import (
    SequentialRateTest,
    min_num_samples_for_rate_test,
    rejection_region_for_rate_test,
    sequential_rate_test,
)


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
BOUND = stats.binom.isf(1e-9, RUNS, 0.05)  # 163: exceeded with probability <= 1e-9 at rate 0.05
DOUBLED_POWER = stats.binom.sf(BOUND, RUNS, 0.10)


@pytest.mark.statistical(false_fail_rate=2e-9)
def test_error_rates_hold_at_loose_levels(seed):
    """2000 runs at alpha = beta = 0.05: the false-fail count under the null and the false-pass
    count at keep + discrepancy are Binomial(2000, <= 0.05); each exceeds BOUND (the level-1e-9
    bound of that binomial, 163) with probability <= 1e-9.  A doubled error rate (0.1) exceeds
    it with probability DOUBLED_POWER (0.997, computed below), so this checks the guarantee."""
    assert BOUND == 163 and DOUBLED_POWER > 0.99
    rng = np.random.default_rng(seed)
    fails = sum(
        not sequential_rate_test(
            _binomial_draws(rng, 0.7), 0.7, 0.03, false_fail_rate=0.05, false_pass_rate=0.05
        ).passed
        for _ in range(RUNS)
    )
    passes = sum(
        sequential_rate_test(_binomial_draws(rng, 0.73), 0.7, 0.03, false_fail_rate=0.05, false_pass_rate=0.05).passed
        for _ in range(RUNS)
    )
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


def test_result_is_frozen_and_its_statistic_is_the_kept_share():
    t = SequentialRateTest(0.8, 0.1)
    t.update(0, 10_000)
    r = t.result()
    assert r.statistic == 0 and (r.kept, r.n) == (0, 10_000)
    assert r.pvalue == stats.binomtest(0, 10_000, 0.8).pvalue
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.passed = True
    t = SequentialRateTest(0.5, 0.1)
    t.update(30, 40)
    t.stop()
    assert t.result().statistic == 0.75


def test_default_error_rates_are_the_documented_ones():
    """Defaults 1e-6 (false fail) and 1e-3 (false pass): the truncation design follows from them."""
    expected = min_num_samples_for_rate_test(0.8, 0.01, false_fail_rate=1e-7, false_pass_rate=5e-4)
    assert SequentialRateTest(0.8, 0.01).n_max == expected
    sizes = []

    def draw(m):
        sizes.append(m)
        return m, m  # all kept: fails at once

    r = sequential_rate_test(draw, 0.8, 0.01)
    assert r.n_max == expected and sizes[0] == expected // 64


def test_remaining_is_zero_at_and_past_n_max():
    t = SequentialRateTest(0.5, 0.05, false_fail_rate=1e-3, false_pass_rate=1e-3)
    assert t.remaining() == t.n_max
    t.update(t.n_max // 2, t.n_max)
    assert (t.remaining(), t.verdict) == (0, "pass")
    t = SequentialRateTest(0.5, 0.05, false_fail_rate=1e-3, false_pass_rate=1e-3)
    t.update(0, 2 * t.n_max)
    assert t.remaining() == 0


def test_truncation_and_stop_say_whether_the_exact_test_rejects():
    """One batch of n_max draws: where neither likelihood ratio crosses a boundary, the fixed-n
    test decides, and its reason says which way.  Scanned around both ends of its region."""
    n = SequentialRateTest(0.5, 0.05, false_fail_rate=1e-3, false_pass_rate=1e-3).n_max
    region = rejection_region_for_rate_test(n, 0.5, false_fail_rate=1e-4)
    seen = set()
    for k in [*range(region.low - 40, region.low + 40), *range(region.high - 40, region.high + 40)]:
        t = SequentialRateTest(0.5, 0.05, false_fail_rate=1e-3, false_pass_rate=1e-3)
        t.update(k, n)
        if "truncated" in t.reason:
            word = "rejects" if region.rejects(k) else "accepts"
            assert (t.verdict, word in t.reason) == ("fail" if region.rejects(k) else "pass", True), (k, t.reason)
            seen.add(t.verdict)
    assert seen == {"fail", "pass"}
    t = SequentialRateTest(0.5, 0.05, false_fail_rate=1e-3, false_pass_rate=1e-3)
    t.update(10, 20)
    assert t.stop() == "pass" and "stopped early" in t.reason and "accepts" in t.reason
    assert t.stop() == "pass"  # stopping an ended test changes nothing
    t = SequentialRateTest(0.5, 0.05, false_fail_rate=1e-3, false_pass_rate=1e-3)
    t.update(0, 20)
    assert stats.binomtest(0, 20, 0.5).pvalue <= 1e-4  # the exact test's verdict, independently
    assert t.stop() == "fail" and "rejects" in t.reason


def test_stop_without_draws_and_result_before_the_end_are_errors():
    t = SequentialRateTest(0.5, 0.05)
    with pytest.raises(RuntimeError, match="no draws"):
        t.stop()
    t.update(1, 1)
    with pytest.raises(RuntimeError, match="has not ended"):
        t.result()


def test_alternatives_at_zero_and_one_are_ruled_out_by_one_kept_and_one_dropped_draw():
    """keep 0.5 +- 0.5: keep 0 cannot keep and keep 1 cannot drop, so one draw of each clears
    both sides at once (a log likelihood ratio of -inf), and a run of kept draws fails."""
    t = SequentialRateTest(0.5, 0.5)
    assert t.update(1, 2) == "pass"
    t = SequentialRateTest(0.5, 0.5)
    verdict = "continue"
    while verdict == "continue":
        verdict = t.update(1, 1)
    assert verdict == "fail" and t.n == math.ceil(math.log(2 / 0.9e-6) / math.log(2))  # sides / alpha_seq


def test_batch_one_is_allowed_and_every_default_batch_is_at_least_one_draw():
    sizes = []

    def draw(m):
        sizes.append(m)
        return m, m

    sequential_rate_test(draw, 0.5, 0.4, batch=1)
    assert set(sizes) == {1}
    sizes.clear()
    r = sequential_rate_test(draw, 0.5, 0.45, false_fail_rate=0.01, false_pass_rate=0.1)
    assert r.n_max < 64 and sizes[0] == 1  # n_max // 64 would be 0
    with pytest.raises(ValueError, match=r"batch \(0\)"):
        sequential_rate_test(draw, 0.5, 0.4, batch=0)
    with pytest.raises(RuntimeError, match="no informative draws"):
        sequential_rate_test(lambda m: (0, 0), 0.5, 0.4)
