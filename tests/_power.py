"""Miss chances of the corpus defects, computed (for the statistical marks of the tests that
assert verify() catches them).  Each bound takes the smallest share a check can get in a run
(level / 16: the keep test's alpha / m with m <= 16 entries, and Holm's smallest level) and the
fewest draws the check can see (5 main calls, the minimum; more only add power).

Kinds of argument:
* design: the keep probability is off by at least the designed discrepancy, so the sequential
  test passes it with probability <= false_pass_rate (its guarantee);
* certain: the defect changes what an exact check compares in every call (the scale of every
  kept value, every unit's fate), or makes pairs of draws identical, so that the check's table
  has no discordant pair: its exact p-value is then ~1 / C(n, k), below any level, unless every
  draw is kept or every one dropped, whose chance (p^n + q^n) is the bound;
* floor: identical pairs at one displacement give the correlation sum at least sum c^2 over
  them; Bernstein's inequality bounds that sum from below and Freedman's bound the rest;
* noncentral: the chi-square and Fisher statistics' power by their normal / noncentral
  chi-square approximation, used only where the margin is tens of standard deviations.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from dropout_stats.battery.checks.correlation import bennett_tail, kept_count_bound, lag_pvalue, linear_displacements

P, N, CALLS, SMALL = 0.8, 1 << 18, 5, 1 << 16


def certain_identical(n: int, p: float = P) -> float:
    """A concordant table misses only when all n draws are kept or all dropped."""
    return math.exp(n * math.log(p)) + math.exp(n * math.log(1 - p))


def floor_miss(identical: int, total_pairs: int, masks: int, tested: int, level: float, p: float = P) -> float:
    """P(the correlation check misses a displacement with ``identical`` identical pairs among
    ``total_pairs``): S = sum over identical pairs of c^2 (each >= min(p, q)^2, mean pq,
    variance pq (q^2 - p^2)^2) plus the other pairs' martingale sum."""
    q = 1 - p
    v = kept_count_bound([np.zeros(N, bool)] * masks, p)
    s_level = 1.0
    while lag_pvalue(s_level, v, p, tested) > level:
        s_level *= 1.01
    mean = identical * p * q
    var = identical * p * q * (q * q - p * p) ** 2
    spread = max(p, q) ** 2 - min(p, q) ** 2
    low = (mean + s_level) / 2  # split the gap between the two sources of shortfall
    if low <= s_level:
        return 1.0
    t1 = mean - low
    below = math.exp(-t1 * t1 / (2 * (var + spread * t1 / 3)))
    others = min(v, p * q * max(p, q) ** 2 * (total_pairs - identical))
    return below + (2 * bennett_tail(low - s_level, others, max(p, q) ** 2) if others > 0 else 0.0)


def normal_miss(z: float, level: float) -> float:
    """P(|Z| < z_level) for Z ~ N(z, 1): the approximation, for margins of tens of sigma."""
    return float(stats.norm.cdf(-stats.norm.ppf(level / 2) - abs(z)))


def histogram_miss(alt_pmf, calls: int, positions: int, level: float, p: float = P) -> float:
    """call_independence's Pearson chi-square when each position's kept count has ``alt_pmf``
    (over 0..calls): cells pooled as the check pools them, noncentral chi-square power."""
    null = stats.binom.pmf(np.arange(calls + 1), calls, p) * positions
    alt = np.asarray(alt_pmf) * positions
    cells_null, cells_alt, acc = [], [], [0.0, 0.0]
    for e, a in zip(null, alt, strict=True):
        acc = [acc[0] + e, acc[1] + a]
        if acc[0] >= 1000:
            cells_null.append(acc[0])
            cells_alt.append(acc[1])
            acc = [0.0, 0.0]
    cells_null[-1] += acc[0]
    cells_alt[-1] += acc[1]
    e, a = np.array(cells_null), np.array(cells_alt)
    lam = float(((a - e) ** 2 / e).sum())
    df = len(e) - 2
    return float(stats.ncx2.cdf(stats.chi2.isf(level, df), df, lam))


def corpus_miss(level: float, false_pass_rate: float) -> dict:
    """name -> (kind, bound) for every entry of corpus.STATELESS and corpus.STATEFUL."""
    q = 1 - P
    within = linear_displacements((64, 4096), True) - 2
    between = linear_displacements((64, 4096), False)
    repeat4 = np.convolve(stats.binom.pmf(np.arange(4), 3, P), [q, 0, P])  # 2 b0 + Bin(3): calls 0 and 4 equal
    alternating = np.zeros(CALLS + 1)
    for a in (0, 1):  # calls 0, 2, 4 one mask and 1, 3 the other
        for b in (0, 1):
            alternating[3 * a + 2 * b] += (P if a else q) * (P if b else q)
    n_value = N * CALLS / 2
    return {
        "rate bias 1% relative": ("design", false_pass_rate),
        "rate offset by 1% of the rate": ("design", false_pass_rate),
        "wrong comparison": ("design", false_pass_rate),
        "coarse uniform": ("design", false_pass_rate),  # 51/64 against 0.8: 0.0031 off
        "seed components swapped": ("certain", (P * P + q * q) ** N),
        "a fresh uniform above rate 0.5": ("certain", (1 - 0.4 * 0.1) ** SMALL),
        "seed[1] ignored": ("certain", certain_identical(N)),
        "seed components mixed": ("certain", certain_identical(N)),
        "seed[1] wraps at 4": ("noncentral", histogram_miss(repeat4, CALLS, N, level)),
        "mask shared across the batch": ("certain", certain_identical(N // 2)),
        "batch rows share masks in pairs": ("certain", certain_identical(N // 2)),
        "neighbours share a draw": ("certain", certain_identical(N // 2)),
        "half the last axis tiled": ("floor", floor_miss(2 * 64 * 2048, 2 * 64 * 2048, 2, within, level)),
        # every split of rows lands on its centre: Fisher's statistic over the 315 row splits is at
        # most 2 sum -log(1 - r0) ~ 11 (r0 <= 0.022 the centre's probability), whatever the
        # randomization, against chi2 on 630 df: its p-value is below 1e-300
        "exactly round(keep x n) kept per row": ("certain", 0.0),
        "a buffer's draws reused by the next call": ("floor", floor_miss(N // 8, N // 2, 1, between, level)),
        # 16 bins along the last axis at keep 0.815 and 0.785: noncentrality sum n_b (p_b - p)^2 / pq
        "position-dependent rate": (
            "noncentral",
            float(stats.ncx2.cdf(stats.chi2.isf(level, 15), 15, N * CALLS * 0.015**2 / (P * q))),
        ),
        "rate depends on the sign of x": ("noncentral", normal_miss(0.04 / math.sqrt(P * q * 2 / n_value), level / 2)),
        "noise_shape ignored": ("certain", (P**4 + q**4) ** SMALL),
        "scale one ULP off": ("certain", 0.0),  # with exact_scale=True
        "scale 0.1% off": ("certain", 0.0),  # 8,000 float32 ULP: every kept value outside the bound
        "dropped values not zero": ("certain", 0.0),
        "kept values not scaled": ("certain", 0.0),
        "mask reused on every call": ("floor", floor_miss(N, N, 2, between, level)),
        "two masks in turn": ("noncentral", histogram_miss(alternating, CALLS, N, level)),
        "rate drifting with the call count": ("certain", 0.0),  # its scale (1-r)/(1-rate) is not exact
        "masks cycle every 37 calls": ("certain", 0.0),  # every repeat: p <= 1e-30 x alpha (Markov)
        # two calls with their gradients: masks equal on every position of both only if the two
        # masks agree everywhere, (p^2 + q^2)^(2N); the scale is off at every kept position
        "backward mask from the next seed": ("certain", (P * P + q * q) ** (2 * N)),
        "backward without the scale": ("certain", 0.0),
        "backward scaled by the rate": ("certain", 0.0),
        "stateful dropout recomputed in the backward pass": ("certain", (P * P + q * q) ** (2 * N)),
    }
