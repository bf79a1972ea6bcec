"""The sequential rate test: its two error rates, measured on numpy Bernoulli draws."""
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


@pytest.mark.statistical(false_fail_rate=2e-9)
def test_error_rates_hold_at_loose_levels(seed):
    """300 runs at alpha = beta = 0.05: the false-fail count under the null and the false-pass
    count at keep + discrepancy are Binomial(300, <= 0.05); each must stay below the level-1e-9
    bound of that binomial (35).  A doubled error rate (0.1: ~30 of 300) would show as a
    count near that bound; this checks the guarantee, not a tuned constant."""
    rng = np.random.default_rng(seed)
    bound = stats.binom.isf(1e-9, 300, 0.05)
    fails = sum(not sequential_rate_test(_binomial_draws(rng, 0.7), 0.7, 0.03,
                                         false_fail_rate=0.05, false_pass_rate=0.05).passed
                for _ in range(300))
    passes = sum(sequential_rate_test(_binomial_draws(rng, 0.73), 0.7, 0.03,
                                      false_fail_rate=0.05, false_pass_rate=0.05).passed
                 for _ in range(300))
    assert fails <= bound and passes <= bound, (fails, passes, bound)


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
