"""Experiment design for the exact rate test: how many draws detect which error.

Two error rates describe every statistical check in this project (as in TensorFlow
Probability's statistical_testing):

* the **false-fail rate** (alpha): the chance that a correct implementation fails the check.
  It is the test's level; a suite that runs many checks splits one total alpha across them.
* the **false-pass rate** (beta): the chance that an implementation whose keep probability is
  off by ``discrepancy`` (or more) passes anyway.  1 - beta is the test's power there.

Fix any two of (n, discrepancy, the error rates) and the third follows.  Everything here is
computed from the exact binomial distribution and the exact rejection region of
``rate_test`` (scipy's two-sided rule): normal approximations mis-size tests at false-fail
rates like 1e-6, and DKWM bounds ask for about 3x the draws.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special, stats

from ._checks import check_count, check_open_unit, check_positive
from ._exact import binom_two_sided_pvalue, binom_upper_quantile

__all__ = [
    "RejectionRegion",
    "rejection_region_for_rate_test",
    "power_of_rate_test",
    "min_num_samples_for_rate_test",
    "min_discrepancy_detectable",
]

_RERR = 1 + 1e-7          # scipy.stats.binomtest's relative tolerance for "as likely"
_FULL_SUPPORT_MAX_N = 20_000


@dataclass(frozen=True)
class RejectionRegion:
    """rate_test at level alpha rejects exactly when kept <= low or kept >= high."""

    n: int
    keep_prob: float
    false_fail_rate: float
    low: int    # -1 when the lower tail is empty
    high: int   # n + 1 when the upper tail is empty

    def rejects(self, kept: int) -> bool:
        return kept <= self.low or kept >= self.high

    def power(self, true_keep_prob: float) -> float:
        """P(reject) when the true keep probability is ``true_keep_prob``."""
        p = float(true_keep_prob)
        lower = stats.binom.cdf(self.low, self.n, p) if self.low >= 0 else 0.0
        upper = stats.binom.sf(self.high - 1, self.n, p) if self.high <= self.n else 0.0
        return float(lower + upper)


def _check_keep_prob(keep_prob) -> float:
    return check_open_unit(keep_prob, "keep_prob")


def rejection_region_for_rate_test(n, keep_prob, *, false_fail_rate=1e-6) -> RejectionRegion:
    """The exact rejection region of the two-sided ``rate_test`` at level ``false_fail_rate``."""
    n = check_count(n, "n", minimum=1)
    p = _check_keep_prob(keep_prob)
    alpha = check_open_unit(false_fail_rate, "false_fail_rate")
    return _region(n, p, alpha)


def _searched_region(n: int, p: float, alpha: float) -> RejectionRegion:
    if n <= _FULL_SUPPORT_MAX_N:
        return _region_contiguous(n, p, alpha, 0, n)
    # Two small windows around the tail quantiles at alpha / 2; the exact minlike boundaries
    # lie near them.  Widen until both boundaries are pinned inside their windows.
    a0 = int(stats.binom.ppf(alpha / 2, n, p))
    b0 = binom_upper_quantile(alpha / 2, n, p)  # not binom.isf: it says n below alpha ~ 1e-16
    mode_lo, mode_hi = math.floor(p * n), math.ceil(p * n)
    half = 64
    while True:
        lw = (max(0, a0 - half), min(a0 + half, mode_lo - 1))
        uw = (max(b0 - half, mode_hi + 1), min(n, b0 + half))
        if lw[1] - lw[0] < 2 or uw[1] - uw[0] < 2 or half > n:
            return _region_contiguous(n, p, alpha, max(0, a0 - half), min(n, b0 + half))
        found = _region_windows(n, p, alpha, lw, uw)
        if found is not None:
            return found
        half *= 4


def _tail_masses(n, p, lo_w, hi_w) -> float:
    below = stats.binom.cdf(lo_w - 1, n, p) if lo_w > 0 else 0.0
    above = stats.binom.sf(hi_w, n, p) if hi_w < n else 0.0
    return float(below + above)


def _pvalues(pmf: np.ndarray, outside: float) -> np.ndarray:
    order = np.sort(pmf)
    cum = outside + np.cumsum(order)
    idx = np.searchsorted(order, pmf * _RERR, side="right") - 1
    return np.where(idx >= 0, cum[np.maximum(idx, 0)], outside)


def _region_contiguous(n: int, p: float, alpha: float, lo_w: int, hi_w: int) -> RejectionRegion:
    # Outcomes outside [lo_w, hi_w] are less likely than any inside (unimodal pmf), so they
    # enter every p-value as one known mass.
    k = np.arange(lo_w, hi_w + 1)
    pmf = stats.binom.pmf(k, n, p)
    reject = (_pvalues(pmf, _tail_masses(n, p, lo_w, hi_w)) <= alpha) & (k != p * n)
    below = k < p * n
    lower, upper = k[reject & below], k[reject & ~below]
    low = int(lower.max()) if lower.size else lo_w - 1
    high = int(upper.min()) if upper.size else hi_w + 1
    return RejectionRegion(n, p, alpha, low, high)


def _region_windows(n, p, alpha, lw, uw):
    kl = np.arange(lw[0], lw[1] + 1)
    ku = np.arange(uw[0], uw[1] + 1)
    pl = stats.binom.pmf(kl, n, p)
    pu = stats.binom.pmf(ku, n, p)
    pmf = np.concatenate([pl, pu])
    pval = _pvalues(pmf, _tail_masses(n, p, lw[0], uw[1]))
    # Between the windows every outcome is more likely than the windows' inner ends; a p-value
    # is exact when its threshold admits all of the outer tails and none of the middle.
    thr = pmf * _RERR
    outer_max = max(pl[0] if lw[0] > 0 else 0.0, pu[-1] if uw[1] < n else 0.0)
    valid = (thr >= outer_max) & (thr < min(pl[-1], pu[0]))
    reject = pval <= alpha
    low = _boundary(kl, valid[: kl.size], reject[: kl.size], lw[0] == 0, lower=True)
    high = _boundary(ku, valid[kl.size:], reject[kl.size:], uw[1] == n, lower=False)
    if low is None or high is None:
        return None
    return RejectionRegion(n, p, alpha, low, high)


def _boundary(k, valid, reject, at_edge, *, lower):
    """The last rejected count before the first accepted one, read from inside the window."""
    if not lower:  # mirror the upper tail so both read outward -> inward
        k, valid, reject = k[::-1], valid[::-1], reject[::-1]
    accepted = np.flatnonzero(valid & ~reject)
    if accepted.size == 0:
        return None
    first = accepted[0]
    if first == 0:
        # nothing rejected inside the window: fine only when the window reaches the support's edge
        return (int(k[0]) - 1 if lower else int(k[0]) + 1) if at_edge else None
    if not (valid[first - 1] and reject[first - 1]):
        return None
    return int(k[first - 1])


def _alternatives(p: float, delta: float) -> list[float]:
    alts = [q for q in (p - delta, p + delta) if 0.0 <= q <= 1.0]
    if not alts:
        raise ValueError(
            f"discrepancy ({delta!r}) must leave keep_prob ({p!r}) +- discrepancy inside [0, 1] on one side")
    return alts


def power_of_rate_test(n, keep_prob, discrepancy, *, false_fail_rate=1e-6) -> float:
    """The smaller power of the exact test against keep_prob - discrepancy and + discrepancy."""
    n = check_count(n, "n", minimum=1)
    p = _check_keep_prob(keep_prob)
    delta = check_positive(discrepancy, "discrepancy")
    alpha = check_open_unit(false_fail_rate, "false_fail_rate")
    return _power(n, p, _alternatives(p, delta), alpha)


def _power(n: int, p: float, alts: list[float], alpha: float) -> float:
    region = _region(n, p, alpha)
    return min(region.power(q) for q in alts)


def min_num_samples_for_rate_test(keep_prob, discrepancy, *, false_fail_rate=1e-6,
                                  false_pass_rate=1e-3) -> int:
    """Draws the exact two-sided rate test needs to catch a keep-probability error.

    Returns n with power(n) >= 1 - false_pass_rate > power(n - 1), the power taken at both
    keep_prob - discrepancy and keep_prob + discrepancy (the sides inside [0, 1]) for the test
    at level false_fail_rate.  Exact power is a sawtooth in n (the rejection region moves by
    whole counts): n is the crossing found by bisection from the normal approximation, and a
    test should draw exactly n, no more, to keep the stated false-pass rate.
    """
    p = _check_keep_prob(keep_prob)
    delta = check_positive(discrepancy, "discrepancy")
    alpha = check_open_unit(false_fail_rate, "false_fail_rate")
    beta = check_open_unit(false_pass_rate, "false_pass_rate")
    _alternatives(p, delta)
    return _min_num_samples(p, delta, alpha, beta)


@functools.lru_cache(maxsize=1024)
def _min_num_samples(p: float, delta: float, alpha: float, beta: float) -> int:
    # pure and called with the same arguments many times by a battery or an audit: cached
    alts = _alternatives(p, delta)
    target = 1.0 - beta

    def ok(n: int) -> bool:
        return _power(n, p, alts, alpha) >= target

    za, zb = -special.ndtri(alpha / 2), -special.ndtri(beta)  # stable for tiny alpha (1 - 1e-31 == 1)
    guess = max(((za * math.sqrt(p * (1 - p)) + zb * math.sqrt(q * (1 - q))) / delta) ** 2 for q in alts)
    guess = max(1, int(math.ceil(guess)))
    # the normal approximation is within a few percent here; widen geometrically if not
    lo, hi = max(1, int(guess * 0.97)), max(2, int(guess * 1.03) + 2)
    while hi > 10**15 or not ok(hi):  # a guess past 1e15 is not evaluated (numpy's int64 ends at 9.2e18)
        lo, hi = hi, int(hi * 1.25) + 2
        if hi > 10**15:
            raise SampleSizeTooLarge("no sample size up to 1e15 reaches the requested power")
    if lo == 1 and ok(1):
        return 1
    while ok(lo):
        hi, lo = lo, max(1, int(lo * 0.8))
        if lo == 1 and ok(1):
            return 1
    while hi - lo > 1:  # invariant: not ok(lo), ok(hi)
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def min_discrepancy_detectable(keep_prob, n, *, false_fail_rate=1e-6, false_pass_rate=1e-3) -> float:
    """The smallest discrepancy that n draws detect with the stated error rates.

    A true keep probability at keep_prob +- the returned value (or further out) makes the exact
    test at level false_fail_rate reject with probability >= 1 - false_pass_rate.  A side that
    lies outside [0, 1] at that distance needs no detection.  math.inf when n cannot detect
    any error on some side.
    """
    p = _check_keep_prob(keep_prob)
    n = check_count(n, "n", minimum=1)
    alpha = check_open_unit(false_fail_rate, "false_fail_rate")
    beta = check_open_unit(false_pass_rate, "false_pass_rate")
    return _min_discrepancy(p, n, alpha, beta)


@functools.lru_cache(maxsize=1024)
def _min_discrepancy(p: float, n: int, alpha: float, beta: float) -> float:
    # pure; an audit asks it for the same (keep, n) once per entry point: cached
    target = 1.0 - beta
    region = _region(n, p, alpha)
    result = 0.0
    for sign, room in ((-1, p), (+1, 1 - p)):
        def gap(d: float) -> float:
            return region.power(p + sign * d) - target
        if gap(room) < 0:
            return math.inf
        if gap(0.0) >= 0:  # cannot happen for alpha < 1 - beta, kept for safety
            continue
        lo, hi = _bracket(gap, _one_tail_guess(region, target, sign), room)
        # 1e-10 relative: far below any discrepancy worth reporting, and half the power evaluations
        result = max(result, optimize.brentq(gap, lo, hi, xtol=1e-15, rtol=1e-10))
    return float(result)


def _one_tail_guess(region: RejectionRegion, target: float, sign: int) -> float:
    """The discrepancy at which the near tail alone reaches the target power (the far tail
    adds less than alpha): a starting point within a hair of the root."""
    n, p = region.n, region.keep_prob
    if sign < 0:
        return p - float(special.bdtri(region.low, n, target)) if region.low >= 0 else math.nan
    return (1 - float(special.bdtri(n - region.high, n, target))) - p if region.high <= n else math.nan


def _bracket(gap, guess: float, room: float) -> tuple[float, float]:
    """[lo, hi] with gap(lo) < 0 <= gap(hi): tight around the guess when it checks out,
    else the whole [0, room] (gap(0) < 0 <= gap(room) holds there)."""
    if math.isfinite(guess) and 0 < guess < room:
        lo, hi = guess * (1 - 1e-6), min(room, guess * (1 + 1e-6))
        if gap(lo) < 0 <= gap(hi):
            return lo, hi
    return 0.0, room


def _region(n: int, p: float, alpha: float) -> RejectionRegion:
    """The searched region, its boundaries settled by rate_test's own p-value: where alpha
    equals a p-value exactly, the search's sum (another order of the same terms) can round the
    tie the other way (n = 10, keep 0.5, alpha = binomtest(2, 10, 0.5).pvalue gave (1, 9))."""
    region = _searched_region(n, p, alpha)

    def rejects(k: int) -> bool:
        return 0 <= k <= n and k != p * n and binom_two_sided_pvalue(k, n, p) <= alpha

    # a tie moves a boundary by one count at most: a search further off stays off (and shows)
    low, high = region.low, region.high
    if low >= 0 and not rejects(low):
        low -= 1
    elif low + 1 < p * n and rejects(low + 1):
        low += 1
    if high <= n and not rejects(high):
        high += 1
    elif high - 1 > p * n and rejects(high - 1):
        high -= 1
    return RejectionRegion(n, p, alpha, low, high)


class SampleSizeTooLarge(ValueError):
    """The sample-size search gave up past 1e15 draws (defined last: it keeps the lines above)."""
