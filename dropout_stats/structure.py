"""Tests of a mask's structure, on boolean arrays and counts: homogeneity, independence, trend,
and Holm's split of one false-fail budget across many checks.

Each test returns a ``StructureTestResult`` with a p-value; the caller compares it with its
share of the false-fail budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from ._checks import MAX_COUNT, MAX_COUNT_TEXT, check_integer, check_open_unit, check_probability, show
from ._exact import binom_two_sided_pvalue, fisher_two_sided_pvalue

__all__ = [
    "StructureTestResult",
    "homogeneity_test",
    "independence_test",
    "agreement_test",
    "pair_independence_test",
    "trend_test",
    "HolmResult",
    "holm_bonferroni",
]


@dataclass(frozen=True)
class StructureTestResult:
    name: str
    statistic: float
    pvalue: float
    n: int
    detail: str = ""

    def __repr__(self) -> str:
        return (
            f"StructureTestResult(name={self.name!r}, statistic={self.statistic!r}, pvalue={self.pvalue!r}, n={self.n})"
        )


def _array(value, name: str, what: str = "a 1-D sequence of integers") -> np.ndarray:
    try:
        return np.asarray(value)
    except (TypeError, ValueError):  # a ragged list, an object numpy cannot read
        raise TypeError(f"{name} ({show(value)}) must be {what}") from None


def _counts_arrays(kept, n):
    k = _array(kept, "kept")
    m = _array(n, "n")
    if k.shape != m.shape or k.ndim != 1:
        raise ValueError(f"kept and n must be 1-D of one length: kept {list(k.shape)}, n {list(m.shape)}")
    if k.size < 2:
        raise ValueError(f"kept (length {k.size}) must hold at least 2 groups")
    if not (np.issubdtype(k.dtype, np.integer) and np.issubdtype(m.dtype, np.integer)):
        raise TypeError(f"kept (dtype {k.dtype}) and n (dtype {m.dtype}) must be integer arrays")
    if (k < 0).any() or (m <= 0).any() or (k > m).any():
        bad = int(np.flatnonzero((k < 0) | (m <= 0) | (k > m))[0])
        raise ValueError(f"group {bad}: kept ({int(k[bad])}) must be in [0, n ({int(m[bad])})] and n > 0")
    total = float(m.sum(dtype=np.float64))  # in floats: an int64 (or uint64) sum may wrap
    if total > MAX_COUNT:
        raise ValueError(f"n (summing to {total:.6g} draws) must sum to at most {MAX_COUNT_TEXT}")
    return k.astype(np.int64), m.astype(np.int64)


def homogeneity_test(kept, n) -> StructureTestResult:
    """Do G groups (positions, rows, channels, calls) share one keep probability?

    Pearson's chi-square on the 2 x G table, G - 1 degrees of freedom.  It needs no assumed
    keep probability; the approximation is good when every expected cell holds >= 5 draws
    (the battery's groups hold thousands).
    """
    k, m = _counts_arrays(kept, n)
    total_k, total_n = k.sum(), m.sum()
    pbar = total_k / total_n
    if pbar in (0.0, 1.0):
        return StructureTestResult("homogeneity", 0.0, 1.0, int(total_n), "all kept or all dropped")
    expected = m * pbar
    stat = float(np.sum((k - expected) ** 2 / (expected * (1 - pbar))))
    p = float(stats.chi2.sf(stat, k.size - 1))
    return StructureTestResult("homogeneity", stat, p, int(total_n), f"{k.size} groups, pooled keep {pbar:.6g}")


def _as_bool(a, name: str) -> np.ndarray:
    arr = _array(a, name, "an array of booleans")
    if arr.dtype != bool:
        raise TypeError(f"{name} (dtype {arr.dtype}) must be a boolean mask")
    return arr


def _table_test(a: np.ndarray, b: np.ndarray, name: str) -> StructureTestResult:
    """Fisher's exact test of independence on the 2 x 2 table of (a, b)."""
    n = a.size
    n11 = int(np.count_nonzero(a & b))
    na, nb = int(np.count_nonzero(a)), int(np.count_nonzero(b))
    table = [[n11, na - n11], [nb - n11, n - na - nb + n11]]
    if min(na, nb) == 0 or max(na, nb) == n:
        return StructureTestResult(name, 1.0, 1.0, n, "a margin is constant: nothing to test")
    odds = n11 * table[1][1] / (table[0][1] * table[1][0]) if table[0][1] and table[1][0] else math.inf
    p = fisher_two_sided_pvalue(table)
    return StructureTestResult(
        name, float(odds), float(p), n, f"both kept {n11}, only first {na - n11}, only second {nb - n11}"
    )


def independence_test(mask_a, mask_b) -> StructureTestResult:
    """Are two masks of one shape independent?  Fisher's exact test on their 2 x 2 table.

    Needs no assumed keep probability; the statistic is the odds ratio (1 when independent,
    inf for a reused mask).
    """
    a, b = _as_bool(mask_a, "mask_a"), _as_bool(mask_b, "mask_b")
    if a.shape != b.shape:
        raise ValueError(f"mask_a and mask_b must have the same shape: {list(a.shape)}, {list(b.shape)}")
    if a.size == 0:
        raise ValueError("mask_a (size 0) must not be empty")
    return _table_test(a.ravel(), b.ravel(), "independence")


def agreement_test(mask_a, mask_b, keep_prob) -> StructureTestResult:
    """Do two masks agree at p^2 + q^2, the rate of independent masks with keep probability p?

    Exact two-sided binomial test on the count of agreeing positions.
    """
    a, b = _as_bool(mask_a, "mask_a"), _as_bool(mask_b, "mask_b")
    p = check_probability(keep_prob, "keep_prob")
    if a.shape != b.shape:
        raise ValueError(f"mask_a and mask_b must have the same shape: {list(a.shape)}, {list(b.shape)}")
    if a.size == 0:
        raise ValueError("mask_a (size 0) must not be empty")
    agree = int(np.count_nonzero(a == b))
    expected = p * p + (1 - p) * (1 - p)
    return StructureTestResult(
        "agreement",
        agree / a.size,
        binom_two_sided_pvalue(agree, a.size, expected),
        a.size,
        f"agree {agree}/{a.size}, expected rate {expected:.6g}",
    )


def pair_independence_test(mask, axis: int = -1) -> StructureTestResult:
    """Are neighbours along ``axis`` independent?  Fisher's exact test on disjoint pairs
    (0, 1), (2, 3), ... so that, under the null, the pairs are independent of each other."""
    m = _as_bool(mask, "mask")
    if m.ndim == 0:
        raise ValueError("mask (a scalar) must have at least one axis")
    axis = check_integer(axis, "axis")
    if not -m.ndim <= axis < m.ndim:
        raise ValueError(f"axis ({axis}) must be in [-{m.ndim}, {m.ndim})")
    m = np.moveaxis(m, axis, -1)
    length = m.shape[-1] - m.shape[-1] % 2
    if length < 2:
        raise ValueError(f"mask (length {m.shape[-1]} along axis {axis}) must have >= 2 elements there")
    first, second = m[..., 0:length:2], m[..., 1:length:2]
    r = _table_test(first.ravel(), second.ravel(), f"pairs along axis {axis}")
    return r


def trend_test(kept, n) -> StructureTestResult:
    """Does the keep probability drift across ordered groups (successive calls)?

    Cochran–Armitage test for a linear trend with scores 0, 1, ..., two-sided normal p-value
    (each group holds many draws, so the statistic is close to normal).
    """
    k, m = _counts_arrays(kept, n)
    t = np.arange(k.size, dtype=np.float64)
    total_k, total_n = k.sum(), m.sum()
    pbar = total_k / total_n
    if pbar in (0.0, 1.0):
        return StructureTestResult("trend", 0.0, 1.0, int(total_n), "all kept or all dropped")
    tbar = np.sum(m * t) / total_n
    num = float(np.sum(t * (k - m * pbar)))
    var = pbar * (1 - pbar) * float(np.sum(m * (t - tbar) ** 2))
    z = num / np.sqrt(var)
    p = float(2 * special.ndtr(-abs(z)))
    return StructureTestResult("trend", float(z), p, int(total_n), f"{k.size} calls")


@dataclass(frozen=True)
class HolmResult:
    rejected: tuple[bool, ...]
    thresholds: tuple[float, ...]  # the level each p-value was compared with
    false_fail_rate: float


def holm_bonferroni(pvalues, false_fail_rate: float) -> HolmResult:
    """Holm's step-down: reject the smallest p-values while p_(i) <= alpha / (m - i).

    The chance that any true null is rejected is at most ``false_fail_rate``, whatever the
    dependence between the tests.
    """
    alpha = check_open_unit(false_fail_rate, "false_fail_rate")
    raw = _array(pvalues, "pvalues", "a 1-D sequence of numbers")
    if raw.dtype.kind not in "iuf":  # bools, strings ("0.5" would convert), None, objects
        raise TypeError(f"pvalues ({show(pvalues)}) must be a 1-D sequence of numbers")
    p = raw.astype(np.float64)
    if p.ndim != 1:
        raise ValueError(f"pvalues ({show(pvalues)}) must be 1-D")
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError(f"pvalues ({show(p.tolist())}) must lie in [0, 1]")
    m = p.size
    order = np.argsort(p, kind="stable")
    rejected = np.zeros(m, dtype=bool)
    thresholds = np.empty(m)
    stopped = False
    for rank, idx in enumerate(order):
        thresholds[idx] = alpha / (m - rank)
        if not stopped and p[idx] <= thresholds[idx]:
            rejected[idx] = True
        else:
            stopped = True
    return HolmResult(tuple(bool(r) for r in rejected), tuple(float(t) for t in thresholds), alpha)
