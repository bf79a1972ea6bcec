"""dropout_stats.testing assertions and dropout_stats.strategies, used directly."""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given

from dropout_stats import strategies
from dropout_stats.calibration.corpus import scale_one_ulp_off
from dropout_stats.testing import (
    assert_dropout,
    assert_keep_fraction,
    assert_mask_is_uniform_threshold,
    assert_scaled_by_inverse_keep,
)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_mask_matches_the_uniform_threshold(dtype):
    x = tf.ones([32, 64], dtype=getattr(tf, dtype))
    y = tf.nn.experimental.stateless_dropout(x, 0.3, seed=[4, 2])
    assert_mask_is_uniform_threshold(x, y, 0.3, [4, 2])
    with pytest.raises(AssertionError, match="Dropout mask is not TensorFlow's stateless_uniform >= rate"):
        assert_mask_is_uniform_threshold(x, y, 0.3, [4, 3])


def test_mask_with_noise_shape():
    x = tf.ones([8, 4, 4, 16])
    y = tf.nn.experimental.stateless_dropout(x, 0.3, seed=[1, 1], noise_shape=[8, 1, 1, 16])
    assert_mask_is_uniform_threshold(x, y, 0.3, [1, 1], noise_shape=[8, 1, 1, 16])


def test_scale_failure_lists_the_largest_differences():
    """One ULP off TensorFlow's formula is inside the rounding bound (the contract), and fails
    only where bit-identity is asked for (exact_scale=True)."""
    x = tf.constant(np.random.default_rng(0).uniform(0.5, 2, 4000), tf.float32)
    y = scale_one_ulp_off(x, 0.2, tf.constant([1, 1]))
    assert_scaled_by_inverse_keep(x, tf.nn.experimental.stateless_dropout(x, 0.2, seed=[1, 1]), 0.2, exact_scale=True)
    assert_scaled_by_inverse_keep(x, y, 0.2)
    with pytest.raises(AssertionError) as info:
        assert_scaled_by_inverse_keep(x, y, 0.2, exact_scale=True)
    msg = str(info.value)
    assert msg.startswith("Kept values are not x / (1 - rate) by any reference formula: ")
    assert "max ULP distance: 1" in msg and "largest differences (x, got, expected, ULP)" in msg


@pytest.mark.statistical(false_fail_rate=1e-9)
def test_keep_fraction_passes_tensorflow(seed):
    x = tf.ones([300, 300], tf.bfloat16)
    y = tf.nn.experimental.stateless_dropout(x, 0.2, seed=[seed % 2**31, 0])
    assert_keep_fraction(x, y, 0.2, false_fail_rate=1e-9)  # against 102/128, bfloat16's real keep


N_XLA = 4_000_000


@pytest.mark.statistical(false_fail_rate=2e-12)
def test_keep_fraction_under_xla_is_the_truncated_float32_grid(seed):
    """Under XLA TensorFlow's bfloat16 uniform is a float32 uniform truncated (2^23 levels), so
    rate 0.2 keeps 0.7998046875, not eager's 102/128: assert_keep_fraction(xla=True) expects it.
    4,000,000 draws: XLA's real dropout passes (false fail 1e-12), and is rejected at level 1e-12
    against eager's 102/128 except with the probability computed below (under 1e-12; 2,000,000
    draws would miss with probability 7e-4)."""
    from dropout_stats import expected_keep_probability, rate_test, rejection_region_for_rate_test

    x = tf.ones([N_XLA], tf.bfloat16)
    drop = tf.function(lambda x, s: tf.nn.experimental.stateless_dropout(x, 0.2, seed=s), jit_compile=True)
    y = drop(x, tf.constant([seed % 2**31, 1]))  # a constant seed would be folded before XLA on TF 2.12
    assert_keep_fraction(x, y, 0.2, xla=True, false_fail_rate=1e-12)
    xla, eager = (expected_keep_probability(0.2, "bfloat16", xla=v) for v in (True, False))
    miss = 1 - rejection_region_for_rate_test(N_XLA, eager, false_fail_rate=1e-12).power(xla)
    assert miss < 1e-12, miss
    kept = int(np.count_nonzero(y.numpy().astype(np.float32)))
    assert rate_test(kept, N_XLA, eager).pvalue <= 1e-12, (kept, f"seed {seed}")


def test_assert_dropout_raises_with_the_table():
    """Its keywords go to verify(): exact_scale=True asks for TensorFlow's formula bit for bit."""
    with pytest.raises(AssertionError, match="FAIL scale") as info:
        assert_dropout(scale_one_ulp_off, rate=0.2, false_fail_rate=1e-9, exact_scale=True)
    assert str(info.value).startswith("Dropout implementation failed verification: scale")
    assert "exact_scale=True" in str(info.value)
    with pytest.raises(ValueError, match=r"mechanism \('nested'\) must be one of"):
        assert_dropout(scale_one_ulp_off, rate=0.2, mechanism="nested")


@given(strategies.dropout_configs())
def test_generated_configurations_are_valid(config):
    assert 0 <= config["rate"] < 1
    assert config["dtype"] in ("float16", "bfloat16", "float32", "float64")
    if config["noise_shape"] is not None:
        assert all(n in (1, s) for n, s in zip(config["noise_shape"], config["shape"], strict=True))


@given(strategies.shapes_and_noise_shapes(min_rank=2, max_side=32, min_units=512, with_noise=True))
def test_min_units_is_honoured_where_sides_allow(shape_noise):
    shape, noise = shape_noise
    assert int(np.prod(noise)) >= 512 or min(noise) == 32


@pytest.mark.parametrize(
    "call,fragment",
    [
        (lambda: strategies.rates(min_value=0.5, max_value=0.2), "min_value (0.5) and max_value (0.2)"),
        (lambda: strategies.dtypes(include=("int8",)), "include (['int8']) must be"),
        (lambda: strategies.shapes_and_noise_shapes(min_rank=0), "min_rank (0)"),
    ],
)
def test_strategy_arguments_are_validated(call, fragment):
    with pytest.raises(ValueError) as info:
        call()
    assert fragment in str(info.value)


@given(strategies.rates(edges=True))
def test_rates_stay_in_range(rate):
    assert 0 <= rate < 1


def test_mask_assertion_ignores_zeros_before_dropout():
    """After a ReLU, x == 0 says nothing about the mask: those positions must not count."""
    x = tf.nn.relu(tf.constant(np.random.default_rng(1).normal(size=(64, 64)), tf.float32))
    y = tf.nn.experimental.stateless_dropout(x, 0.3, seed=[5, 6])
    assert_mask_is_uniform_threshold(x, y, 0.3, [5, 6])
    assert_scaled_by_inverse_keep(x, y, 0.3)


# -- the contract across sources and dtypes (issue 28) -------------------------------------------
# A correct output passes whatever wrote it: TensorFlow's dropout (its exact keep), numpy code
# (any documented correct keep), a numpy copy of TensorFlow's output, x and y from different
# libraries.  Broken ones fail: the keep 1% off at a sample size computed to catch it, and the
# scale 1% off, computed in bfloat16 for float32 values, or missing.

from dropout_stats.design import min_num_samples_for_rate_test, power_of_rate_test  # noqa: E402
from dropout_stats.precision import expected_keep_probability, keep_models  # noqa: E402

DTYPES = ["float16", "bfloat16", "float32", "float64"]
A = 1e-10  # each assertion's false-fail rate in the tests below
MISS = 1e-10  # the chance a broken keep passes, by the sample sizes computed below


def _x(shape, dtype, seed):
    """x of both signs, magnitudes in [0.5, 2]: every position informative."""
    rng = np.random.default_rng([seed, 1])
    x = rng.uniform(0.5, 2, shape) * rng.choice([-1.0, 1.0], shape)
    return tf.cast(tf.constant(x, tf.float32), getattr(tf, dtype))


def _any_keeps(rate, dtype):
    """The keeps assert_keep_fraction tests for a numpy array: the documented correct ones."""
    return sorted({float(keep(rate)) for _, keep in keep_models(dtype)})


def draws_to_catch(keeps, actual, alpha=A, miss=MISS):
    """Draws at which an assertion testing each of ``keeps`` at level alpha passes a keep of
    ``actual`` with probability <= miss: each keep's exact test given miss / m (union bound),
    the exact miss summed at that n (power is a sawtooth in n: step on until the sum holds)."""
    m = len(keeps)
    n = max(
        min_num_samples_for_rate_test(k, abs(actual - k), false_fail_rate=alpha, false_pass_rate=miss / m)
        for k in keeps
    )
    while sum(1 - power_of_rate_test(n, k, abs(actual - k), false_fail_rate=alpha) for k in keeps) > miss:
        n += 1
    return n


def _sources(x, rate, seed):
    """name -> (x, y) of correct dropouts of x (a TF tensor)."""
    s = [seed % 2**31, 0]
    tf_y = tf.nn.experimental.stateless_dropout(x, rate, seed=s)
    xn = x.numpy()
    mask = np.random.default_rng([seed, 2]).random(xn.shape) >= rate  # keep 1 - rate
    keep = tf.random.stateless_uniform(x.shape, seed=s, dtype=x.dtype) >= rate  # TF's own keep
    return {
        "tensorflow": (x, tf_y),
        # astype: numpy 1.x (tox tf212) would promote a 16-bit x divided by a Python float
        "numpy x * mask / (1 - rate)": (xn, (xn * mask / (1 - rate)).astype(xn.dtype)),
        "tensorflow x * mask / (1 - rate)": (x, x * tf.cast(keep, x.dtype) / (1 - rate)),
        "tensorflow read back as numpy": (xn, tf_y.numpy()),
        "x numpy, y tensorflow": (xn, tf_y),
    }


SOURCES = [
    "tensorflow",
    "numpy x * mask / (1 - rate)",
    "tensorflow x * mask / (1 - rate)",
    "tensorflow read back as numpy",
    "x numpy, y tensorflow",
]


@pytest.mark.statistical(false_fail_rate=A)
@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_correct_dropout_passes_every_assertion(dtype, source, seed):
    x, y = _sources(_x([300, 300], dtype, seed), 0.2, seed)[source]
    assert_keep_fraction(x, y, 0.2, false_fail_rate=A, seed=seed)
    assert_scaled_by_inverse_keep(x, y, 0.2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tensorflow_dropout_is_bit_identical_to_its_formula(dtype):
    x = _x([64, 64], dtype, 0)
    assert_scaled_by_inverse_keep(x, tf.nn.experimental.stateless_dropout(x, 0.3, seed=[1, 2]), 0.3, exact_scale=True)
    assert_scaled_by_inverse_keep(x.numpy(), tf.nn.experimental.stateless_dropout(x, 0.3, seed=[1, 2]).numpy(), 0.3)


@pytest.mark.statistical(false_fail_rate=MISS)
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_tensorflow_keep_one_percent_off_fails(dtype, seed):
    """stateless_dropout at rate 0.208 (keep 0.792) asserted at rate 0.2 (TF's keep 0.8 or
    bfloat16's 102/128): the draws are computed so that it passes with probability <= MISS."""
    want = expected_keep_probability(0.2, dtype)
    actual = expected_keep_probability(0.208, dtype)
    n = draws_to_catch([want], actual)
    x = _x([n], dtype, seed)
    y = tf.nn.experimental.stateless_dropout(x, 0.208, seed=[seed % 2**31, 3])
    with pytest.raises(AssertionError) as info:
        assert_keep_fraction(x, y, 0.2, false_fail_rate=A, seed=seed)
    first = str(info.value).splitlines()[0]
    assert first.startswith("Dropout keep fraction is not consistent with the rate (false-fail rate 1e-10"), first
    assert f"expected TensorFlow's keep {want:.10g}" in first, first
    assert "detected from y, a tensorflow" in str(info.value)


@pytest.mark.statistical(false_fail_rate=MISS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_numpy_keep_one_percent_off_fails_every_correct_keep(dtype, seed):
    """numpy code keeping 0.792 asserted at rate 0.2: numpy arrays are tested against every
    documented correct keep (bfloat16: 102/128 = 0.796875 the nearest), each at MISS / m."""
    keeps = _any_keeps(0.2, dtype)
    n = draws_to_catch(keeps, 0.792)
    x = _x([n], dtype, seed).numpy()
    y = (x * (np.random.default_rng([seed, 4]).random(n) >= 0.208) / 0.8).astype(x.dtype)
    with pytest.raises(AssertionError) as info:
        assert_keep_fraction(x, y, 0.2, false_fail_rate=A)
    msg = str(info.value)
    assert msg.splitlines()[0].endswith(
        f"expected one of {len(keeps)} documented correct keeps in [{keeps[0]:.6g}, {keeps[-1]:.6g}]"
    ), msg
    assert "1 - rate (an exact Bernoulli draw)" in msg and "numpy code may imitate any framework" in msg


def _broken_scales(x, rate, seed):
    """name -> y: the mask right, the kept values wrong."""
    xn = x.numpy()
    mask = np.random.default_rng([seed, 5]).random(xn.shape) >= rate
    bf16_scale = tf.cast(tf.constant(1 / (1 - rate)), tf.bfloat16)  # 1/0.7 in bfloat16: 1.4296875
    return {
        "scale 1% off": (xn * mask * np.float32(1.01 / (1 - rate))).astype(xn.dtype),
        "scale in bfloat16 for float32 values": x * tf.cast(mask, x.dtype) * tf.cast(bf16_scale, x.dtype),
        "x unscaled": xn * mask,
    }


@pytest.mark.parametrize("broken", ["scale 1% off", "scale in bfloat16 for float32 values", "x unscaled"])
def test_a_wrong_scale_fails_with_the_worst_values(broken):
    x = _x([100, 100], "float32", 0)
    y = _broken_scales(x, 0.3, 0)[broken]
    with pytest.raises(AssertionError) as info:
        assert_scaled_by_inverse_keep(x, y, 0.3)
    lines = str(info.value).splitlines()
    assert lines[0].startswith("Kept values are not x / (1 - rate) within the rounding bound: "), lines[0]
    assert "u = 2^-24 (float32)" in lines[1] and " worst values (x, got, x / (1 - rate), error in u):" in lines
    assert float(lines[-2].split(", ")[-1]) > 1000  # the worst error, in u
    with pytest.raises(AssertionError, match="by any reference formula"):
        assert_scaled_by_inverse_keep(x, y, 0.3, exact_scale=True)


@pytest.mark.parametrize(
    "call, error, fragment",
    [
        (lambda x: assert_keep_fraction(x, x, 0.2, framework="tf"), ValueError, "framework ('tf') must be one of"),
        (lambda x: assert_keep_fraction(x, x, 0.2, framework="jax", xla=True), ValueError, "xla (True) selects"),
        (lambda x: assert_keep_fraction(x, x, 0.2, xla="yes"), TypeError, "xla ('yes') must be True or False"),
        (lambda x: assert_keep_fraction(x, x, 0.2, dtype="int8"), ValueError, "dtype ('int8') must be one of"),
        (lambda x: assert_scaled_by_inverse_keep(x, x, 0.2, exact_scale=1), TypeError, "exact_scale (1) must be"),
        (lambda x: assert_scaled_by_inverse_keep(x, x, 0.2, rate_is_tensor=True), ValueError, "rate_is_tensor (True)"),
    ],
)
def test_bad_arguments_are_named(call, error, fragment):
    with pytest.raises(error) as info:
        call(np.ones(8, np.float32))
    assert fragment in str(info.value)


@pytest.mark.statistical(false_fail_rate=A)
def test_framework_picks_the_keep(seed):
    """A numpy copy of TensorFlow's bfloat16 output: any documented keep (the default for numpy),
    TensorFlow's 102/128 (framework="tensorflow"); the passing assertion names the keep."""
    from dropout_stats.testing import drain_records

    x = _x([300, 300], "bfloat16", seed)
    y = tf.nn.experimental.stateless_dropout(x, 0.2, seed=[seed % 2**31, 6]).numpy()
    drain_records()
    assert_keep_fraction(x.numpy(), y, 0.2, framework="tensorflow", false_fail_rate=A / 2)
    assert_keep_fraction(x.numpy(), y, 0.2, false_fail_rate=A / 2)
    tf_record, any_record = drain_records()
    assert tf_record["what"] == "keep fraction, rate 0.2, bfloat16, TensorFlow's keep", tf_record
    m = len(_any_keeps(0.2, "bfloat16"))
    assert any_record["what"].startswith(f"keep fraction, rate 0.2, bfloat16, {m} correct keeps: "), any_record


def test_the_mask_assertion_names_its_stream():
    x = _x([16, 16], "float32", 0)
    y = tf.nn.experimental.stateless_dropout(x, 0.5, seed=[1, 2])
    with pytest.raises(AssertionError) as info:
        assert_mask_is_uniform_threshold(x, y, 0.5, [1, 3])
    first = str(info.value).splitlines()[0]
    assert (
        first.startswith("Dropout mask is not TensorFlow's stateless_uniform >= rate: ") and "positions differ" in first
    )
    assert "assert_keep_fraction tests any" in str(info.value)


def test_importing_the_assertions_imports_no_framework():
    import subprocess
    import sys

    code = "import sys, dropout_stats.testing; print([m for m in ('tensorflow', 'torch', 'jax') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
