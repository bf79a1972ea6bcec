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

The contract a correct implementation meets, however it is written, is wider than any one
framework's formula: ``scale_bound`` (derived in its docstring) and ``within_scale_bound``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ._checks import check_count, check_dtype, check_flag, check_rate
from ._floats import FORMATS, bfloat16_bits_to_float32, dtype_name, float32_to_bfloat16_bits, round_to

__all__ = [
    "uniform_keep_fraction",
    "keep_models",
    "rounded_uniform_keep_fraction",
    "expected_keep_fraction",
    "expected_keep_probability",
    "ScaleFormula",
    "expected_scale",
    "apply_scale",
    "ulp_distance",
    "SCALE_FORMULAS",
    "ScaleBound",
    "scale_bound",
    "scale_error",
    "within_scale_bound",
    "round_correctly",
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
    name = check_dtype(dtype)
    levels = check_count(levels, "levels", minimum=1)
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
    name = check_dtype(dtype)
    xla = check_flag(xla, "xla")
    fmt = FORMATS[name]
    return uniform_keep_fraction(rate, name, fmt.xla_uniform_levels if xla else fmt.uniform_levels)


def keep_models(dtype) -> list:
    """The keep probabilities of the documented correct mechanisms that need no framework: (label,
    rate -> exact keep) pairs, distinct ones only being worth a test.

    * ``1 - rate``: an exact Bernoulli(1 - rate) draw (numpy's binomial, torch's bernoulli in
      double) and ``1 - fl(rate)``, the same with the rate rounded to ``dtype``;
    * a uniform drawn in ``dtype`` (M = 2^m or 2^(m+1) levels, m its fraction bits: TensorFlow's
      and JAX's take 2^m, torch's float ones 2^(m+1)) or in float32 (2^23 or 2^24 levels: JAX's
      bernoulli whatever the dtype), compared as ``U >= fl(rate)`` or ``U < fl(1 - rate)``.
    """
    name = check_dtype(dtype)
    m = FORMATS[name].mantissa_bits

    def exact(rate):
        return 1 - Fraction(rate)

    def rounded(rate):
        return 1 - Fraction(float(round_to(rate, name)))

    models = [("1 - rate (an exact Bernoulli draw)", exact), (f"1 - fl(rate) in {name}", rounded)]
    grids = [(name, 2**m), (name, 2 ** (m + 1))] + (
        [("float32", 2**23), ("float32", 2**24)] if name != "float32" else []
    )
    for grid_dtype, levels in dict.fromkeys(grids):
        for rule in ("U >= fl(rate)", "U < fl(1 - rate)"):

            def keep(rate, grid_dtype=grid_dtype, levels=levels, rule=rule):
                return uniform_keep_fraction(rate, grid_dtype, levels, rule)

            models.append((f"{rule}, U uniform in {grid_dtype} on {levels} levels", keep))
    if name in ("float16", "bfloat16"):

        def rounded(rate):
            return rounded_uniform_keep_fraction(rate, name)

        models.append((f"U >= fl(rate), U a float32 uniform rounded to {name}, 1 excluded (torch.rand)", rounded))
    return models


def _neighbour_below(t: float, dtype: str) -> float:
    """The largest ``dtype`` value below the positive ``dtype`` value t."""
    if dtype == "bfloat16":
        bits = float32_to_bfloat16_bits(np.float32(t))
        return float(bfloat16_bits_to_float32(np.uint16(bits - 1)))
    return float(np.nextafter(np.dtype(dtype).type(t), np.dtype(dtype).type(0)))


def rounded_uniform_keep_fraction(rate, dtype, bits: int = 24) -> Fraction:
    """P(fl(U) >= fl(rate) and fl(U) < 1) for U uniform on {k / 2^bits}, fl rounding to ``dtype``
    (to nearest, ties to even): a uniform drawn in float32 and rounded to a 16-bit dtype, whose
    draws that round up to 1 are not kept, as ``torch.rand(..., dtype=torch.bfloat16)`` measures
    (P(U >= 0.2) = 0.79833 over 2e8 draws; this gives 0.798340)."""
    r = check_rate(rate)
    name = dtype_name(dtype)
    n = 2**bits
    t = float(round_to(r, name))

    def first_rounding_to_at_least(v: float) -> int:
        """The first k with fl(k / n) >= v, v > 0 a dtype value."""
        mid = Fraction(_neighbour_below(v, name)) / 2 + Fraction(v) / 2
        k = mid * n
        if k.denominator != 1:
            return int(k) + 1
        # a tie rounds to the even neighbour: v itself when v's last significant bit is 0
        v_bits = (
            int(float32_to_bfloat16_bits(np.float32(v)))
            if name == "bfloat16"
            else int(np.dtype(name).type(v).view(np.uint16))
        )
        return int(k) if v_bits % 2 == 0 else int(k) + 1

    below_one = first_rounding_to_at_least(1.0)
    at_least_t = first_rounding_to_at_least(t) if t > 0 else 0
    return Fraction(max(0, below_one - at_least_t), n)


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
    name = check_dtype(dtype)
    if check_flag(rate_is_tensor, "rate_is_tensor"):
        divisor = float(round_to(1.0 - float(round_to(r, name)), name))
        return ScaleFormula("divide", name, r, divisor)
    return ScaleFormula("multiply", name, r, float(round_to(1.0 / (1.0 - r), name)))


def exact_scale(rate, dtype="float32") -> ScaleFormula:
    """The ideal: the correctly rounded x / (1 - rate)."""
    r = check_rate(rate)
    return ScaleFormula("exact", check_dtype(dtype), r, 1.0 - r)


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
    return round_correctly(_exact_quotient(xv, scale.rate), name)


def _exact_quotient(xv: np.ndarray, rate: float) -> np.ndarray:
    """x / (1 - rate) for x of a format of at most 24 bits: in float64 when 1 - rate is exact
    there, else in long double, so that one rounding to the format afterwards is correct (53 bits
    hold 2 x 24 + 2, and the long double quotient is off by far less than its half ULP)."""
    one_minus = 1.0 - rate
    if one_minus + rate == 1.0 and (1.0 - one_minus) == rate:  # 1 - rate exact in double
        return xv / one_minus
    wide = np.asarray(xv, dtype=np.longdouble) / (np.longdouble(1) - np.longdouble(rate))
    return wide.astype(np.float64)  # 64 -> 53 bits, then -> <= 24: one more rounding, far from ties


def round_correctly(values, dtype: str) -> np.ndarray:
    """float64 values rounded once, to nearest (ties to even), to ``dtype``; as float64.

    Unlike ``round_to``, bfloat16 is rounded straight from float64, not through float32 (a
    double rounding: a value computed in float64 and cast once must not be judged by it)."""
    dtype = check_dtype(dtype)
    v = np.asarray(values, dtype=np.float64)
    if dtype != "bfloat16":
        return round_to(v, dtype)
    with np.errstate(all="ignore"):
        m, e = np.frexp(v)  # v = m 2^e, 0.5 <= |m| < 1
        normal = np.ldexp(np.rint(np.ldexp(m, 8)), e - 8)  # 8 significant bits, ties to even
        tiny = np.ldexp(np.rint(np.ldexp(v, 133)), -133)  # below 2^-126: multiples of 2^-133
        out = np.where(np.abs(v) < 2.0**-126, tiny, normal)
        top = (2 - 2.0**-7) * 2.0**127
        out = np.where(np.abs(out) > top, np.copysign(np.inf, v), out)
    return np.where(np.isfinite(v), out, v)


# unit roundoff 2^-p (p significant bits) and the largest exponent of each format
_PRECISION = {"float16": (11, 15), "bfloat16": (8, 127), "float32": (24, 127), "float64": (53, 1023)}


def smallest_normal(dtype) -> float:
    """The smallest positive normal number of ``dtype`` (float16 2^-14, bfloat16 and float32 2^-126)."""
    return 2.0 ** (1 - _PRECISION[check_dtype(dtype)][1])


@dataclass(frozen=True)
class ScaleBound:
    """The kept values a correct dropout may return at ``rate`` in ``dtype`` (see ``scale_bound``)."""

    rate: float
    dtype: str
    rates: tuple  # the rate as declared and rounded to dtype: kept values round x / (1 - r) for one of them
    unit_roundoff: float  # u = 2^-p
    low: float  # y / (x / (1 - r)) >= low (rounded to a double: for float64 use ``limits``)
    high: float  # y / (x / (1 - r)) <= high
    tiny: float  # the format's smallest subnormal: absolute slack for results below its normals

    def limits(self):
        """(low, high) in long double, from u itself: as doubles, float64's bound would round to 4 u."""
        u = np.longdouble(self.unit_roundoff)
        return ((1 - u) / (1 + u)) ** 2, ((1 + u) / (1 - u)) ** 2

    @property
    def units(self) -> float:
        """The bound's half-width in units of u: (high - 1) / u, about 4."""
        return float((self.limits()[1] - 1) / np.longdouble(self.unit_roundoff))

    def quotients(self, x) -> list:
        """x / (1 - r) for each of ``rates``, in long double (1 - r exact there for r >= 2^-11)."""
        xv = _as_wide(x, self.dtype)
        with np.errstate(all="ignore"):
            return [xv / (np.longdouble(1) - np.longdouble(r)) for r in self.rates]


def scale_bound(rate, dtype="float32") -> ScaleBound:
    """The rounding bound for kept values of a correct dropout: ``y`` is within it when, for r
    the rate as declared or rounded to ``dtype``, ``low <= y / (x / (1 - r)) <= high`` with
    ``low = ((1 - u) / (1 + u))^2`` and ``high = ((1 + u) / (1 - u))^2``, u = 2^-p the unit
    roundoff of ``dtype`` (float16 2^-11, bfloat16 2^-8, float32 2^-24, float64 2^-53): about
    x / (1 - r) times 1 +- 4u.

    Derivation.  A correct implementation computes x / (1 - r) with at most four roundings, each
    to nearest in ``dtype`` or in a wider format (relative error at most u each):

    * the divisor ``c = fl(1 - r)`` (1 - rate computed in the dtype or wider);
    * the scale ``s = fl(1 / c)``, when it multiplies (its reciprocal, rounded once more);
    * the product ``x * s`` or the quotient ``x / c``;
    * a final cast to the dtype, when that product was computed in a wider format (float32
      "opmath" for 16-bit inputs, as PyTorch and Eigen do).

    So y = (x / (1 - r)) (1 + e1)(1 + e2) / ((1 + e3)(1 + e4)) with |e_i| <= u at worst, which
    lies in [low, high].  Results in the subnormal range get an absolute slack of the format's
    smallest subnormal, and a quotient past the largest finite value may round to infinity.
    ``x * mask / keep``, ``x / (1 - rate)``, ``x * (1 / (1 - rate))`` in any precision at least
    the dtype's, every framework formula measured (TensorFlow's multiply and divide, JAX's,
    PyTorch's), and one ULP off any of those (two roundings and one ULP, at most 4u) are inside;
    a scale computed in a narrower format (a bfloat16 scale for float32 values), a wrong rate, or
    values five ULP or more away are outside.  Ask for bit-identity to a framework's formula
    with ``verify(..., exact_scale=True)``.
    """
    r = check_rate(rate)
    name = check_dtype(dtype)
    p, emax = _PRECISION[name]
    u = Fraction(1, 2**p)
    rates = tuple(dict.fromkeys((r, float(round_to(r, name)))))
    low = float(((1 - u) / (1 + u)) ** 2)
    high = float(((1 + u) / (1 - u)) ** 2)
    return ScaleBound(r, name, rates, float(u), low, high, 2.0 ** (2 - emax - p))


def _as_wide(a, name: str) -> np.ndarray:
    return np.asarray(_values_float64(np.asarray(a), name), dtype=np.longdouble)


def scale_error(x, y, rate, dtype="float32") -> np.ndarray:
    """|y / (x / (1 - r)) - 1| / u for the nearer of the two rates r (``scale_bound``): each kept
    value's error in units of the dtype's unit roundoff (at most about 4 for a correct dropout).
    Computed in long double; inf where y is not finite."""
    b = scale_bound(rate, dtype)
    yv = _as_wide(y, b.dtype)
    best = np.full(np.shape(yv), np.inf, dtype=np.longdouble)
    with np.errstate(all="ignore"):
        for t in b.quotients(x):
            best = np.fmin(best, np.abs(yv / t - 1) / np.longdouble(b.unit_roundoff))
    return np.where(np.isfinite(best), best, np.inf).astype(np.float64)


def within_scale_bound(x, y, rate, dtype="float32") -> np.ndarray:
    """Per element: y is a kept value a correct dropout may return for x (``scale_bound``)."""
    b = scale_bound(rate, dtype)
    yv = _as_wide(y, b.dtype)
    p, emax = _PRECISION[b.dtype]
    overflow = np.longdouble(2.0**emax) * (2 - np.longdouble(2.0**-p))  # max finite + half its ULP
    slack = 8 * np.finfo(np.longdouble).eps  # the long double quotient's own rounding
    low, high = b.limits()
    lo_f, hi_f = low - slack, high + slack
    ok = np.zeros(np.shape(yv), dtype=bool)
    with np.errstate(all="ignore"):
        for t in b.quotients(x):
            a, c = t * lo_f, t * hi_f
            ok |= (yv >= np.minimum(a, c) - b.tiny) & (yv <= np.maximum(a, c) + b.tiny)
            ok |= np.isinf(yv) & (np.sign(yv) == np.sign(t)) & (np.abs(c) >= overflow)
    return ok


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
