"""Helpers the check families share: 2 x 2 tables of masks, exact p-values, packed bits, sums."""

from __future__ import annotations

import numpy as np

from ..._exact import fisher_two_sided_pvalue
from ..._floats import bfloat16_bits_to_float32
from ...report import Check

_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def bitcounts(a: np.ndarray) -> np.ndarray:
    """Set bits of each byte of a uint8 array (numpy >= 2 counts them natively)."""
    return np.bitwise_count(a) if hasattr(np, "bitwise_count") else _BYTE_POPCOUNT[a]


def accumulate_table(table: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """table += [both kept, a kept, b kept, n]"""
    table[0] += np.count_nonzero(a & b)
    table[1] += np.count_nonzero(a)
    table[2] += np.count_nonzero(b)
    table[3] += a.size


def fisher(table) -> tuple[float, float]:
    """(p-value, agreement rate) of a 2 x 2 table given as [both, a, b, n]."""
    both, na, nb, n = (int(v) for v in table)
    agree = (n - na - nb + 2 * both) / n if n else float("nan")
    if n == 0 or min(na, nb) == 0 or max(na, nb) == n:
        return 1.0, agree
    return fisher_two_sided_pvalue([[both, na - both], [nb - both, n - na - nb + both]]), agree


def table_check(name: str, table, what: str, reproduce: str) -> Check:
    """A statistical Check from Fisher's exact test on a 2 x 2 table of paired masks."""
    if table is None or table[3] == 0:
        return Check(name, None, "statistical", detail=f"no {what} to compare")
    p, agree = fisher(table)
    both, na, nb, n = (int(v) for v in table)
    p_a = na / n
    cond = both / na if na else float("nan")
    return Check(
        name,
        True,
        "statistical",
        p,
        None,
        n,
        values={"agreement": agree, "kept_given_partner_kept": cond, "kept": nb / n},
        observed=f"P(kept | partner kept) = {cond:.6g}, agreement {agree:.6g}",
        expected=f"P(kept) = {nb / n:.6g} (independent)",
        detail=f"Fisher exact test on {n:,} {what}; keep rate of the first {p_a:.6g}",
        reproduce=reproduce,
    )


def as_float64(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float64)


def abs_sum(y: np.ndarray) -> float:
    """sum |y| accumulated in float64 (half-precision values widen to float32 exactly first)."""
    if y.dtype.name == "bfloat16":  # ml_dtypes converts slowly: widen the bits
        y = bfloat16_bits_to_float32(y.view(np.uint16))
    elif y.dtype.itemsize < 4:
        y = y.astype(np.float32)
    return float(np.abs(y).sum(dtype=np.float64))
