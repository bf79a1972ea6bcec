"""mask_counts: informative positions only, units under noise_shape, real TF tensors."""
import numpy as np
import pytest
import tensorflow as tf

from dropout_stats import mask_counts

DTYPES = ["float16", "bfloat16", "float32", "float64"]


def _np_dropout(x, keep_mask, scale):
    return np.where(keep_mask, x * scale, 0).astype(x.dtype)


def test_counts_every_element_of_a_plain_mask(seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.5, 2, (64, 33)).astype(np.float32)
    keep = rng.random(x.shape) >= 0.2
    c = mask_counts(x, _np_dropout(x, keep, 1.25))
    assert (c.kept, c.dropped, c.excluded, c.units) == (keep.sum(), (~keep).sum(), 0, x.size)
    assert c.keep_fraction == keep.mean()


def test_zeros_before_dropout_are_excluded_not_dropped(seed):
    """The founding trap: after a ReLU, zeros in x say nothing about the mask."""
    rng = np.random.default_rng(seed)
    x = np.maximum(rng.normal(size=(100, 32)), 0).astype(np.float32)
    keep = rng.random(x.shape) >= 0.2
    c = mask_counts(x, _np_dropout(x, keep, 1.25))
    informative = x != 0
    assert c.excluded == c.excluded_zero == (~informative).sum()
    assert c.kept == (keep & informative).sum()
    assert c.dropped == (~keep & informative).sum()


def test_nonfinite_and_subnormal_inputs_are_excluded():
    x = np.ones(8, np.float32)
    x[0], x[1], x[2], x[3] = np.nan, np.inf, -np.inf, 1e-39
    y = np.array([np.nan, 0, -np.inf, 0, 1.25, 0, 1.25, -0.0], np.float32)
    c = mask_counts(x, y)
    assert (c.excluded_nonfinite, c.excluded_subnormal, c.excluded) == (3, 1, 4)
    assert (c.kept, c.dropped) == (2, 2)  # -0.0 counts as dropped


def test_nonzero_output_from_zero_input_is_reported():
    x = np.array([0, 1, 1], np.float32)
    y = np.array([3, 0, 1], np.float32)
    assert mask_counts(x, y).nonzero_from_zero == 1


@pytest.mark.parametrize("dtype", DTYPES)
def test_tensorflow_tensors_of_every_dtype(dtype, seed):
    x = tf.ones([50, 40], dtype=getattr(tf, dtype))
    y = tf.nn.experimental.stateless_dropout(x, 0.3, seed=[seed % 2**31, 0])
    c = mask_counts(x, y)
    assert c.kept == int(tf.math.count_nonzero(y)) and c.n == 2000 and c.excluded == 0


def test_subnormals_flushed_by_tensorflow_are_not_counted_as_dropped():
    """TF on CPU flushes float32 subnormals to 0 even where kept (TF 2.15, 2.21)."""
    x = tf.fill([10_000], tf.constant(1e-39, tf.float32))
    y = tf.nn.experimental.stateless_dropout(x, 0.2, seed=[1, 2])
    c = mask_counts(x, y)
    assert c.n == 0 and c.excluded == c.excluded_subnormal == 10_000


def test_noise_shape_counts_units():
    rng = np.random.default_rng(3)
    x = np.ones((8, 16, 16, 32), np.float32)
    unit_keep = rng.random((8, 1, 1, 32)) >= 0.3
    y = np.where(unit_keep, x, 0).astype(np.float32)
    c = mask_counts(x, y, noise_shape=[8, 1, 1, 32])
    assert (c.units, c.kept, c.dropped, c.inconsistent) == (256, unit_keep.sum(), (~unit_keep).sum(), 0)
    assert mask_counts(x, y, noise_shape=[None, 1, 1, None]) == c


def test_noise_shape_reports_disagreeing_units_as_inconsistent():
    x = np.ones((4, 6), np.float32)
    y = np.ones((4, 6), np.float32)
    y[0, 0] = 0          # unit 0 (of noise shape [4, 1]): kept here, dropped there
    y[1, :] = 0          # unit 1: dropped everywhere
    c = mask_counts(x, y, noise_shape=(4, 1))
    assert (c.inconsistent, c.dropped, c.kept, c.units) == (1, 1, 2, 4)


def test_noise_shape_with_tensorflow(seed):
    x = tf.ones([8, 16, 16, 32])
    y = tf.nn.experimental.stateless_dropout(x, 0.4, seed=[seed % 2**31, 3], noise_shape=[8, 1, 1, 32])
    u = tf.random.stateless_uniform([8, 1, 1, 32], seed=[seed % 2**31, 3])
    c = mask_counts(x, y, noise_shape=[8, 1, 1, 32])
    assert c.units == 256 and c.inconsistent == 0
    assert c.kept == int(np.count_nonzero(u.numpy() >= np.float32(0.4)))


def test_noncontiguous_and_integral_views():
    x = np.ones((10, 10), np.float64)[:, ::2]
    y = x.copy()
    y[0, 0] = 0
    assert mask_counts(x, y).dropped == 1


def test_str_is_readable():
    c = mask_counts(np.ones(4, np.float32), np.array([2, 0, 2, 2], np.float32))
    assert "kept 3 of 4" in str(c) and c.rate_test(0.75).pvalue == 1.0
