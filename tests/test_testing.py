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
    with pytest.raises(AssertionError, match="Dropout mask is not stateless_uniform >= rate"):
        assert_mask_is_uniform_threshold(x, y, 0.3, [4, 3])


def test_mask_with_noise_shape():
    x = tf.ones([8, 4, 4, 16])
    y = tf.nn.experimental.stateless_dropout(x, 0.3, seed=[1, 1], noise_shape=[8, 1, 1, 16])
    assert_mask_is_uniform_threshold(x, y, 0.3, [1, 1], noise_shape=[8, 1, 1, 16])


def test_scale_failure_lists_the_largest_differences():
    x = tf.constant(np.random.default_rng(0).uniform(0.5, 2, 4000), tf.float32)
    y = scale_one_ulp_off(x, 0.2, tf.constant([1, 1]))
    assert_scaled_by_inverse_keep(x, tf.nn.experimental.stateless_dropout(x, 0.2, seed=[1, 1]), 0.2)
    with pytest.raises(AssertionError) as info:
        assert_scaled_by_inverse_keep(x, y, 0.2)
    msg = str(info.value)
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
    with pytest.raises(AssertionError, match="FAIL scale"):
        assert_dropout(scale_one_ulp_off, rate=0.2, false_fail_rate=1e-9)


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
