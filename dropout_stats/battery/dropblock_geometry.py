"""DropBlock's geometry, exactly, and the conservative tail bound its fraction test uses.

A DropBlock mask draws independent Bernoulli(gamma) *centres* on a set of allowed positions and
drops the block of each centre drawn.  Along an axis of length L with block k the block of
centre s is rows ``[s - k//2, s - k//2 + k - 1]`` (odd k: centred; even k: one more row before
the centre than after, timm >= 1.0.23's anchoring), cut to the map; the allowed centres are
``[k//2, L - k + k//2]`` (``centres="valid"``: the block fits, torchvision) or every row
(``"all"``: the block is clipped at the border, timm).  Centres form a product set, so the
number of allowed centres whose block covers position p is ``c(p) = prod_axes c_a(p_a)``, and

    P(p dropped) = 1 - (1 - gamma)^c(p),
    P(p and p' kept) = (1 - gamma)^(c(p) + c(p') - c(p, p')),

``c(p, p')`` the centres covering both (a product of per-axis counts too).  So the dropped count
X of one map has an exact mean and variance.  Positions at least one block apart along some
axis share no centre: their drops are independent, which the independence checks use.

The fraction test sums X over n independent maps and bounds the deviation from n E[X] by
Bennett's inequality (X - E[X] <= M - E[X] above, >= -E[X] below, M the positions of a map):
``P(S - n mu >= t) <= exp(-(n var / b^2) h(b t / (n var)))``, ``h(u) = (1 + u) log(1 + u) - u``.
It holds for every n and needs no normal approximation; the two-sided p-value is twice the
bound on the observed side (valid: each side is at most half the level).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy import ndimage


class Geometry:
    """Block sizes, allowed centres and the exact drop probabilities of a declared DropBlock."""

    def __init__(self, spatial, kernel, centres, gamma):
        self.spatial = tuple(int(s) for s in spatial)
        self.kernel = tuple(int(k) for k in kernel)
        self.anchor = tuple(k // 2 for k in self.kernel)  # rows before the centre
        self.centres = centres
        self.gamma = float(gamma)
        self.axis_cover = [
            self._axis_cover(L, k, a) for L, k, a in zip(self.spatial, self.kernel, self.anchor, strict=True)
        ]
        self.cover = _outer(self.axis_cover)  # c(p)
        self.positions = int(math.prod(self.spatial))
        self.p = self.drop_probability(self.gamma)

    def allowed(self, L, k, a):
        """(first, last) allowed centre along an axis."""
        return (a, L - k + a) if self.centres == "valid" else (0, L - 1)

    def _axis_cover(self, L, k, a):
        lo, hi = self.allowed(L, k, a)
        i = np.arange(L)
        return np.clip(np.minimum(i + a, hi) - np.maximum(i - k + 1 + a, lo) + 1, 0, None)

    def _axis_joint(self, L, k, a, d):
        """(i, c_a(i, i + d)) for the rows i with i + d inside the map: centres covering both."""
        lo, hi = self.allowed(L, k, a)
        i = np.arange(max(0, -d), min(L, L - d))
        j = i + d
        first = np.maximum(np.maximum(i, j) - k + 1 + a, lo)
        last = np.minimum(np.minimum(i, j) + a, hi)
        return i, np.clip(last - first + 1, 0, None)

    def drop_probability(self, gamma) -> np.ndarray:
        """P(p dropped) for every position p of a map."""
        return -np.expm1(self.cover * np.log1p(-gamma)) if gamma < 1 else (self.cover > 0).astype(float)

    def mean(self, gamma=None) -> float:
        """E[X], X the dropped positions of one map."""
        return float(self.drop_probability(self.gamma if gamma is None else gamma).sum())

    def variance(self, gamma=None) -> float:
        """Var[X] = sum over position pairs of q^(c + c') (q^(-c(p, p')) - 1), q = 1 - gamma."""
        g = self.gamma if gamma is None else gamma
        if g <= 0 or g >= 1:
            return 0.0
        logq = math.log1p(-g)
        total = 0.0
        ranges = [range(-(k - 1), k) for k in self.kernel]
        for offsets in itertools.product(*ranges):
            parts = [
                self._axis_joint(L, k, a, d)
                for L, k, a, d in zip(self.spatial, self.kernel, self.anchor, offsets, strict=True)
            ]
            if any(i.size == 0 for i, _ in parts):
                continue
            joint = _outer([r for _, r in parts])
            if not joint.any():
                continue
            here = _outer([c[i] for c, (i, _) in zip(self.axis_cover, parts, strict=True)])
            there = _outer([c[i + d] for c, (i, _), d in zip(self.axis_cover, parts, offsets, strict=True)])
            total += float(np.sum(np.exp(logq * (here + there)) * np.expm1(-logq * joint)))
        return max(total, 0.0)

    def gamma_for_mean(self, target: float) -> float:
        """The gamma whose maps drop ``target`` positions on average (bisection; mean rises with gamma)."""
        lo, hi = 0.0, 1.0
        for _ in range(200):
            mid = (lo + hi) / 2
            if self.mean(mid) < target:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    def lattice(self):
        """Positions of the highest drop probability, one block apart along every axis: their drops
        are independent and identically distributed within a map (index arrays per axis)."""
        axes = []
        for c, k in zip(self.axis_cover, self.kernel, strict=True):
            top = np.flatnonzero(c == c.max())
            axes.append(top[(top - top[0]) % k == 0])
        grids = np.meshgrid(*axes, indexing="ij")
        return tuple(g.ravel() for g in grids)

    def span_pairs(self):
        """Per axis, two positions exactly one block apart (no common centre) or None: the first
        of highest drop probability and its neighbour one block further (or back)."""
        start = tuple(int(np.argmax(c)) for c in self.axis_cover)
        pairs = []
        for axis, (L, k) in enumerate(zip(self.spatial, self.kernel, strict=True)):
            other = list(start)
            if start[axis] + k < L:
                other[axis] = start[axis] + k
            elif start[axis] - k >= 0:
                other[axis] = start[axis] - k
            else:
                pairs.append(None)
                continue
            pairs.append((start, tuple(other)))
        return pairs

    def describe(self) -> str:
        block = "x".join(str(k) for k in self.kernel)
        where = "where the whole block fits" if self.centres == "valid" else "anywhere, blocks clipped at the border"
        return f"blocks {block}, centres {where}, gamma {self.gamma:.6g}"


def _outer(vectors) -> np.ndarray:
    out = np.asarray(vectors[0], dtype=np.float64)
    for v in vectors[1:]:
        out = np.multiply.outer(out, np.asarray(v, dtype=np.float64))
    return out


def union_violations(dropped: np.ndarray, kernel, centres) -> np.ndarray:
    """Per position of ``dropped`` (units, *spatial): dropped but inside no allowed block that is
    dropped whole.  An allowed block is dropped whole when every position of it (clipped to the
    map) is dropped: the erosion of the mask; its dilation must give the mask back.

    scipy's filters of even size k cover [i - k//2, i + k//2 - 1] (origin 0): the block of centre i,
    rows [i - a, i - a + k - 1] with a = k//2, for every k.  Position i is covered by the centres
    [i - (k - 1 - a), i + a]: the same window for odd k, one row later (origin -1) for even k.
    Outside the map counts as dropped for clipped blocks (``centres="all"``) and as kept for
    ``"valid"`` (a block that leaves the map is never whole)."""
    lead = dropped.ndim - len(kernel)
    size = (1,) * lead + tuple(kernel)
    bits = np.ascontiguousarray(dropped).view(np.uint8)
    whole = ndimage.minimum_filter(bits, size=size, mode="constant", cval=int(centres == "all"))
    origin = (0,) * lead + tuple(-1 if k % 2 == 0 else 0 for k in kernel)
    covered = ndimage.maximum_filter(whole, size=size, mode="constant", cval=0, origin=origin)
    return dropped & ~covered.astype(bool)


def _h(u: float) -> float:
    return (1 + u) * math.log1p(u) - u


def bennett_tail(t: float, n: int, var: float, b: float) -> float:
    """Upper bound on P(S - n mu >= t) for S a sum of n iid X with Var X = var, X - mu <= b."""
    if t <= 0:
        return 1.0
    if var <= 0 or b <= 0:
        return 0.0
    v = n * var
    return math.exp(-(v / (b * b)) * _h(b * t / v))


def bennett_pvalue(total: float, n: int, mean: float, var: float, top: float) -> float:
    """Two-sided p-value of a sum ``total`` of n iid maps' counts in [0, top] (mean, var exact)."""
    dev = total - n * mean
    if var <= 0:
        return 1.0 if abs(dev) < 0.5 else 0.0
    bound = bennett_tail(dev, n, var, top - mean) if dev >= 0 else bennett_tail(-dev, n, var, mean)
    return min(1.0, 2 * bound)


def bennett_threshold(level: float, n: int, var: float, b: float) -> float:
    """The smallest deviation t whose one-sided bound is <= level."""
    lo, hi = 0.0, max(1.0, n * max(b, 1.0))
    for _ in range(200):
        mid = (lo + hi) / 2
        if bennett_tail(mid, n, var, b) > level:
            lo = mid
        else:
            hi = mid
    return hi


def maps_needed(geom: Geometry, level: float, beta: float, delta: float, limit: int) -> tuple[int, bool]:
    """Maps the fraction test needs (at ``level``, two-sided) to fail a gamma whose maps drop a
    fraction ``delta`` more or less than declared with probability >= 1 - beta (each side's pass
    probability bounded by Bennett's inequality under that gamma), and whether that is within ``limit``."""
    m, top = geom.mean(), geom.positions
    var = geom.variance()
    sides = []
    for sign in (1, -1):
        target = m + sign * delta * top
        if 0 < target < top:
            g = geom.gamma_for_mean(target)
            sides.append((sign, geom.mean(g), geom.variance(g)))

    def ok(n):
        for sign, m_alt, v_alt in sides:
            t = bennett_threshold(level / 2, n, var, top - m if sign > 0 else m)
            room = n * abs(m_alt - m) - t
            if room <= 0 or bennett_tail(room, n, v_alt, m_alt if sign > 0 else top - m_alt) > beta / 2:
                return False
        return True

    hi = 1
    while not ok(hi):
        if hi >= limit:
            return limit, False
        hi = min(limit, hi * 2)
    lo = hi // 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi, True
