"""autocorrelation and cross_correlation: the mask is independent at every displacement, within
a call and between consecutive calls.

Detects masks correlated at distances the other checks do not look at: part of the tensor drawn
and tiled, a stream that repeats with any period (a power of two or not), rows some distance
apart that share uniforms, any offset along any axis or combination of axes; and between
consecutive calls a stream that only moved a little (an RNG offset advanced by less than the
tensor, a buffer reused: call i + 1's mask is partly call i's, displaced).
Only these catch: ``corpus.tiled_half`` (half the last axis drawn and tiled: autocorrelation)
and ``corpus.tail_reused`` (each call's first 1/8 of draws are the previous call's from the
middle on: cross_correlation).

Test (in the spirit of NIST SP 800-22's spectral test, but exact): with c = kept - p (p the keep
probability of a correct implementation), the N-D autocorrelation of the unit mask on the torus
at every displacement, summed over the stored masks, and the torus cross-correlation of
consecutive masks, both by FFT, pick the most extreme displacement (largest |z|).  Its linear
pieces (the pairs that do not wrap around an axis, one piece per wrap pattern) are then summed
exactly from the masks.  A linear piece revealed in order is a martingale: each position has at
most one earlier partner, increments c_a c_b lie in [-pq, max(p, q)^2] with conditional
variance pq c_a^2, so Freedman's inequality (Bennett form) bounds its tail given sum c^2 <= v,
and v is exceeded with probability <= 1e-50 (an exact binomial bound on the kept count).
Bonferroni over every linear displacement (about 2N of them within a call, 4N between calls)
makes the p-value valid for the chosen one: at any n, with no normal approximation.  Each entry
is in the run's Holm family.

The displacements the exact pair checks test (one step along the last axis: neighbours; one
along the first: rows) and, for the stateless contract, displacement 0 between consecutive calls
(seed_independence compares those masks) are left out, so every displacement is tested once.
Tested in tests/test_correlation.py.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy import fft as sfft
from scipy.stats import binom

from ..._exact import binom_upper_quantile
from ...report import Check
from . import Family

ETA = 1e-50  # chance that sum c^2 exceeds its bound (added to each p-value)


class Correlation(Family):
    name = "correlation"
    names = ("autocorrelation", "cross_correlation")
    observes = frozenset()

    def applies(self) -> bool:
        return self.run.units >= 4

    def statistical(self):
        return ["autocorrelation", "cross_correlation"]

    def excluded(self) -> set:
        """Displacements (over the mask's axes longer than 1) the pair checks test exactly."""
        shape = [d for d in self.run.unit_shape if d > 1]
        full = self.run.unit_shape
        out = set()
        if full[-1] > 1:
            out.add((0,) * (len(shape) - 1) + (1,))
        if len(full) > 1 and full[0] > 1:
            out.add((1,) + (0,) * (len(shape) - 1))
        return out | {tuple(-v for v in d) for d in out}

    early = None  # the entries, computed on the worker once the last stored mask exists

    def stored(self, masks) -> None:
        # alongside the remaining main calls rather than after the last one
        self.run.later(lambda: setattr(self, "early", self.entries(masks)))

    def conclude(self):
        return self.early or self.entries(self.run.stored_masks)

    def entries(self, stored):
        cfg, run = self.cfg, self.run
        shape = tuple(d for d in run.unit_shape if d > 1) or (1,)
        masks = [m.reshape(shape) for m in stored]
        p = cfg.keep
        axes = tuple(range(1, len(shape) + 1))
        spectra = sfft.rfftn(np.subtract(np.stack(masks), np.float32(p), dtype=np.float32), axes=axes)
        auto = self.test("autocorrelation", masks, p, spectra, axes, within=True)
        if len(masks) < 2:
            return [auto, Check("cross_correlation", None, "statistical", detail="one stored call: nothing to compare")]
        return [auto, self.test("cross_correlation", masks, p, spectra, axes, within=False)]

    def test(self, name, masks, p, spectra, axes, *, within: bool) -> Check:
        shape = masks[0].shape
        n, pq = masks[0].size, p * (1 - p)
        if within:
            power = np.square(spectra.real) + np.square(spectra.imag)
            torus = sfft.irfftn(power.sum(axis=0), s=shape)
            pairs_of_calls = len(masks)
        else:
            torus = sfft.irfftn((np.conj(spectra[:-1]) * spectra[1:]).sum(axis=0), s=shape)
            pairs_of_calls = len(masks) - 1
        skip = self.excluded() if within else (set() if self.cfg.stateful else {(0,) * len(shape)})
        z = np.abs(torus) / (math.sqrt(pairs_of_calls * n) * pq)
        z.flat[0] = 0.0 if within or skip else z.flat[0]  # lag 0 within a call is the variance
        for d in skip:
            z[tuple(v % s for v, s in zip(d, shape, strict=True))] = 0.0
        cell = np.unravel_index(int(np.argmax(z)), shape)
        tested = linear_displacements(shape, within) - (len(skip) // 2 if within else len(skip))
        if tested <= 0:
            return Check(name, None, "statistical", detail=f"mask {list(shape)}: no displacement left to test")
        best = None
        v_all = kept_count_bound(masks if within else masks[:-1], p)
        for d in pieces(cell, shape):
            if tuple(d) in skip or (within and not any(d)):
                continue
            s, npairs = linear_sum(masks, d, p, within)  # npairs > 0: every |d_a| < n_a
            v = min(v_all, pq * max(p, 1 - p) ** 2 * npairs)  # or: every term at its largest
            pv = lag_pvalue(s, v, p, tested)
            if best is None or pv < best[0]:
                best = (pv, d, s, npairs)
        if best is None:
            return Check(name, True, "statistical", 1.0, None, pairs_of_calls * n, detail="no pairs at the chosen cell")
        pv, d, s, npairs = best
        d = [int(v) for v in d]
        phi = pair_correlation(masks, d, within)
        shown = f"{phi:.4g}" if phi is not None else "undefined (one side of every pair is constant)"
        what = "within a call" if within else "between consecutive calls"
        return Check(
            name,
            True,
            "statistical",
            pv,
            None,
            pairs_of_calls * n,
            values={"displacement": d, "correlation": phi, "pairs": npairs, "tested": tested},
            observed=f"displacement {list(d)}: correlation {shown} over {npairs:,} pairs "
            f"(z = {s / math.sqrt(npairs * pq * pq):.3g})",
            expected=f"0 at every displacement {what} ({tested:,} tested)",
            detail=f"{'auto' if within else 'cross'}-correlation of mask {list(shape)} by FFT over "
            f"{len(masks)} calls; the most extreme displacement's linear pairs summed exactly, Freedman's "
            "bound, Bonferroni over the displacements"
            + (f"; {sorted(skip)} are the pair checks'" if within and skip else "")
            + ("" if within or not skip else "; displacement 0 is seed_independence's"),
            reproduce=self.cfg.reproduce(),
        )


def linear_displacements(shape, within: bool) -> int:
    """Non-zero displacement vectors with at least one pair (up to sign within a call)."""
    total = math.prod(2 * s - 1 for s in shape) - 1
    return total // 2 if within else total + 1


def pieces(cell, shape):
    """The linear displacements that wrap to ``cell`` on the torus: d_a or d_a - n_a per axis."""
    options = [(c,) if c == 0 else (c, c - s) for c, s in zip(cell, shape, strict=True)]
    return [list(d) for d in itertools.product(*options)]


def _pairs(masks, d, within: bool):
    """The slices of a mask whose positions u and u + d both lie inside it (no wrap), and the
    masks paired: each with itself (within a call) or with the next call's."""
    first = tuple(slice(0, s - v) if v >= 0 else slice(-v, s) for v, s in zip(d, masks[0].shape, strict=True))
    second = tuple(slice(v, s) if v >= 0 else slice(0, s + v) for v, s in zip(d, masks[0].shape, strict=True))
    partners = zip(masks, masks, strict=True) if within else zip(masks, masks[1:], strict=False)
    return first, second, partners


def linear_sum(masks, d, p: float, within: bool) -> tuple[float, int]:
    """sum of c[u] c'[u + d] over the positions where u + d stays inside the mask (no wrap),
    c from mask i and c' from the same mask (within) or from mask i + 1; exact from counts."""
    first, second, partners = _pairs(masks, d, within)
    total, pairs = 0.0, 0
    for a, b in partners:
        x, y = a[first], b[second]
        m = x.size
        total += int(np.count_nonzero(x & y)) - p * int(np.count_nonzero(x)) - p * int(np.count_nonzero(y)) + m * p * p
        pairs += m
    return total, pairs


def pair_correlation(masks, d, within: bool) -> float | None:
    """The sample (Pearson, phi) correlation of the pairs at displacement d, in [-1, 1]; None when
    either side is constant (all kept or all dropped)."""
    first, second, partners = _pairs(masks, d, within)
    both = nx = ny = m = 0
    for a, b in partners:
        x, y = a[first], b[second]
        both += int(np.count_nonzero(x & y))
        nx += int(np.count_nonzero(x))
        ny += int(np.count_nonzero(y))
        m += x.size
    spread = nx * (m - nx) * ny * (m - ny)
    if spread == 0:
        return None
    return max(-1.0, min(1.0, (m * both - nx * ny) / math.sqrt(spread)))  # clip the last ULP of rounding


def kept_count_bound(masks, p: float) -> float:
    """v with P(pq * sum c^2 > v) <= ETA under the null: sum c^2 = N p^2 + K (q^2 - p^2) for K
    kept of N, bounded by K's exact binomial tail on the side that makes it larger."""
    n = sum(m.size for m in masks)
    q = 1 - p
    if q * q >= p * p:
        k = float(binom_upper_quantile(ETA, n, p))  # P(K > k) <= ETA (binom.isf says n at 1e-50)
    else:
        k = float(binom.ppf(ETA, n, p))  # P(K < k) < ETA
    return p * q * (n * p * p + k * (q * q - p * p))


def bennett_tail(s: float, v: float, m: float) -> float:
    """Freedman's inequality, Bennett form: P(S >= s and W <= v) <= exp(-(v/m^2) h(s m / v)) for a
    martingale with increments <= m and predictable variation W; h(u) = (1 + u) log(1 + u) - u."""
    if s <= 0:
        return 1.0
    u = s * m / v
    return math.exp(-(v / (m * m)) * ((1 + u) * math.log1p(u) - u))


def lag_pvalue(s: float, v: float, p: float, tested: int) -> float:
    """Two-sided p-value of the most extreme of ``tested`` lags, Bonferroni over them, plus ETA.
    Increments c_a c_b lie in [-pq, max(p, q)^2]."""
    q = 1 - p
    one = bennett_tail(abs(s), v, max(p, q) ** 2) + bennett_tail(abs(s), v, p * q)
    return min(1.0, tested * one + ETA)
