"""Counting an observed dropout mask from an input x and an output y.

A position tells something about the mask only when x there is a normal, finite, non-zero
number.  The rest is *excluded*, never counted as dropped:

* x == 0 (say after a ReLU): y is 0 whether the position was kept or dropped.
* x subnormal: TensorFlow on CPU flushes float32, float64 and bfloat16 subnormals to zero
  even at kept positions (TF 2.15 and 2.21), so y == 0 proves nothing there.
* x NaN or +-inf: TensorFlow selects (kept positions keep NaN/inf, dropped hold 0), but an
  implementation that multiplies by the mask writes NaN at dropped positions too (inf * 0),
  so the outcome depends on the implementation; such positions are excluded.

At an informative position, y != 0 (either sign, NaN and inf included) means kept and
y == 0 (+0 or -0) means dropped.  With a ``noise_shape`` one broadcast unit is one draw: a
unit counts as kept (or dropped) when all its informative elements agree, and as
``inconsistent`` when some are kept and some dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._checks import as_dimension, show
from ._floats import FORMATS, array_dtype_name, bits_of, to_numpy

__all__ = ["MaskCounts", "mask_counts", "informative_and_kept"]

_CHUNK = 1 << 16  # elements per block: keeps the temporaries in the L2 cache


@dataclass(frozen=True)
class MaskCounts:
    """Counts of an observed mask, in draws (elements, or noise_shape units)."""

    kept: int
    dropped: int
    excluded: int
    units: int
    inconsistent: int = 0
    excluded_zero: int = 0
    excluded_subnormal: int = 0
    excluded_nonfinite: int = 0
    nonzero_from_zero: int = 0  # elements with x == 0 but y != 0: never produced by dropout

    @property
    def n(self) -> int:
        """Informative draws: kept + dropped."""
        return self.kept + self.dropped

    @property
    def keep_fraction(self) -> float:
        """Observed kept / (kept + dropped); NaN when nothing was informative."""
        return self.kept / self.n if self.n else float("nan")

    @property
    def drop_fraction(self) -> float:
        return self.dropped / self.n if self.n else float("nan")

    def proportion_ci(self, confidence_level: float = 0.95, method: str = "exact"):
        """Interval for the keep probability from these counts."""
        from .binomial import proportion_ci

        return proportion_ci(self.kept, self.n, confidence_level=confidence_level, method=method)

    def rate_test(self, keep_prob: float, *, alternative: str = "two-sided"):
        """Exact binomial test of the kept count against ``keep_prob``."""
        from .binomial import rate_test

        return rate_test(self.kept, self.n, keep_prob, alternative=alternative)

    def __str__(self) -> str:
        s = (
            f"kept {self.kept} of {self.n} informative draws ({self.keep_fraction:.6g}); "
            f"dropped {self.dropped}; excluded {self.excluded} of {self.units} units"
        )
        if self.inconsistent:
            s += f"; {self.inconsistent} inconsistent units"
        return s


def _normalise_noise_shape(noise_shape, shape: tuple[int, ...]) -> tuple[int, ...]:
    if isinstance(noise_shape, (str, bytes, bytearray, dict, set, frozenset)):
        raise TypeError(f"noise_shape ({show(noise_shape)}) must be a sequence of ints")
    ns = to_numpy(noise_shape, "noise_shape") if not isinstance(noise_shape, (list, tuple)) else noise_shape
    try:
        dims = list(np.asarray(ns, dtype=object).ravel()) if not isinstance(ns, (list, tuple)) else list(ns)
    except Exception:
        raise TypeError(f"noise_shape ({noise_shape!r}) must be a sequence of ints") from None
    if len(dims) != len(shape):
        raise ValueError(f"noise_shape ({list(dims)}) must have the rank of x's shape {list(shape)}")
    out = []
    for d, s in zip(dims, shape, strict=True):
        if d is None:
            d = s
        di = as_dimension(d)
        if di is None:  # True, 10.5, "1"
            raise TypeError(f"noise_shape ({show(list(dims))}) must hold ints or None")
        if di not in (1, s):
            raise ValueError(
                f"noise_shape ({list(dims)}) must broadcast to x's shape {list(shape)}: "
                "each entry equal to that dimension or 1"
            )
        out.append(di)
    return tuple(out)


def _informative_and_kept(xb: np.ndarray, yb: np.ndarray, fmt):
    ax = xb & fmt.uint(fmt.abs_mask)
    # normal and finite: min_normal <= |x| < exponent all-ones, as one unsigned compare
    informative = (ax - fmt.uint(fmt.min_normal_bits)) < fmt.uint(fmt.exponent_mask - fmt.min_normal_bits)
    nonzero_y = (yb & fmt.uint(fmt.abs_mask)) != 0
    return informative, nonzero_y


def _validated_bits(x, y):
    """x and y as bit patterns after the checks every mask reader needs."""
    xa = to_numpy(x, "x")
    ya = to_numpy(y, "y")
    xd = array_dtype_name(xa, "x")
    yd = array_dtype_name(ya, "y")
    if xa.shape != ya.shape:
        raise ValueError(f"x and y must have the same shape: x {list(xa.shape)}, y {list(ya.shape)}")
    if xd != yd:
        raise TypeError(f"x and y must have the same dtype: x {xd}, y {yd}")
    if xa.size == 0:
        raise ValueError(f"x (shape {list(xa.shape)}) must not be empty")
    return bits_of(np.ascontiguousarray(xa)), bits_of(np.ascontiguousarray(ya)), FORMATS[xd]


def informative_and_kept(x, y) -> tuple[np.ndarray, np.ndarray]:
    """Element-wise (informative, kept): informative where x is normal, finite and non-zero
    (the rule of the module docstring), kept where y != 0.  Validates like mask_counts."""
    xb, yb, fmt = _validated_bits(x, y)
    return _informative_and_kept(xb, yb, fmt)


def mask_counts(x, y, *, noise_shape=None) -> MaskCounts:
    """Count kept, dropped and excluded draws of dropout's mask from its input and output.

    x, y: arrays of one float dtype and one shape (numpy, TF tensors, anything with
    ``__array__`` or ``.numpy()``).  See the module docstring for what is excluded and why.
    """
    xb, yb, fmt = _validated_bits(x, y)
    if noise_shape is not None:
        ns = _normalise_noise_shape(noise_shape, xb.shape)
        if ns != tuple(xb.shape):
            return _unit_counts(xb, yb, ns, fmt)
    xb, yb = xb.reshape(-1), yb.reshape(-1)

    total = xb.size
    informative_n = 0
    kept = 0
    inf_buf = np.empty(min(_CHUNK, total), dtype=bool)
    for start in range(0, total, _CHUNK):
        xc = xb[start : start + _CHUNK]
        yc = yb[start : start + _CHUNK]
        informative, nonzero_y = _informative_and_kept(xc, yc, fmt)
        informative_n += int(np.count_nonzero(informative))
        kept += int(np.count_nonzero(np.logical_and(informative, nonzero_y, out=inf_buf[: xc.size])))
    excluded = total - informative_n
    extra = _excluded_breakdown(xb, yb, fmt) if excluded else {}
    return MaskCounts(kept=kept, dropped=informative_n - kept, excluded=excluded, units=total, **extra)


def _excluded_breakdown(xb: np.ndarray, yb: np.ndarray, fmt) -> dict:
    ax = xb & fmt.uint(fmt.abs_mask)
    exp = ax & fmt.uint(fmt.exponent_mask)
    zero = ax == 0
    return dict(
        excluded_zero=int(np.count_nonzero(zero)),
        excluded_subnormal=int(np.count_nonzero((exp == 0) & ~zero)),
        excluded_nonfinite=int(np.count_nonzero(exp == fmt.uint(fmt.exponent_mask))),
        nonzero_from_zero=int(np.count_nonzero(zero & ((yb & fmt.uint(fmt.abs_mask)) != 0))),
    )


def _unit_counts(xb: np.ndarray, yb: np.ndarray, ns: tuple[int, ...], fmt) -> MaskCounts:
    informative, nonzero_y = _informative_and_kept(xb, yb, fmt)
    axes = tuple(i for i, (d, s) in enumerate(zip(ns, xb.shape, strict=True)) if d == 1 and s != 1)
    any_kept = np.any(informative & nonzero_y, axis=axes, keepdims=True)
    any_dropped = np.any(informative & ~nonzero_y, axis=axes, keepdims=True)
    units = int(np.prod(ns, dtype=np.int64))
    both = int(np.count_nonzero(any_kept & any_dropped))
    kept = int(np.count_nonzero(any_kept & ~any_dropped))
    dropped = int(np.count_nonzero(any_dropped & ~any_kept))
    excluded = units - kept - dropped - both
    extra = _excluded_breakdown(xb.reshape(-1), yb.reshape(-1), fmt) if excluded else {}
    return MaskCounts(kept=kept, dropped=dropped, excluded=excluded, units=units, inconsistent=both, **extra)
