"""The scale contract (precision.scale_bound): every way a correct dropout rounds x / (1 - rate)
is inside the bound (one ULP off a framework's formula too), values five ULP away are outside,
and the implementation agrees with the bound's definition in exact rational arithmetic.  Exact: no
false-fail rate."""

from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

from dropout_stats.precision import (
    apply_scale,
    exact_scale,
    keep_models,
    round_correctly,
    scale_bound,
    scale_error,
    uniform_keep_fraction,
    within_scale_bound,
)

RATES = [0.1, 0.2, 0.3, 0.5, 0.6, 0.65, 0.8, 0.9, 0.97]
NP = {"float16": np.float16, "float32": np.float32, "float64": np.float64, "bfloat16": ml_dtypes.bfloat16}


def _x(dtype, n=20_000, seed=0):
    """Normal values of both signs, spread over several binades (no zeros, no subnormals)."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(n) * np.exp2(rng.integers(-6, 7, n))
    v = v[np.abs(v) > 1e-3]
    return v.astype(NP[dtype])


def _cast(v, dtype):
    return np.asarray(v).astype(NP[dtype])


def _correct_ways(x, r, dtype):
    """Kept values as people compute them: in the dtype, wider and cast once, through float32."""
    t = NP[dtype]
    x64 = x.astype(np.float64)
    ways = {
        "x / fl(1 - r)": x / t(1 - r),
        "x * fl(1 / (1 - r))": x * t(1 / (1 - r)),
        "x / (1 - fl(r)) in dtype": x / (t(1) - t(r)),
        "x * fl(1 / fl(1 - fl(r)))": x * (t(1) / (t(1) - t(r))),
        "x * mask / keep (keep in dtype)": (x * t(1)) / t(1 - r),
        "double, cast once": _cast(x64 / (1 - r), dtype),
        "double x * (1/(1-r)), cast once": _cast(x64 * (1 / (1 - r)), dtype),
    }
    if dtype in ("float16", "bfloat16"):  # torch's and Eigen's opmath: float32 inside, one cast
        x32 = x.astype(np.float32)
        ways["float32 opmath multiply"] = _cast(x32 * np.float32(1 / (1 - r)), dtype)
        ways["float32 opmath divide"] = _cast(x32 / np.float32(1 - r), dtype)
    if dtype == "bfloat16":  # rounded once from double (no double rounding through float32)
        ways["double, rounded once"] = round_correctly(x64 / (1 - r), "bfloat16").astype(np.float32).astype(t)
    return ways


@pytest.mark.parametrize("dtype", list(NP))
@pytest.mark.parametrize("rate", RATES)
def test_every_correct_way_is_inside_the_bound(dtype, rate):
    x = _x(dtype)
    with np.errstate(over="ignore"):
        for how, y in _correct_ways(x, rate, dtype).items():
            ok = within_scale_bound(x, y, rate, dtype)
            assert ok.all(), (how, int((~ok).sum()), float(scale_error(x[~ok], y[~ok], rate, dtype).max()))
            assert scale_error(x, y, rate, dtype).max() <= scale_bound(rate, dtype).units * (1 + 1e-12), how


def _steps(y, k, dtype):
    """y moved k representable steps away from zero (k < 0: toward zero)."""
    bits = {"float16": np.int16, "bfloat16": np.int16, "float32": np.int32, "float64": np.int64}[dtype]
    return (y.view(bits) + bits(k)).view(y.dtype)


@pytest.mark.parametrize("dtype", list(NP))
@pytest.mark.parametrize("rate", RATES)
def test_one_ulp_is_inside_and_four_are_outside(dtype, rate):
    """The bound is about 4 u: 1 ULP off the correctly rounded value (at most 3 u from the exact
    one) is always in; 5 ULP off (past 4.5 u) never is, where the rate is exact in the dtype (else
    x / (1 - fl(rate)), up to a u away, is the other quotient a correct value may round)."""
    x = _x(dtype, n=5_000, seed=1)
    cr = apply_scale(x, exact_scale(rate, dtype))  # correctly rounded (exact fractions in float64)
    y = cr.astype(np.float32).astype(NP[dtype]) if dtype == "bfloat16" else cr.astype(NP[dtype])
    for k in (1, -1):
        assert within_scale_bound(x, _steps(y, k, dtype), rate, dtype).all(), k
    if float(round_correctly(rate, dtype)) != rate:
        return  # the other quotient may be several u away: test_the_bound_is_its_definition covers it
    for k in (5, -5):
        assert not within_scale_bound(x, _steps(y, k, dtype), rate, dtype).any(), k


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.6, 0.65])
def test_the_bound_is_its_definition_in_exact_arithmetic(rate):
    """float32: for candidates within 6 ULP of x / (1 - rate), the verdict equals low <= y / t <= high
    with t = x / (1 - r), r the rate or fl32(rate), all in exact fractions."""
    u = Fraction(1, 2**24)
    low, high = ((1 - u) / (1 + u)) ** 2, ((1 + u) / (1 - u)) ** 2
    x = _x("float32", n=300, seed=2)
    base = (x.astype(np.float64) / (1 - rate)).astype(np.float32)
    rates = [Fraction(rate), Fraction(float(np.float32(rate)))]
    seen = {True: 0, False: 0}
    for k in range(-6, 7):
        y = _steps(base, k, "float32")
        got = within_scale_bound(x, y, rate, "float32")
        for xi, yi, g in zip(x, y, got, strict=True):
            ratios = [Fraction(float(yi)) / (Fraction(float(xi)) / (1 - r)) for r in rates]
            near_edge = any(abs(q - e) < Fraction(1, 10**15) for q in ratios for e in (low, high))
            if near_edge:  # inside the long double slack: either verdict is the definition
                continue
            want = any(low <= q <= high for q in ratios)
            assert g == want, (float(xi), float(yi), [float(q) for q in ratios])
            seen[want] += 1
    assert seen[True] > 500 and seen[False] > 500, seen  # both sides were exercised


def test_the_bound_constants_follow_from_u():
    for dtype, p in (("float16", 11), ("bfloat16", 8), ("float32", 24), ("float64", 53)):
        b = scale_bound(0.3, dtype)
        u = Fraction(1, 2**p)
        assert b.unit_roundoff == float(u)
        assert b.low == float(((1 - u) / (1 + u)) ** 2) and b.high == float(((1 + u) / (1 - u)) ** 2)
        low, high = b.limits()  # long double: float64's bound is not a double
        assert abs(Fraction(float(high - 1)) - (((1 + u) / (1 - u)) ** 2 - 1)) < u * Fraction(1, 10**4)
        assert abs(Fraction(float(1 - low)) - (1 - ((1 - u) / (1 + u)) ** 2)) < u * Fraction(1, 10**4)
        assert 4 <= b.units < 4 + 9 * float(u), b.units  # ((1 + u) / (1 - u))^2 = 1 + 4u + 8u^2 + ...


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_scale_defects_stay_outside(dtype):
    """What the battery must keep catching: no scale, a scale 1% off (float32, float16), a scale
    computed in bfloat16 for float32 values, the scale of another rate."""
    x = _x(dtype, seed=3)
    t = NP[dtype]
    for rate in (0.3, 0.65):
        assert not within_scale_bound(x, x, rate, dtype).any()  # unscaled
        assert not within_scale_bound(x, _cast(x.astype(np.float64) / (1 - rate - 0.01), dtype), rate, dtype).all()
        if dtype != "bfloat16":  # 1% is 2.6 u of bfloat16: inside its bound, said in the docs
            assert not within_scale_bound(x, x * t(1.01 / (1 - rate)), rate, dtype).all()
    if dtype == "float32":
        bf_scale = float(np.float32(1 / (1 - 0.3)).astype(ml_dtypes.bfloat16))
        assert not within_scale_bound(x, x * np.float32(bf_scale), 0.3, "float32").any()


def test_round_correctly_rounds_bfloat16_once():
    """A double just above a bfloat16 tie rounds up; through float32 it would first land on the tie
    and then round to even (down): the double rounding the exact value must not make."""
    one_ulp = 2.0**-7
    v = 1 + one_ulp / 2 + 2.0**-30  # above the tie between 1 and 1 + 2^-7, below float32's resolution of it
    through_f32 = float(np.float32(v).astype(ml_dtypes.bfloat16))
    assert through_f32 == 1.0  # the double rounding
    assert float(round_correctly(v, "bfloat16")) == 1 + one_ulp
    assert np.isinf(round_correctly(3.4e38 * 1.01, "bfloat16")) and round_correctly(-0.0, "bfloat16") == 0


def test_keep_models_are_the_documented_mechanisms():
    models = dict(keep_models("bfloat16"))
    assert models["1 - rate (an exact Bernoulli draw)"](0.2) == 1 - Fraction(0.2)
    assert models["U >= fl(rate), U uniform in bfloat16 on 128 levels"](0.2) == Fraction(51, 64)  # TensorFlow's
    assert models["U < fl(1 - rate), U uniform in float32 on 8388608 levels"](0.2) == uniform_keep_fraction(
        0.2, "float32", 2**23, "U < fl(1 - rate)"
    )  # JAX's bernoulli
    assert len(keep_models("float32")) == 6  # no float32 grid twice, no rounded uniform
    assert len(keep_models("bfloat16")) == 11  # 2 exact, 8 grids, torch.rand's rounded uniform


@pytest.mark.parametrize("dtype", list(NP))
@pytest.mark.parametrize("rate", RATES)
def test_one_ulp_off_a_framework_formula_is_inside(dtype, rate):
    """The contract's promise: kept values one ULP from TensorFlow's multiply or divide formula
    (two roundings, then one ULP: at most 4 u) are correct dropout; exact_scale=True tells them apart."""
    from dropout_stats.precision import expected_scale

    x = _x(dtype, n=5_000, seed=4)
    for f in (expected_scale(rate, dtype), expected_scale(rate, dtype, rate_is_tensor=True)):
        want = apply_scale(x, f)
        y = want.astype(np.float32).astype(NP[dtype]) if dtype == "bfloat16" else want.astype(NP[dtype])
        for k in (1, -1):
            assert within_scale_bound(x, _steps(y, k, dtype), rate, dtype).all(), (f.formula, k)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_a_rounded_float32_uniform_keep_is_counted_exactly(dtype):
    """rounded_uniform_keep_fraction against all 2^24 float32 grid values rounded to the dtype."""
    from dropout_stats._floats import bfloat16_bits_to_float32, float32_to_bfloat16_bits
    from dropout_stats.precision import round_to, rounded_uniform_keep_fraction

    u = np.arange(2**24, dtype=np.float64) / 2**24
    if dtype == "bfloat16":
        v = bfloat16_bits_to_float32(float32_to_bfloat16_bits(u.astype(np.float32))).astype(np.float64)
    else:
        v = u.astype(np.float16).astype(np.float64)
    for rate in (0.1, 0.2, 0.3, 0.5, 0.6, 0.9, 2.0**-20):
        t = float(round_to(rate, dtype))
        want = Fraction(int(np.count_nonzero((v >= t) & (v < 1))), 2**24)
        assert rounded_uniform_keep_fraction(rate, dtype) == want, rate
