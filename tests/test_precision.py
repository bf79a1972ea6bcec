"""Dtype-exact keep probability and scale, against grid enumeration and real TensorFlow."""

from fractions import Fraction

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from dropout_stats import (
    apply_scale,
    exact_scale,
    expected_keep_fraction,
    expected_keep_probability,
    expected_scale,
    ulp_distance,
)
from dropout_stats._floats import round_to

rates = st.floats(0.0, 0.999999, exclude_max=True)


def _grid_keep(rate, dtype):
    """Enumerate TF's uniform grid k / M in the dtype and count U >= fl(rate)."""
    levels = {"float16": 2**10, "bfloat16": 2**7, "float32": 2**23}[dtype]
    grid = np.arange(levels, dtype=np.float64) / levels  # exact in every dtype listed
    threshold = float(round_to(rate, dtype))
    return Fraction(int(np.count_nonzero(grid >= threshold)), levels)


@given(rates, st.sampled_from(["float16", "bfloat16", "float32"]))
def test_keep_probability_matches_grid_enumeration(rate, dtype):
    assert expected_keep_fraction(rate, dtype) == _grid_keep(rate, dtype)


@given(rates)
def test_float64_keep_probability_boundary(rate):
    # 2^52 levels are too many to enumerate: check the boundary count from both sides
    levels = 2**52
    keep = expected_keep_fraction(rate, "float64")
    first_kept = levels - keep.numerator * (levels // keep.denominator)
    assert first_kept / levels >= rate
    assert first_kept == 0 or (first_kept - 1) / levels < rate


@pytest.mark.parametrize(
    "dtype,rate,expected",
    [
        ("bfloat16", 0.2, Fraction(102, 128)),
        ("bfloat16", 0.3, Fraction(89, 128)),
        ("float16", 0.2, Fraction(819, 1024)),
        ("float16", 0.3, Fraction(716, 1024)),
        ("float16", 0.1, Fraction(921, 1024)),
        ("float16", 0.9995, Fraction(0)),  # the rate rounds to 1.0: everything dropped
        ("bfloat16", 0.995, Fraction(0)),
        ("float16", 1e-4, Fraction(1023, 1024)),  # drops 1/1024: 9.8x the nominal share
    ],
)
def test_published_low_precision_keep_probabilities(dtype, rate, expected):
    assert expected_keep_fraction(rate, dtype) == expected
    assert expected_keep_probability(rate, dtype) == float(expected)


@settings(max_examples=40)
@given(st.floats(0.0, 0.999, exclude_max=True), st.sampled_from(["float16", "bfloat16", "float32", "float64"]))
def test_rate_rounding_matches_tensorflow(rate, dtype):
    ours = float(round_to(rate, dtype))
    theirs = float(tf.cast(tf.constant(rate, dtype=getattr(tf, dtype)), tf.float64).numpy())
    assert ours == theirs


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("rate", [0.1, 0.3, 0.7])
def test_keep_probability_is_the_share_of_tf_uniform_at_or_above_rate(dtype, rate, seed):
    """Exact, not statistical: the mask equals stateless_uniform >= rate, so the expected keep
    probability must equal the grid share; here every mask position is checked against it."""
    x = tf.ones([4096], dtype=getattr(tf, dtype))
    s = tf.constant([seed % 2**31, 7], tf.int32)
    y = tf.nn.experimental.stateless_dropout(x, rate, seed=s)
    u = tf.random.stateless_uniform([4096], seed=s, dtype=getattr(tf, dtype))
    levels = {"float16": 2**10, "bfloat16": 2**7, "float32": 2**23, "float64": 2**52}[dtype]
    k = np.round(u.numpy().astype(np.float64) * levels)
    assert np.all(k == u.numpy().astype(np.float64) * levels)  # U is on the k / M grid
    first_kept = levels - expected_keep_fraction(rate, dtype) * levels
    np.testing.assert_array_equal(y.numpy() != 0, k >= first_kept)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("rate", [0.2, 0.3, 0.7])
@pytest.mark.parametrize("rate_is_tensor", [False, True])
def test_scale_is_bit_exact_against_tensorflow(dtype, rate, rate_is_tensor, seed):
    rng = np.random.default_rng(seed)
    tdt = getattr(tf, dtype)
    x = tf.cast(tf.constant(rng.uniform(-4, 4, 20_000)), tdt)
    r = tf.constant(rate, dtype=tdt) if rate_is_tensor else rate
    y = tf.nn.experimental.stateless_dropout(x, r, seed=[seed % 2**31, 1]).numpy()
    kept = y != 0
    expected = apply_scale(x.numpy()[kept], expected_scale(rate, dtype, rate_is_tensor=rate_is_tensor))
    got = y[kept].astype(np.float64) if dtype != "bfloat16" else y[kept].astype(np.float32).astype(np.float64)
    np.testing.assert_array_equal(got, expected)


def test_ulp_distance():
    one = np.float32(1)
    assert ulp_distance(np.float32([1, 1]), np.float32([1, np.nextafter(one, np.float32(2))])).tolist() == [0, 1]
    assert ulp_distance(np.float32([-0.0]), np.float32([0.0])).tolist() == [0]
    assert ulp_distance(np.float32([-1e-45]), np.float32([1e-45])).tolist() == [2]
    assert ulp_distance(np.float64([1.0]), np.float64([np.nan])).tolist() == [-1]
    assert ulp_distance(np.float16([2.0]), np.float16([2.002])).tolist() == [1]
    b = tf.constant([1.0, 1.0078125], tf.bfloat16).numpy()
    assert ulp_distance(b[:1], b[1:]).tolist() == [1]


def test_multiply_and_divide_paths_differ_by_a_few_ulp_growing_with_the_rate():
    """Every finite float16 x below 1000 in magnitude (exhaustive, not a sample): the two
    TensorFlow formulas, x * fl(1/(1-rate)) and x / fl(1 - fl(rate)), differ by at most 2 ULP
    up to rate 0.9 and by 8 ULP at 0.95, where rounding the rate to float16 (0.95 -> 0.9502)
    moves 1 - rate by 0.4%: the README's fact, pinned."""
    x = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    x = x[np.isfinite(x) & (np.abs(x) < 1000)]
    worst = {}
    for rate in (0.2, 0.5, 0.7, 0.9, 0.95):
        a = apply_scale(x, expected_scale(rate, "float16"))
        b = apply_scale(x, expected_scale(rate, "float16", rate_is_tensor=True))
        worst[rate] = int(ulp_distance(a.astype(np.float16), b.astype(np.float16)).max())
    assert worst == {0.2: 1, 0.5: 0, 0.7: 1, 0.9: 2, 0.95: 8}, worst


def test_bfloat16_rounding_is_ml_dtypes_on_every_kind_of_float32():
    """float32 -> bfloat16 bits against ml_dtypes' cast (an independent implementation): ties to
    even, overflow to inf, subnormals, signed zeros, and NaNs of every payload (quiet NaN with
    the sign)."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    from dropout_stats._floats import float32_to_bfloat16_bits

    rng = np.random.default_rng(0)
    special = np.array(
        [
            0,
            0x80000000,
            0x00000001,
            0x807FFFFF,
            0x7F7FFFFF,
            0x7F800000,
            0xFF800000,
            0x7F800001,
            0x7FC00000,
            0xFFA00001,
            0x7FBFFFFF,
            0x3F808000,
            0x3F818000,
            0x3F80C000,
        ],
        dtype=np.uint32,
    )
    bits = np.concatenate([special, rng.integers(0, 1 << 32, 1_000_000, dtype=np.uint64).astype(np.uint32)])
    f = bits.view(np.float32)
    with np.errstate(invalid="ignore"):
        want = f.astype(ml_dtypes.bfloat16).view(np.uint16)
    assert np.array_equal(float32_to_bfloat16_bits(f), want)


def _numpy_scaled(x, scale):
    """fl(x * factor) or fl(x / factor) by numpy's (and ml_dtypes') own arithmetic in the dtype:
    IEEE operations, each correctly rounded once."""
    import ml_dtypes

    t = ml_dtypes.bfloat16 if scale.dtype == "bfloat16" else np.dtype(scale.dtype).type
    xs, f = np.asarray(x).astype(t), t(scale.factor)
    if scale.dtype == "bfloat16":  # ml_dtypes computes in float32 and rounds: one rounding, correct
        xs, f = xs.astype(np.float32), np.float32(f)
        return (xs * f if scale.formula == "multiply" else xs / f).astype(t).astype(np.float64)
    return (xs * f if scale.formula == "multiply" else xs / f).astype(np.float64)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("rate_is_tensor", [False, True])
def test_scale_of_values_held_in_another_dtype_is_rounded_to_the_formula_dtype(dtype, rate_is_tensor):
    """x given as float64 (values of the dtype) takes the float64 route; it must round like the
    dtype's own arithmetic, as the native route does for x already in the dtype."""
    import ml_dtypes

    t = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype).type
    x = np.random.default_rng(8).uniform(-4, 4, 4000).astype(t)
    scale = expected_scale(0.3, dtype, rate_is_tensor=rate_is_tensor)
    want = _numpy_scaled(x, scale)
    np.testing.assert_array_equal(apply_scale(x.astype(np.float64), scale), want)
    np.testing.assert_array_equal(apply_scale(x, scale), want)


def _round_fraction_to_float32(q: Fraction) -> float:
    """q rounded to the nearest float32 (ties, which these values avoid, would go to even)."""
    c = np.float32(float(q))
    cands = [np.nextafter(c, np.float32(-np.inf)), c, np.nextafter(c, np.float32(np.inf))]
    return float(min(cands, key=lambda v: abs(Fraction(float(v)) - q)))


@pytest.mark.parametrize("rate", [0.1, 0.3])
def test_exact_scale_is_the_correctly_rounded_quotient(rate):
    """exact_scale: x / (1 - rate) correctly rounded, against Fractions (float32 and float64)."""
    x = np.random.default_rng(9).uniform(-4, 4, 500).astype(np.float32)
    d = 1 - Fraction(rate)
    want = [_round_fraction_to_float32(Fraction(float(v)) / d) for v in x]
    np.testing.assert_array_equal(apply_scale(x, exact_scale(rate, "float32")), want)
    x64 = np.random.default_rng(10).uniform(-4, 4, 200)
    want64 = [float(Fraction(float(v)) / d) for v in x64]
    np.testing.assert_array_equal(apply_scale(x64, exact_scale(rate, "float64")), want64)
    assert exact_scale(rate).factor == 1 - rate


def test_ulp_distance_in_float64_across_zero_and_below_it():
    tiny = np.float64(5e-324)
    assert ulp_distance(np.float64([-tiny]), np.float64([tiny])).tolist() == [2]
    below = np.nextafter(np.float64(-1.0), -np.inf)
    assert ulp_distance(np.float64([-1.0, -1.0]), np.float64([below, 1.0])).tolist() == [1, 2 * 0x3FF0000000000000]


def test_exact_scale_keeps_infinities_and_nan_in_float64():
    x = np.array([np.inf, -np.inf, np.nan])
    got = apply_scale(x, exact_scale(0.3, "float64"))
    assert got[0] == np.inf and got[1] == -np.inf and np.isnan(got[2])


@pytest.mark.parametrize("name", ["float16", "bfloat16", "float32", "float64"])
def test_formats_are_the_dtypes_own(name):
    """The bit layout table against numpy's and ml_dtypes' finfo and the bits of inf and of the
    smallest normal: a wrong width, mask or exponent shows here."""
    import dataclasses

    import ml_dtypes

    from dropout_stats._floats import FORMATS, bits_of

    t = ml_dtypes.bfloat16 if name == "bfloat16" else np.dtype(name).type
    info = ml_dtypes.finfo(t) if name == "bfloat16" else np.finfo(t)
    fmt = FORMATS[name]
    assert (fmt.bits, fmt.mantissa_bits) == (info.bits, info.nmant)
    assert fmt.exponent_mask == int(bits_of(np.array([np.inf], t))[0])
    assert fmt.min_normal_bits == int(bits_of(np.array([info.tiny], t))[0])
    assert fmt.sign_mask == int(bits_of(np.array([-0.0], t))[0]) and fmt.abs_mask == fmt.sign_mask - 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        fmt.bits = 8


@pytest.mark.parametrize("name", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("xla", [False, True])
def test_uniform_levels_are_tensorflows(name, xla):
    """TensorFlow's uniform in each dtype takes values k / levels: every draw times levels is an
    integer, and some is odd (so levels is not too large by a factor 2).  200,000 draws; under
    XLA bfloat16 is a truncated float32 uniform, whose odd multiples of 2^-23 sit below 2^-15
    (about six draws of 200,000; the seed is fixed, so the test is exact, not a chance).  The seed
    is an argument of the compiled function: TF 2.12 folds a draw from a constant seed before XLA
    sees it and returns eager's values (README, Findings)."""
    from dropout_stats._floats import FORMATS

    fmt = FORMATS[name]
    levels = fmt.xla_uniform_levels if xla else fmt.uniform_levels

    def draw(seed):
        return tf.random.stateless_uniform([200_000], seed=seed, dtype=getattr(tf, name))

    u = (tf.function(draw, jit_compile=True) if xla else draw)(tf.constant([3, 4]))
    k = u.numpy().astype(np.float64) * levels
    assert np.all(k == np.floor(k)) and np.any(k % 2 == 1), (name, xla)


def test_a_compiled_draw_from_a_constant_seed_is_eagers_on_tf_2_12_only():
    """TF 2.12 constant-folds a stateless draw whose seed and shape are constants before XLA
    compiles the function, so it returns eager's stream; later releases let XLA draw it (float32
    here: not eager's stream, and from 2.21, where it was measured, the passed-in seed's; on 2.13 to
    2.15 the bfloat16 draw was measured on XLA's grid, README, Findings).  The battery passes its
    seeds in."""

    def draw(seed=None):
        return tf.random.stateless_uniform([4096], seed=[11, 12] if seed is None else seed, dtype=tf.float32)

    eager = draw().numpy()
    folded = tf.function(draw, jit_compile=True)().numpy()
    compiled = tf.function(draw, jit_compile=True)(tf.constant([11, 12])).numpy()
    assert not np.array_equal(eager, compiled)  # XLA's float32 stream is another stream
    version = tuple(int(v) for v in tf.__version__.split(".")[:2])
    if version < (2, 13):
        assert np.array_equal(folded, eager), tf.__version__
    else:  # not folded; equal to the passed-in seed's draw as measured on 2.21
        assert not np.array_equal(folded, eager), tf.__version__
        assert version < (2, 21) or np.array_equal(folded, compiled), tf.__version__


def test_to_numpy_takes_lists_and_arrays_as_they_are():
    from dropout_stats._floats import to_numpy

    assert to_numpy([1.0, 2.0], "x").tolist() == [1.0, 2.0]
    a = np.ones(3, np.float32)
    assert to_numpy(a, "x") is a
