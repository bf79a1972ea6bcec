"""proportion_ci and rate_test: exact, checked against scipy and by exact coverage sums."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from dropout_stats import proportion_ci, rate_test

counts = st.integers(1, 5000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n)))
levels = st.floats(0.5, 0.999999)
methods = st.sampled_from(["exact", "wilson", "jeffreys"])


@given(counts, levels, methods)
def test_interval_contains_point_estimate(kn, cl, method):
    k, n = kn
    ci = proportion_ci(k, n, confidence_level=cl, method=method)
    assert 0.0 <= ci.low <= k / n <= ci.high <= 1.0


@given(counts, levels, levels, methods)
def test_intervals_nest_as_confidence_grows(kn, cl1, cl2, method):
    k, n = kn
    lo_cl, hi_cl = sorted((cl1, cl2))
    inner = proportion_ci(k, n, confidence_level=lo_cl, method=method)
    outer = proportion_ci(k, n, confidence_level=hi_cl, method=method)
    # 1e-15: betaincinv's own rounding (a few ulp of the bound) may reorder two levels that
    # differ by less than that; nesting is a property of the exact quantiles
    assert outer.low <= inner.low + 1e-15 and inner.high <= outer.high + 1e-15


@given(
    counts,
    st.floats(0.5, 0.9999),
    st.sampled_from(["two-sided", "less", "greater"]),
    st.sampled_from(["exact", "wilson"]),
)
def test_intervals_match_scipy(kn, cl, alternative, method):
    k, n = kn
    ours = proportion_ci(k, n, confidence_level=cl, method=method, alternative=alternative)
    theirs = stats.binomtest(k, n, 0.5, alternative=alternative).proportion_ci(cl, method)
    # scipy finds Clopper-Pearson bounds by root finding (xtol 1e-12); ours is the beta quantile
    assert ours.low == pytest.approx(theirs.low, abs=1e-11)
    assert ours.high == pytest.approx(theirs.high, abs=1e-11)


@pytest.mark.parametrize("confidence_level", [0.95, 0.999])
def test_clopper_pearson_coverage_is_at_least_nominal_exactly(confidence_level):
    """Coverage summed from the binomial pmf (no simulation) for every n <= 200 on a fine grid."""
    grid = np.linspace(0.0005, 0.9995, 1999)
    worst = 1.0
    for n in range(1, 201):
        ks = np.arange(n + 1)
        lows = np.empty(n + 1)
        highs = np.empty(n + 1)
        for k in ks:
            ci = proportion_ci(int(k), n, confidence_level=confidence_level)
            lows[k], highs[k] = ci.low, ci.high
        pmf = stats.binom.pmf(ks[:, None], n, grid[None, :])
        covered = (lows[:, None] <= grid[None, :]) & (grid[None, :] <= highs[:, None])
        coverage = (pmf * covered).sum(axis=0)
        worst = min(worst, coverage.min())
    assert worst >= confidence_level - 1e-12, worst


@given(counts, st.floats(0.001, 0.999), st.sampled_from(["two-sided", "less", "greater"]))
def test_pvalues_agree_with_scipy_binomtest(kn, p, alternative):
    k, n = kn
    ours = rate_test(k, n, p, alternative=alternative)
    theirs = stats.binomtest(k, n, p, alternative=alternative).pvalue
    assert ours.pvalue == pytest.approx(theirs, rel=1e-12, abs=0)
    assert ours.statistic == k / n


def test_result_reads_like_scipy():
    r = rate_test(6, 32, 0.8)
    assert r.statistic == 6 / 32
    assert "pvalue=" in repr(r) and "keep_prob=0.8" in repr(r)
    low, high = r.proportion_ci(confidence_level=0.99)
    assert low < 6 / 32 < high


def test_founding_question_is_consistent():
    """Dropout(0.2) on 32 units with 9 zeros: consistent with rate 0.2 (23 of 32 kept)."""
    r = rate_test(23, 32, 0.8)
    assert r.pvalue == pytest.approx(stats.binomtest(23, 32, 0.8).pvalue, abs=0)
    assert r.pvalue > 0.05
    assert 0.8 in r.proportion_ci()


@pytest.mark.statistical(false_fail_rate=1e-9)
def test_pvalues_are_not_anticonservative_under_the_null(seed):
    """Under numpy Bernoulli masks the p-values are super-uniform: P(p <= u) <= u.

    One-sided KS at level 1e-9 (exact p-values of a discrete test may only err towards large).
    Detects: a shift of the empirical CDF above u by about 0.05 with 4000 p-values.
    """
    rng = np.random.default_rng(seed)
    n, keep = 10_000, 0.8
    kept = rng.binomial(n, keep, size=4000)
    pvals = np.array([rate_test(int(k), n, keep).pvalue for k in kept])
    assert stats.kstest(pvals, "uniform", alternative="greater").pvalue > 1e-9


def test_mid_range_invariants():
    assert rate_test(0, 10, 0.0).pvalue == 1.0
    assert rate_test(10, 10, 1.0).pvalue == 1.0
    assert math.isclose(rate_test(5, 10, 0.5).pvalue, 1.0)


@given(counts, levels)
def test_jeffreys_is_the_beta_half_half_posterior(kn, cl):
    """Jeffreys: Beta(k + 1/2, n - k + 1/2) quantiles at (1 - cl) / 2 and (1 + cl) / 2, with low = 0
    at k = 0 and high = 1 at k = n (Brown, Cai, DasGupta 2001), from scipy.stats.beta."""
    k, n = kn
    ci = proportion_ci(k, n, confidence_level=cl, method="jeffreys")
    post = stats.beta(k + 0.5, n - k + 0.5)
    assert ci.low == (0.0 if k == 0 else pytest.approx(post.ppf((1 - cl) / 2), rel=1e-9, abs=1e-15))
    assert ci.high == (1.0 if k == n else pytest.approx(post.isf((1 - cl) / 2), rel=1e-9, abs=1e-15))


@pytest.mark.parametrize("method", ["exact", "jeffreys"])
@pytest.mark.parametrize("tail", [5e-16, 5e-13, 5e-10])
def test_tiny_tails_are_the_defining_tail_probabilities(method, tail):
    """At the levels verify() uses (1 - 1e-15 to 1 - 1e-9) each end of the interval is where its
    defining tail probability equals (1 - cl) / 2: Clopper-Pearson's binomial tails, Jeffreys'
    posterior tails, from scipy.stats.binom and scipy.stats.beta, to 1e-6 relative.  (Inverting at
    1 - tail first rounds the tail: at 1 - 1e-15 that moved the high end by 1.2e-5 relative.)"""
    k, n = 412_969, 589_824
    cl = 1 - 2 * tail
    ci = proportion_ci(k, n, confidence_level=cl, method=method)
    want = (1 - cl) / 2
    if method == "exact":
        low_tail, high_tail = stats.binom.sf(k - 1, n, ci.low), stats.binom.cdf(k, n, ci.high)
    else:
        post = stats.beta(k + 0.5, n - k + 0.5)
        low_tail, high_tail = post.cdf(ci.low), post.sf(ci.high)
    assert low_tail == pytest.approx(want, rel=1e-6, abs=0) and high_tail == pytest.approx(want, rel=1e-6, abs=0)


def test_an_interval_contains_its_end_points():
    ci = proportion_ci(3, 10)
    assert ci.low in ci and ci.high in ci and (ci.low - 1e-12) not in ci and (ci.high + 1e-12) not in ci


@given(counts, st.floats(0.001, 0.999))
def test_one_sided_pvalues_are_the_binomial_tails(kn, p):
    """'less': P(X <= k); 'greater': P(X >= k), from the binomial cdf directly (rate_test calls
    scipy's binomtest for these, so scipy's test is not an independent oracle)."""
    k, n = kn
    assert rate_test(k, n, p, alternative="less").pvalue == pytest.approx(stats.binom.cdf(k, n, p), rel=1e-9, abs=0)
    assert rate_test(k, n, p, alternative="greater").pvalue == pytest.approx(
        stats.binom.sf(k - 1, n, p), rel=1e-9, abs=0
    )


def test_results_are_immutable():
    """Both result objects are frozen: a report cannot change a verdict after the fact."""
    import dataclasses

    ci = proportion_ci(3, 10)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ci.low = 0.0
    r = rate_test(3, 10, 0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.k = 4


@pytest.mark.parametrize("k", [1, 2, 9, 10, 11])
def test_wilson_bounds_are_the_roots_of_the_score_equation(k):
    """Wilson's bounds solve (k/n - p)^2 = z^2 p (1 - p) / n; solved here as a quadratic with
    numpy's roots, an independent computation.  Near the ends (k = 1, n - 1) the bound that is not
    pinned to 0 or 1 must be the root, not 0 or 1."""
    import numpy as np
    from scipy import special

    n, cl = 12, 0.95
    z = -special.ndtri((1 - cl) / 2)
    ph = k / n
    roots = np.sort(np.roots([1 + z * z / n, -(2 * ph + z * z / n), ph * ph]).real)
    ci = proportion_ci(k, n, confidence_level=cl, method="wilson")
    want_low = roots[0] if k > 0 else 0.0
    want_high = roots[1] if k < n else 1.0
    # two double-precision computations of one root: they differ by rounding (~1e-16), not by 1e-12
    assert abs(ci.low - want_low) <= 1e-12 and abs(ci.high - want_high) <= 1e-12, (ci, roots)
