"""What a dtype does to dropout: the exact keep probability and the exact kept values.

TensorFlow draws U uniform on a grid of M levels k / M (M = 2**10 in float16, 2**7 in
bfloat16 (2**23 under XLA), 2**23 in float32, 2**52 in float64), rounds the rate to the input's dtype and keeps
a position when U >= fl(rate).  So the keep probability is (M - ceil(fl(rate) * M)) / M, not
1 - rate: bfloat16 at rate 0.2 keeps 102/128 = 0.796875.

Kept values are scaled by one of two formulas (bit-exact on TF 2.15 and 2.21):

* ``"multiply"``: a Python-float rate; scale = fl(1 / (1 - rate)) computed in double, rounded to
  the dtype, then y = fl(x * scale).
* ``"divide"``: a tensor rate; y = fl(x / fl(1 - fl(rate))).
* ``"exact"``: the correctly rounded x / (1 - rate) (the ideal; neither TF path gives it always).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ._checks import check_rate
from ._floats import FORMATS, bfloat16_bits_to_float32, dtype_name, float32_to_bfloat16_bits, round_to

__all__ = [
    "uniform_keep_fraction",
    "expected_keep_fraction",
    "expected_keep_probability",
    "ScaleFormula",
    "expected_scale",
    "apply_scale",
    "ulp_distance",
    "SCALE_FORMULAS",
]

SCALE_FORMULAS = ("multiply", "divide", "exact")


def uniform_keep_fraction(rate, dtype, levels: int, rule: str = "U >= fl(rate)") -> Fraction:
    """P(keep) for U uniform on {0, 1/M, ..., (M-1)/M} with M = ``levels``, as an exact fraction:
    ``"U >= fl(rate)"`` (TensorFlow) or ``"U < fl(1 - rate)"`` (JAX's bernoulli), the threshold
    rounded to ``dtype``.

    >>> uniform_keep_fraction(0.2, "bfloat16", 128, "U < fl(1 - rate)")
    Fraction(103, 128)
    """
    r = check_rate(rate)
    name = dtype_name(dtype)
    if rule == "U >= fl(rate)":
        t = Fraction(float(round_to(r, name)))
        first_kept = -((-t * levels) // 1)  # ceil
        return Fraction(max(0, levels - int(first_kept)), levels)
    if rule == "U < fl(1 - rate)":
        t = Fraction(float(round_to(1.0 - r, name)))
        kept = -((-t * levels) // 1)  # k / M < t exactly for k < ceil(t M)
        return Fraction(min(levels, max(0, int(kept))), levels)
    raise ValueError(f"rule ({rule!r}) must be 'U >= fl(rate)' or 'U < fl(1 - rate)'")


def expected_keep_fraction(rate, dtype="float32", *, xla: bool = False) -> Fraction:
    """P(U >= fl(rate)) for TensorFlow's uniform U in ``dtype``, as an exact fraction.

    ``xla=True``: under jit_compile TensorFlow's bfloat16 uniform is a float32 uniform (2^23
    levels) truncated to bfloat16, so bfloat16 at rate 0.2 keeps 0.7998046875 there, not
    102/128 (measured on TF 2.21: 2e7 draws, p = 0.17 against this, p < 1e-250 against 102/128).
    """
    name = dtype_name(dtype)
    fmt = FORMATS[name]
    return uniform_keep_fraction(rate, name, fmt.xla_uniform_levels if xla else fmt.uniform_levels)


def expected_keep_probability(rate, dtype="float32", *, xla: bool = False) -> float:
    """The exact keep probability of TensorFlow's dropout at ``rate`` in ``dtype``.

    >>> expected_keep_probability(0.2, "bfloat16")
    0.796875
    """
    return float(expected_keep_fraction(rate, dtype, xla=xla))


@dataclass(frozen=True)
class ScaleFormula:
    """How kept values are scaled: ``y = fl(x * factor)`` or ``y = fl(x / factor)``."""

    formula: str  # "multiply", "divide" or "exact"
    dtype: str
    rate: float
    factor: float  # the multiplier (multiply), divisor (divide), or 1 - rate (exact)

    def apply(self, x) -> np.ndarray:
        """Expected kept values for x (as float64 holding values of ``dtype``)."""
        return apply_scale(x, self)


def expected_scale(rate, dtype="float32", *, rate_is_tensor: bool = False) -> ScaleFormula:
    """TensorFlow's scale of kept values: multiply by fl(1/(1-rate)) for a Python-float rate,
    divide by fl(1 - fl(rate)) for a tensor rate."""
    r = check_rate(rate)
    name = dtype_name(dtype)
    if rate_is_tensor:
        divisor = float(round_to(1.0 - float(round_to(r, name)), name))
        return ScaleFormula("divide", name, r, divisor)
    return ScaleFormula("multiply", name, r, float(round_to(1.0 / (1.0 - r), name)))


def exact_scale(rate, dtype="float32") -> ScaleFormula:
    """The ideal: the correctly rounded x / (1 - rate)."""
    r = check_rate(rate)
    return ScaleFormula("exact", dtype_name(dtype), r, 1.0 - r)


def apply_scale(x, scale: ScaleFormula) -> np.ndarray:
    """fl(x * factor) or fl(x / factor) in scale.dtype, returned as float64 values.

    Products and quotients are computed in a wider format that holds them exactly (products)
    or with enough guard bits that one final rounding is correct (quotients: 53 >= 2*24 + 2).
    """
    if not isinstance(scale, ScaleFormula):
        raise TypeError(f"scale ({scale!r}) must be a ScaleFormula, from expected_scale() or exact_scale()")
    name = scale.dtype
    a = np.asarray(x)
    if a.dtype.name == name and name != "float64" and scale.formula != "exact":
        out = _scaled_native(a, scale)
        return (bfloat16_bits_to_float32(out) if name == "bfloat16" else out).astype(np.float64)
    xv = _values_float64(a, name)
    if scale.formula == "multiply":
        if name == "float64":
            return xv * scale.factor
        return round_to(xv * scale.factor, name)
    if scale.formula == "divide":
        if name == "float64":
            return xv / scale.factor
        return round_to(xv / scale.factor, name)
    # exact: x / (1 - rate) correctly rounded; 1 - rate in double is exact for the rates we
    # see only approximately, so compute with Fractions where the format is float64.
    if name == "float64":
        from fractions import Fraction as F

        d = F(1) - F(scale.rate)
        flat = [float(F(float(v)) / d) if np.isfinite(v) else v / (1 - scale.rate) for v in xv.ravel()]
        return np.asarray(flat, dtype=np.float64).reshape(xv.shape)
    return round_to(xv / (1.0 - scale.rate), name)


def _scaled_native(a: np.ndarray, scale: ScaleFormula) -> np.ndarray:
    """fl(x * factor) or fl(x / factor) for x already in scale.dtype, in the dtype's own
    arithmetic; bfloat16 comes back as its uint16 bits.  (multiply/divide formulas only.)

    Each result is rounded once, correctly, as the float64 route does: float16 goes through
    float32 (24 >= 2*11 + 2 bits), bfloat16 too (exact 16-bit products, 24 >= 2*8 + 2)."""
    name = scale.dtype
    with np.errstate(all="ignore"):
        if name == "bfloat16":
            a32 = bfloat16_bits_to_float32(a.view(np.uint16))
            factor = np.float32(scale.factor)
            return float32_to_bfloat16_bits(a32 * factor if scale.formula == "multiply" else a32 / factor)
        factor = np.dtype(name).type(scale.factor)
        return a * factor if scale.formula == "multiply" else a / factor


def _values_float64(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.name == "bfloat16":
        return bfloat16_bits_to_float32(a.view(np.uint16)).astype(np.float64)
    return a.astype(np.float64)


def _ordered_ints(values: np.ndarray, name: str) -> np.ndarray:
    """Map floats of ``name`` to integers whose differences count representable steps."""
    fmt = FORMATS[name]
    if name == "bfloat16":
        bits = float32_to_bfloat16_bits(values).astype(np.int64)
    elif name == "float64":
        bits = np.ascontiguousarray(values, dtype=np.float64).view(np.int64)
        return np.where(bits < 0, -(bits & np.int64(0x7FFFFFFFFFFFFFFF)), bits)
    else:
        bits = np.ascontiguousarray(values.astype(np.dtype(name))).view(fmt.uint).astype(np.int64)
    magnitude = bits & np.int64(fmt.abs_mask)
    return np.where(bits & np.int64(fmt.sign_mask), -magnitude, magnitude)


def ulp_distance(a, b, dtype=None) -> np.ndarray:
    """Number of representable ``dtype`` values between a and b (0 when equal, +0 == -0).

    NaN anywhere gives -1.  ``dtype`` defaults to a's dtype.
    """
    aa = np.asarray(a)
    name = dtype_name(dtype if dtype is not None else aa.dtype)
    av = _values_float64(aa, name) if aa.dtype.name == "bfloat16" else aa.astype(np.float64)
    bb = np.asarray(b)
    bv = _values_float64(bb, name) if bb.dtype.name == "bfloat16" else bb.astype(np.float64)
    if av.shape != bv.shape:
        raise ValueError(f"a and b must have the same shape: a {list(av.shape)}, b {list(bv.shape)}")
    ia, ib = _ordered_ints(av, name), _ordered_ints(bv, name)
    with np.errstate(over="ignore"):
        d = np.abs(ia - ib)
    return np.where(np.isnan(av) | np.isnan(bv), -1, d)
