"""Two-sided exact p-values by scipy's "as likely or less" rule, without its scalar search.

scipy's ``binomtest`` and ``fisher_exact`` find where the far tail starts by a binary search
of scalar pmf calls (about 20 of them, ~30 us each: 0.7 ms per binomial test, 0.8 ms per
2 x 2 table).  A battery runs a dozen such tests per configuration.  Here one vectorised pmf
call over a window around the reflected count finds the same boundary; when the window does
not pin it, scipy answers.  The p-value is then the same cdf and sf, at the same counts, as
scipy's: tests/test_exact.py checks equality against scipy over random and edge cases.
"""

from __future__ import annotations

import math
import struct

import numpy as np
from scipy import special, stats

_BINOM_RERR = 1 + 1e-7  # scipy.stats.binomtest's tolerance for "as likely"
_FISHER_EPSILON = 1e-14  # scipy.stats.fisher_exact's (its table is "as likely as the mode")
_FISHER_GAMMA = 1 + _FISHER_EPSILON
_QUANTILE_RTOL = 1e-6  # a right beta quantile is within 4 floats of where I_x crosses its tail, to 1e-6
_QUANTILE_ULPS = 4
_QUANTILE_CHECKED = 1e6  # past min(a, b) = 1e6 scipy's quantile and its I_x part by up to 1e-9 in x: kept


def _width(z: float) -> int | None:
    """Half-width of the window around the reflected count; None: leave it to scipy.

    The boundary sits within a few units of the reflected count; skewness moves it by O(z^2)
    units, so the window grows with z^2.  Past z = 30 (p-values below 1e-190) scipy's
    search is cheaper than a window that wide."""
    return 64 + int(math.ceil(z * z)) if z <= 30 else None


def _tail_start(pmf, t, a, b, guess, width, *, step):
    """Where the far tail {j : pmf(j) <= t} starts on a monotone run [a, b] whose pmf falls
    walking outward: up from a (step +1) or down from b (step -1).  Past the run's outer end
    (b + 1 or a - 1) when nothing there is that unlikely; None when the window around
    ``guess`` cannot tell."""
    s, e = max(a, guess - width), min(b, guess + width)
    if s > e:
        return None
    ks = np.arange(s, e + 1) if step > 0 else np.arange(e, s - 1, -1)
    hits = np.flatnonzero(pmf(ks) <= t)
    reaches_outer_end = e == b if step > 0 else s == a
    starts_at_inner_end = s == a if step > 0 else e == b
    if hits.size == 0:
        return (b + 1 if step > 0 else a - 1) if reaches_outer_end else None
    if hits[0] == 0 and not starts_at_inner_end:  # the tail may start before the window
        return None
    return int(ks[hits[0]])


def binom_two_sided_pvalue(k: int, n: int, p: float) -> float:
    """``scipy.stats.binomtest(k, n, p).pvalue`` (two-sided)."""
    if not 0.0 < p < 1.0 or n < 2:
        return float(stats.binomtest(k, n, p).pvalue)
    if k == p * n:
        return 1.0
    binom = stats.binom

    def pmf(j):
        return binom.pmf(j, n, p)

    mu, sd = n * p, math.sqrt(n * p * (1 - p))
    t = float(pmf(k)) * _BINOM_RERR
    guess = int(round(2 * mu - k))
    width = _width(abs(k - mu) / sd)
    if width is None:
        return float(stats.binomtest(k, n, p).pvalue)
    if k < mu:
        j = _tail_start(pmf, t, math.ceil(mu), n, guess, width, step=+1)
        if j is None:
            return float(stats.binomtest(k, n, p).pvalue)
        pval = binom.cdf(k, n, p) + binom.sf(j - 1, n, p)
    else:
        j = _tail_start(pmf, t, 0, math.floor(mu), guess, width, step=-1)
        if j is None:
            return float(stats.binomtest(k, n, p).pvalue)
        pval = binom.cdf(j, n, p) + binom.sf(k - 1, n, p)
    return float(min(1.0, pval))


def fisher_two_sided_pvalue(table) -> float:
    """``scipy.stats.fisher_exact(table).pvalue`` (two-sided) of a 2 x 2 table of counts."""
    c = np.asarray(table, dtype=np.int64).reshape(2, 2)
    if 0 in c.sum(axis=0) or 0 in c.sum(axis=1):
        return 1.0
    n1, n2, n = int(c[0].sum()), int(c[1].sum()), int(c[:, 0].sum())
    x = int(c[0, 0])
    hg, total = stats.hypergeom, n1 + n2

    def pmf(j):
        return hg.pmf(j, total, n1, n)

    mode = int(np.int64(n + 1) * np.int64(n1 + 1) / np.int64(n1 + n2 + 2))  # scipy's arithmetic, exactly
    pexact, pmode = (float(v) for v in pmf([x, mode]))
    if abs(pexact - pmode) / max(pexact, pmode) <= _FISHER_EPSILON:
        return 1.0
    t = pexact * _FISHER_GAMMA
    mu = n * n1 / (n1 + n2)
    var = mu * (n2 / (n1 + n2)) * (n1 + n2 - n) / max(n1 + n2 - 1, 1)
    guess = int(round(2 * mu - x))
    width = _width(abs(x - mu) / math.sqrt(var)) if var > 0 else None
    if width is None:
        return float(stats.fisher_exact(c).pvalue)
    if x < mode:
        j = _tail_start(pmf, t, mode, n, guess, width, step=+1)
        if j is None:
            return float(stats.fisher_exact(c).pvalue)
        pval = hg.cdf(x, total, n1, n) + (hg.sf(j - 1, total, n1, n) if j <= n else 0.0)
    else:
        j = _tail_start(pmf, t, 0, mode, guess, width, step=-1)
        if j is None:
            return float(stats.fisher_exact(c).pvalue)
        pval = hg.sf(x - 1, total, n1, n) + (hg.cdf(j, total, n1, n) if j >= 0 else 0.0)
    return float(min(1.0, pval))


def binom_upper_quantile(alpha: float, n: int, p: float) -> int:
    """The smallest k with P(K > k) <= alpha for K ~ Binomial(n, p).

    scipy's ``binom.isf`` is that number only while 1 - alpha is not 1 in floating point: for
    alpha below about 1e-16 it returns n (scipy 1.17: isf(1e-20, 25000, 0.8) = 25000, where the
    quantile is 20,577).  Here it is read from the lower tail of n - K, which needs no
    1 - alpha, then settled on the exact sf."""
    k = n - int(stats.binom.ppf(alpha, n, 1 - p))
    while k > 0 and stats.binom.sf(k - 1, n, p) <= alpha:
        k -= 1
    while k < n and stats.binom.sf(k, n, p) > alpha:
        k += 1
    return k


def beta_quantile(a: float, b: float, tail: float, *, upper: bool = False) -> float:
    """The x with I_x(a, b) = tail (``upper``: 1 - I_x(a, b) = tail), I the regularized
    incomplete beta function: scipy's ``betaincinv`` (``betainccinv``), checked on the forward
    function where min(a, b) <= 1e6.  Where I 4 floats either side of scipy's x does not span
    the tail (1e-6 relative slack), x is replaced by the first float at which I reaches the
    tail, found by bisection over the floats' bit patterns (62 steps).

    scipy 1.17 misses it at a = 1000: by 1e-6 relative at b = 1e6, by 100% from b = 1e8
    (betaincinv(1000, 1e9 - 999, 0.025) is 1.9e-6, where I is 1.0; the quantile is 9.39e-7),
    and at a = 2 near b = 2**53.  With a and b both past 1e6 scipy's quantile and its I part
    by up to 1e-9 relative in x (rounding; no failure seen), and scipy's quantile is kept."""
    inv, fwd = (special.betainccinv, special.betaincc) if upper else (special.betaincinv, special.betainc)
    x = float(inv(a, b, tail))
    if math.isfinite(x) and (min(a, b) > _QUANTILE_CHECKED or _brackets(fwd, a, b, x, tail)):
        return x

    def reached(bits: int) -> bool:  # I_x rises with x: 1 - I_x falls to the tail, I_x rises to it
        v = float(fwd(a, b, _float(bits)))
        return v <= tail if upper else v >= tail

    lo, hi = 0, _bits(1.0)  # x = 0 has not reached the tail (0 < tail, 1 > tail), x = 1 has
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if reached(mid):
            hi = mid
        else:
            lo = mid
    return _float(hi)


def _brackets(fwd, a: float, b: float, x: float, tail: float) -> bool:
    """The forward function 4 floats either side of x spans the tail (1e-6 relative slack): x is
    within a few floats of the quantile, however steep I is there (near x = 1 a float moves it 1e-4)."""
    if not 0.0 <= x <= 1.0:
        return False
    near = [float(fwd(a, b, min(max(_float(_bits(x) + d), 0.0), 1.0))) for d in (-_QUANTILE_ULPS, _QUANTILE_ULPS)]
    return min(near) * (1 - _QUANTILE_RTOL) <= tail <= max(near) * (1 + _QUANTILE_RTOL)


def _bits(x: float) -> int:
    return struct.unpack("<q", struct.pack("<d", x))[0]


def _float(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<q", bits))[0]
