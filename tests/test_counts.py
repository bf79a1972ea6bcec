"""mask_counts: informative positions only, units under noise_shape, real TF tensors."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from dropout_stats import MaskCounts, mask_counts

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
    y[0, 0] = 0  # unit 0 (of noise shape [4, 1]): kept here, dropped there
    y[1, :] = 0  # unit 1: dropped everywhere
    c = mask_counts(x, y, noise_shape=(4, 1))
    assert (c.inconsistent, c.dropped, c.kept, c.units, c.excluded) == (1, 1, 2, 4, 0)


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


def test_nothing_excluded_leaves_every_breakdown_at_zero(seed):
    """A mask without excluded positions is exactly kept + dropped: every other field is 0."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.5, 2, 1000).astype(np.float32)
    keep = rng.random(x.shape) >= 0.3
    c = mask_counts(x, _np_dropout(x, keep, 1 / 0.7))
    assert c == MaskCounts(
        kept=int(keep.sum()),
        dropped=int((~keep).sum()),
        excluded=0,
        units=1000,
        inconsistent=0,
        excluded_zero=0,
        excluded_subnormal=0,
        excluded_nonfinite=0,
        nonzero_from_zero=0,
    )
    assert c.drop_fraction == (~keep).mean() and c.keep_fraction + c.drop_fraction == 1


def test_counts_are_frozen():
    c = mask_counts(np.ones(2, np.float32), np.ones(2, np.float32))
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.kept = 0


def test_fractions_are_nan_when_nothing_is_informative():
    c = mask_counts(np.zeros(3, np.float32), np.zeros(3, np.float32))
    assert c.n == 0 and np.isnan(c.keep_fraction) and np.isnan(c.drop_fraction)


def test_proportion_ci_and_rate_test_are_scipys_on_the_counts():
    """The counts' own interval and test against scipy on (kept, kept + dropped) directly."""
    x = np.ones(40, np.float32)
    y = np.where(np.arange(40) % 4 == 0, 0, 4 / 3).astype(np.float32)  # 30 kept of 40
    c = mask_counts(x, y)
    ref = stats.binomtest(30, 40, 0.6)
    ci = ref.proportion_ci(confidence_level=0.95)
    assert (c.proportion_ci().low, c.proportion_ci().high) == pytest.approx((ci.low, ci.high), rel=1e-12, abs=0)
    assert c.rate_test(0.6).pvalue == pytest.approx(ref.pvalue, rel=1e-12, abs=0)
    greater = stats.binomtest(30, 40, 0.6, alternative="greater").pvalue
    assert c.rate_test(0.6, alternative="greater").pvalue == pytest.approx(greater, rel=1e-12, abs=0)


def test_a_single_element_is_counted():
    assert mask_counts(np.ones(1, np.float32), np.zeros(1, np.float32)).dropped == 1


def test_the_smallest_nonzero_output_from_a_zero_input_is_reported():
    """y's lowest bit set (the smallest subnormal) is still not 0, so not dropout's doing."""
    x = np.zeros(3, np.float32)
    y = np.array([0, 0, 1], np.uint32)
    assert mask_counts(x, y.view(np.float32)).nonzero_from_zero == 1


def test_counts_across_block_boundaries():
    """Inputs longer than one block (2**16 elements), ending mid-block, count every element."""
    n = 3 * 2**16 + 5
    keep = np.zeros(n, bool)
    keep[::3] = True
    x = np.ones(n, np.float32)
    x[7::11] = 0  # excluded in every block
    c = mask_counts(x, np.where(keep, x, 0).astype(np.float32))
    informative = x != 0
    assert (c.kept, c.dropped, c.excluded_zero) == (
        (keep & informative).sum(),
        (~keep & informative).sum(),
        (~informative).sum(),
    )


@pytest.mark.parametrize("noise_shape", [[4, 2.5], [4, 3], [4, 6, 1], ["a", 1]])
def test_noise_shape_that_does_not_broadcast_is_refused(noise_shape):
    with pytest.raises((ValueError, TypeError), match=r"noise_shape \("):
        mask_counts(np.ones((4, 6), np.float32), np.ones((4, 6), np.float32), noise_shape=noise_shape)


def test_noise_shape_equal_to_the_shape_counts_elements():
    x = np.ones((4, 6), np.float32)
    y = x.copy()
    y[1, 2] = 0
    assert mask_counts(x, y, noise_shape=[4.0, 6]) == mask_counts(x, y)


def test_noise_shape_units_with_excluded_and_size_one_axes():
    """Units whose every element is uninformative are excluded, with the per-element breakdown;
    an axis of size 1 kept in noise_shape is no broadcast."""
    x = np.ones((3, 1, 2), np.float32)
    x[0] = 0  # unit 0: all zeros -> excluded
    x[1, 0, 1] = np.nan  # unit 1: one NaN, one kept
    y = x.copy()
    y[2] = 0  # unit 2: dropped
    c = mask_counts(x, y, noise_shape=[3, 1, 1])
    assert (c.units, c.kept, c.dropped, c.excluded, c.inconsistent) == (3, 1, 1, 1, 0)
    assert (c.excluded_zero, c.excluded_nonfinite, c.excluded_subnormal) == (2, 1, 0)
