"""The windowed two-sided p-values equal scipy's binomtest and fisher_exact, bit for bit.

Not statistical tests: deterministic comparisons over exhaustive small cases, the tails near
the window's edge, and hypothesis-chosen large ones.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from dropout_stats._exact import binom_two_sided_pvalue, binom_upper_quantile, fisher_two_sided_pvalue


@pytest.mark.parametrize("p", [0.0, 1e-3, 0.2, 0.5, 0.8, 0.999, 1.0])
def test_binomial_equals_scipy_on_every_count_up_to_60(p):
    for n in range(1, 61):
        for k in range(n + 1):
            assert binom_two_sided_pvalue(k, n, p) == stats.binomtest(k, n, p).pvalue, (k, n, p)


@settings(max_examples=300)
@given(st.integers(2, 10**9), st.floats(1e-4, 1 - 1e-4), st.floats(-45, 45))
def test_binomial_equals_scipy_at_any_z(n, p, z):
    k = int(min(n, max(0, round(n * p + z * math.sqrt(n * p * (1 - p))))))
    assert binom_two_sided_pvalue(k, n, p) == stats.binomtest(k, n, p).pvalue


def _table(both, a, b, n):
    return [[both, a - both], [b - both, n - a - b + both]]


def test_fisher_equals_scipy_on_every_table_up_to_12():
    for n in range(1, 13):
        for a in range(n + 1):
            for b in range(n + 1):
                for both in range(max(0, a + b - n), min(a, b) + 1):
                    t = _table(both, a, b, n)
                    assert fisher_two_sided_pvalue(t) == stats.fisher_exact(t).pvalue, t


@settings(max_examples=300)
@given(st.integers(2, 3 * 10**6), st.floats(0.01, 0.99), st.floats(0.01, 0.99), st.floats(-40, 40))
def test_fisher_equals_scipy_at_any_z(n, pa, pb, z):
    a, b = max(1, int(n * pa)), max(1, int(n * pb))
    mu = a * b / n
    sd = math.sqrt(max(mu * (1 - a / n) * (n - b) / max(n - 1, 1), 1e-12))
    both = int(min(min(a, b), max(max(0, a + b - n), round(mu + z * sd))))
    t = _table(both, a, b, n)
    assert fisher_two_sided_pvalue(t) == stats.fisher_exact(t).pvalue


def test_the_battery_sized_cases_take_the_fast_path(monkeypatch):
    # the window must pin the boundary for the tables and counts a battery sees (no fallback)
    def refuse(*args, **kwargs):
        raise AssertionError("fell back to scipy's search")

    monkeypatch.setattr(stats, "binomtest", refuse)
    monkeypatch.setattr(stats, "fisher_exact", refuse)
    rng = np.random.default_rng(7)
    for _ in range(200):
        n = int(rng.integers(10_000, 3_000_000))
        sd = math.sqrt(n * 0.16)
        k = int(np.clip(rng.binomial(n, 0.8) + round(rng.uniform(-8, 8) * sd), 0, n))
        binom_two_sided_pvalue(k, n, 0.8)
        a, b = int(rng.binomial(n, 0.8)), int(rng.binomial(n, 0.8))
        both = int(rng.hypergeometric(a, n - a, b))
        fisher_two_sided_pvalue(_table(both, a, b, n))


@pytest.mark.parametrize("step", [+1, -1])
def test_tail_start_answers_or_says_it_cannot_tell(step):
    from dropout_stats._exact import _tail_start

    # a run [0, 99] whose pmf falls walking outward; the tail {pmf <= t} starts at 60 (step +1)
    # or at 39 (step -1)
    falling = np.linspace(1.0, 0.0, 100)
    pmf = (lambda k: falling[k]) if step > 0 else (lambda k: falling[99 - k])
    t = falling[60]
    start = 60 if step > 0 else 39
    assert _tail_start(pmf, t, 0, 99, start, 5, step=step) == start  # inside the window
    assert _tail_start(pmf, t, 0, 99, start + 20 * step, 5, step=step) is None  # window past it
    assert _tail_start(pmf, t, 0, 99, start - 20 * step, 5, step=step) is None  # window before it
    assert _tail_start(pmf, t, 0, 99, 50, 200, step=step) == start  # window covers the run
    assert _tail_start(pmf, -1.0, 0, 99, 50, 200, step=step) == (100 if step > 0 else -1)  # no tail


@pytest.mark.parametrize(
    "alpha", [0.5, 0.3, 1e-3, 1e-9, 1e-15, 1e-17, 1e-20, 1e-50, 1e-300]
)  # 0.5 at n = 1: a tie, the walk down
@pytest.mark.parametrize("n,p", [(1, 0.5), (40, 0.8), (1000, 0.3), (1000, 0.5), (25_000, 0.8), (3000, 0.001)])
def test_upper_quantile_is_the_first_count_whose_sf_is_at_most_alpha(alpha, n, p):
    """Against a scan of scipy's sf over every count (scipy's own isf returns n below ~1e-16)."""
    ks = np.arange(n + 1)
    want = int(ks[stats.binom.sf(ks, n, p) <= alpha][0])
    assert binom_upper_quantile(alpha, n, p) == want


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("off", [-3, -1, 1, 3])
def test_upper_quantile_settles_a_start_scipys_ppf_rounds_off(monkeypatch, off, tie):
    """The start comes from scipy's ppf, which can round a count off; the walks down and up settle
    it on the exact sf whichever way it is off (a start moved by `off` counts, both directions),
    also where alpha is exactly a count's sf (that count is the answer: P(K > k) <= alpha)."""
    ppf = stats.binom.ppf
    n, p = 1000, 0.3
    alpha = float(stats.binom.sf(360, n, p)) if tie else 1e-6
    ks = np.arange(n + 1)
    want = int(ks[stats.binom.sf(ks, n, p) <= alpha][0])
    assert want == 360 or not tie
    monkeypatch.setattr(stats.binom, "ppf", lambda *a: ppf(*a) + off)  # n - ppf: the start moves by -off
    assert binom_upper_quantile(alpha, n, p) == want


def test_tolerances_are_the_ones_in_scipys_source():
    """Bit-equality with scipy needs its "as likely" tolerances: read from the installed scipy."""
    import inspect
    import re

    from scipy.stats import _binomtest, _stats_py

    from dropout_stats import _exact

    binom_src = inspect.getsource(_binomtest.binomtest)
    fisher_src = inspect.getsource(_stats_py.fisher_exact)
    assert _exact._BINOM_RERR == 1 + float(re.search(r"rerr = 1 \+ ([0-9.e-]+)", binom_src).group(1))
    eps = float(re.search(r"epsilon = ([0-9.e-]+)", fisher_src).group(1))
    assert "gamma = 1 + epsilon" in fisher_src and "<= epsilon" in fisher_src
    assert _exact._FISHER_EPSILON == eps and _exact._FISHER_GAMMA == 1 + eps


def test_binomial_as_likely_is_scipys_relative_tolerance():
    """p chosen so that the far count j is 1 + 1.5e-7 times as likely as k: beyond scipy's
    tolerance 1e-7, so j is not in the tail; at 1 + 0.5e-7 it is."""
    n, k, j = 50, 10, 25
    ratio = math.comb(n, k) / math.comb(n, j)  # (p / q)^(j - k) = r * C(n, k) / C(n, j)
    for r in (1 + 1.5e-7, 1 + 0.5e-7):
        odds = (r * ratio) ** (1 / (j - k))
        p = odds / (1 + odds)
        assert stats.binom.pmf(j, n, p) / stats.binom.pmf(k, n, p) == pytest.approx(r, rel=1e-9, abs=0)
        assert binom_two_sided_pvalue(k, n, p) == stats.binomtest(k, n, p).pvalue, r


def test_fisher_next_to_the_mode_of_a_large_table():
    """8e7 draws, margins half and half: the table one past the mode is 1 - ~1e-7 as likely as
    the mode (not a tie: relative difference ~1e-7 > 1e-14), while the absolute difference times
    the mode's pmf is below 1e-14 (a relative test written as a product would call it a tie)."""
    n1 = n2 = n = 40_000_000
    mode = (n + 1) * (n1 + 1) // (n1 + n2 + 2)
    x = mode + 1
    t = _table(x, n, n1, n1 + n2)
    want = stats.fisher_exact(t).pvalue
    assert want < 1 and fisher_two_sided_pvalue(t) == want


@pytest.mark.parametrize("step", [+1, -1])
def test_tail_start_does_not_guess_past_a_window_that_reaches_only_one_end(step):
    from dropout_stats._exact import _tail_start

    falling = np.linspace(1.0, 0.0, 100)
    pmf = (lambda k: falling[k]) if step > 0 else (lambda k: falling[99 - k])
    t = falling[60]
    # a window at the outer end, every count in it already in the tail: it may start earlier
    assert _tail_start(pmf, t, 0, 99, 95 if step > 0 else 4, 5, step=step) is None
    # a window at the inner end with nothing in the tail: the tail may still lie beyond it
    assert _tail_start(pmf, t, 0, 99, 4 if step > 0 else 95, 5, step=step) is None
