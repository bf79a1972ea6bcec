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

n is at most 2**53 (``_checks.MAX_COUNT``): past it scipy's binomial functions, which compute in
doubles, are refused a count they cannot hold (and fail: nan at 1e16, no return at 1e17).  A
search for n stops at 1e15 draws.
"""

from __future__ import annotations

import functools
import math
import struct
from dataclasses import dataclass

from scipy import special, stats

from ._checks import check_binomial_p, check_count, check_open_unit, check_positive, check_probability, check_trials
from ._exact import binom_two_sided_pvalue

__all__ = [
    "RejectionRegion",
    "rejection_region_for_rate_test",
    "power_of_rate_test",
    "min_num_samples_for_rate_test",
    "min_discrepancy_detectable",
]


_MAX_DRAWS = 10**15  # the largest design searched (numpy's int64 counts end at 9.2e18)


class SampleSizeTooLarge(ValueError):
    """The sample-size search gave up: no n up to 1e15 draws reaches the requested power.  The
    message names the discrepancy (the argument to enlarge) with the rates it was asked at."""


@dataclass(frozen=True)
class RejectionRegion:
    """rate_test at level alpha rejects exactly when kept <= low or kept >= high."""

    n: int
    keep_prob: float
    false_fail_rate: float
    low: int  # -1 when the lower tail is empty
    high: int  # n + 1 when the upper tail is empty

    def rejects(self, kept: int) -> bool:
        kept = check_count(kept, "kept")
        return kept <= self.low or kept >= self.high

    def power(self, true_keep_prob: float) -> float:
        """P(reject) when the true keep probability is ``true_keep_prob``."""
        p = check_probability(true_keep_prob, "true_keep_prob")
        lower = stats.binom.cdf(self.low, self.n, p) if self.low >= 0 else 0.0
        upper = stats.binom.sf(self.high - 1, self.n, p) if self.high <= self.n else 0.0
        return float(lower + upper)

    def miss(self, true_keep_prob: float) -> float:
        """P(accept), 1 - power, summed from the tails that hold the least mass, so that a
        false-pass rate far below 1e-16 is resolved (1 - power rounds it away)."""
        q, n = check_probability(true_keep_prob, "true_keep_prob"), self.n
        above_low = stats.binom.sf(self.low, n, q)  # P(K > low); 1 for low = -1
        below_high = stats.binom.cdf(self.high - 1, n, q)  # P(K < high); 1 for high = n + 1
        if above_low <= below_high:  # K mostly at or below low: both upper tails are small
            return float(above_low - stats.binom.sf(self.high - 1, n, q))
        return float(below_high - stats.binom.cdf(self.low, n, q))


def _check_keep_prob(keep_prob) -> float:
    return check_binomial_p(keep_prob, "keep_prob", closed=False)


def rejection_region_for_rate_test(n, keep_prob, *, false_fail_rate=1e-6) -> RejectionRegion:
    """The exact rejection region of the two-sided ``rate_test`` at level ``false_fail_rate``."""
    n = check_trials(n, "n")
    p = _check_keep_prob(keep_prob)
    alpha = check_open_unit(false_fail_rate, "false_fail_rate")
    return _region(n, p, alpha)


def _region(n: int, p: float, alpha: float) -> RejectionRegion:
    """rate_test's region, read from rate_test's own p-value (so a level equal to a p-value
    rejects that count exactly as rate_test does).  The pmf rises up to the mean and falls after
    it, so a count's p-value (the mass of every count no more likely) never grows walking
    outward: the rejected counts are [0, low] and [high, n], and each boundary is where a
    monotone verdict turns, bracketed from the tail quantile at alpha / 2 (near the boundary)."""

    def rejects(k: int) -> bool:
        return binom_two_sided_pvalue(k, n, p) <= alpha

    below, above = math.ceil(p * n) - 1, math.floor(p * n) + 1  # the counts under and over the mean
    low = _last_true(rejects, below, _tail_guess(alpha / 2, n, p))
    # the upper tail read outward as j = n - k, rejected on a prefix of [0, n - above]
    high = n - _last_true(lambda j: rejects(n - j), n - above, _tail_guess(alpha / 2, n, 1 - p))
    return RejectionRegion(n, p, alpha, low, high)


def _tail_guess(tail: float, n: int, p: float) -> int:
    """Near where Binomial(n, p)'s lower tail holds ``tail``: scipy's quantile up to 1e15 draws,
    the normal one past it or where scipy's is nan (boost's search fails from about 2.5e15 draws
    and never returns at 1e17).  Only a starting point: _last_true's answer does not depend on it."""
    if n <= _MAX_DRAWS:
        q = float(stats.binom.ppf(tail, n, p))
        if math.isfinite(q):
            return int(q)
    z = max(float(special.ndtri(tail)), -40.0)  # -inf for a tail that underflowed to 0
    return int(n * p + z * math.sqrt(n * p * (1 - p)))


def _last_true(pred, top: int, guess: int) -> int:
    """The largest j in [0, top] with pred(j), -1 if none, for a pred true on a prefix of
    [0, top] and false after it.  Steps doubling from the guess bracket the turn, a bisection
    finds it: O(log distance) calls, and the answer does not depend on the guess."""
    lo, hi = -1, top + 1  # pred(lo) holds or lo = -1; pred(hi) fails or hi = top + 1
    j, step = min(max(guess, 0), top), 1
    while lo < j < hi:
        if pred(j):
            lo, j = j, j + step
        else:
            hi, j = j, j - step
        step *= 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if pred(mid):
            lo = mid
        else:
            hi = mid
    return lo


def _alternatives(p: float, delta: float) -> list[float]:
    alts = [q for q in (p - delta, p + delta) if 0.0 <= q <= 1.0]
    if not alts:
        raise ValueError(
            f"discrepancy ({delta!r}) must leave keep_prob ({p!r}) +- discrepancy inside [0, 1] on one side"
        )
    return alts


def power_of_rate_test(n, keep_prob, discrepancy, *, false_fail_rate=1e-6) -> float:
    """The smaller power of the exact test against keep_prob - discrepancy and + discrepancy."""
    n = check_trials(n, "n")
    p = _check_keep_prob(keep_prob)
    delta = check_positive(discrepancy, "discrepancy")
    alpha = check_open_unit(false_fail_rate, "false_fail_rate")
    return _power(n, p, _alternatives(p, delta), alpha)


def _power(n: int, p: float, alts: list[float], alpha: float) -> float:
    region = _region(n, p, alpha)
    return min(region.power(q) for q in alts)


def _miss(n: int, p: float, alts: list[float], alpha: float) -> float:
    region = _region(n, p, alpha)
    return max(region.miss(q) for q in alts)


def min_num_samples_for_rate_test(keep_prob, discrepancy, *, false_fail_rate=1e-6, false_pass_rate=1e-3) -> int:
    """Draws the exact two-sided rate test needs to catch a keep-probability error.

    Returns n with miss(n) <= false_pass_rate < miss(n - 1), miss(n) the larger probability that
    the test at level false_fail_rate accepts n draws at keep_prob - discrepancy or keep_prob +
    discrepancy (the sides inside [0, 1]), 1 - power.  Exact power is a sawtooth in n (the
    rejection region moves by whole counts): n is the crossing found by bisection from the
    normal approximation, and a test should draw exactly n, no more, to keep the stated
    false-pass rate.  SampleSizeTooLarge (a ValueError) past 1e15 draws.
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

    def ok(n: int) -> bool:  # n draws miss every alternative with probability <= beta
        return n > 0 and _miss(n, p, alts, alpha) <= beta

    za, zb = float(-special.ndtri(alpha / 2)), float(-special.ndtri(beta))  # stable for tiny rates

    def normal_n(q: float) -> float:  # z * z, not z ** 2: inf past the float range, not OverflowError
        z = (za * math.sqrt(p * (1 - p)) + zb * math.sqrt(q * (1 - q))) / delta
        return z * z

    guess = math.ceil(min(max(normal_n(q) for q in alts), _MAX_DRAWS))
    # the normal approximation is within a few percent here; widen geometrically if not, up to
    # _MAX_DRAWS, which is tried itself
    lo, hi = int(guess * 0.97), min(_MAX_DRAWS, int(guess * 1.03) + 2)
    while not ok(hi):
        if hi == _MAX_DRAWS:
            raise SampleSizeTooLarge(
                f"discrepancy ({delta!r}): testing keep_prob {p!r} for it at false_fail_rate {alpha!r} and "
                f"false_pass_rate {beta!r} would take more than 1e15 draws (no sample size up to 1e15 reaches "
                "the requested power); pass a larger discrepancy"
            )
        lo, hi = hi, min(_MAX_DRAWS, int(hi * 1.25) + 2)
    while ok(lo):  # the guess overshot: walk down (0 draws never suffice)
        hi, lo = lo, int(lo * 0.8)
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
    test at level false_fail_rate reject with probability >= 1 - false_pass_rate, and at the
    float below a positive answer some side is missed more often: a crossing to the bit, no
    root-finder's tolerance (miss's own rounding makes a band of such crossings, seen up to 3e-12
    relative wide where the power is flat, and one is returned).  0 when every discrepancy is
    detected, math.inf when n cannot detect any error on some side; a side that lies outside
    [0, 1] at that distance needs no detection.
    """
    p = _check_keep_prob(keep_prob)
    n = check_trials(n, "n")
    alpha = check_open_unit(false_fail_rate, "false_fail_rate")
    beta = check_open_unit(false_pass_rate, "false_pass_rate")
    return _min_discrepancy(p, n, alpha, beta)


@functools.lru_cache(maxsize=1024)
def _min_discrepancy(p: float, n: int, alpha: float, beta: float) -> float:
    # pure; an audit asks it for the same (keep, n) once per entry point: cached
    region = _region(n, p, alpha)
    least = _least_power_keep(region)
    sides = []  # (gap, room) of each side
    result = 0.0
    for sign, room in ((-1, p), (+1, 1 - p)):
        gap = functools.partial(_gap, region, beta, sign)
        if gap(room) < 0:  # at the edge K is 0 or n for sure: miss is 0 or 1 there
            return math.inf
        sides.append((gap, room))
        start = 0.0
        if gap(0.0) >= 0:  # detected at keep_prob itself: missed only in a dip of the power on this side
            dip = sign * (least - p)  # nan when the power has no dip
            if not (0 < dip < room and gap(dip) < 0):
                continue
            start = dip
        # the power falls then rises, so from gap(start) < 0 <= gap(room) the root is the last
        # crossing: the first float detected, searched from the near tail's root
        result = max(result, _first_float_detected(gap, start, room, _one_tail_guess(region, beta, sign)))
    # miss's rounding makes each side's crossing a band: the other side can still be missed just
    # past its own crossing (keep 0.5, n = 54,940, level 1e-3, false pass 0.01): search on from there
    while missed := [(gap, room) for gap, room in sides if result < room and gap(result) < 0]:
        gap, room = missed[0]
        result = _first_float_detected(gap, result, room, math.nan)
    return float(result)


def _gap(region: RejectionRegion, beta: float, sign: int, d: float) -> float:
    """beta - miss at keep_prob + sign * d: >= 0 where that keep is detected."""
    return beta - region.miss(region.keep_prob + sign * d)


def _first_float_detected(gap, start: float, room: float, guess: float) -> float:
    """The float d in (start, room] with gap(d) >= 0 > gap(the float below d), for gap(start) < 0
    <= gap(room) and gap < 0 on a prefix.  Floats >= 0 are ordered as their bit patterns (IEEE
    754), so the search runs over those integers, from the guess (ignored outside (start, room)):
    about 2 log2 of its distance in floats, 2 x 63 + 3 at most."""
    base = _bits(start)
    offset = _bits(guess) - base if start < guess < room else 0  # False for a nan guess
    last = _last_true(lambda j: gap(_float(base + j)) < 0, _bits(room) - base - 1, offset)
    return _float(base + last + 1)


def _bits(x: float) -> int:
    return struct.unpack("<q", struct.pack("<d", x))[0]


def _float(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<q", bits))[0]


def _one_tail_guess(region: RejectionRegion, beta: float, sign: int) -> float:
    """The discrepancy at which the near tail alone misses with probability beta (the far tail
    adds less than alpha to the power): a starting point within a hair of the root.  P(K > k)
    at keep q is the regularized incomplete beta I_q(k + 1, n - k), inverted here."""
    n, p = region.n, region.keep_prob
    if sign < 0:  # P(K > low) = beta
        return p - float(special.betaincinv(region.low + 1, n - region.low, beta)) if region.low >= 0 else math.nan
    # P(K < high) = beta, read on n - K
    return (1 - float(special.betaincinv(n - region.high + 1, region.high, beta))) - p if region.high <= n else math.nan


def _least_power_keep(region: RejectionRegion) -> float:
    """The keep at which the power is least; nan when it has no dip inside (0, 1).

    power'(q) = n (b(high - 1) - b(low)), b the pmf of Binomial(n - 1, q), and b(high - 1) / b(low)
    grows with q: the power falls, then rises, least where (q / (1 - q))^(high - 1 - low) =
    C(n - 1, low) / C(n - 1, high - 1).  With a tail empty the power is monotone; with every count
    rejected, constant."""
    n, low, high = region.n, region.low, region.high
    if low < 0 or high > n or high - 1 == low:
        return math.nan
    log_ratio = (
        special.gammaln(high) + special.gammaln(n - high + 1) - special.gammaln(low + 1) - special.gammaln(n - low)
    )  # log C(n-1, low) / C(n-1, high-1)
    return float(special.expit(log_ratio / (high - 1 - low)))
