"""The battery's structure checks on hand-made masks and counts (no TensorFlow, no fn): their
packed-bit and histogram arithmetic against plain numpy, and the defects each exists for.

Statistical verdicts here are on masks with a gross defect (miss chance far below 1e-12) or
compare p-values to their exact recomputation; the null cases assert only what holds exactly.
"""
import numpy as np
import pytest

from dropout_stats._exact import fisher_two_sided_pvalue
from dropout_stats._floats import FORMATS
from dropout_stats.battery.checks.call_independence import call_histogram_check
from dropout_stats.battery.checks.offset_independence import offset_check
from dropout_stats.battery.checks.value_independence import VALUE_BINS, value_groups


def _offsets(masks):
    return offset_check(masks, "verify(...)")


def _calls(per_position, calls):
    return call_histogram_check(per_position, calls, "verify(...)")


def _naive_table(masks, d):
    flat = np.stack([m.ravel() for m in masks])
    n = flat.shape[1]
    used = 8 * (n // 8) if d < 8 else n - n % (2 * d)
    pairs = flat[:, :used].reshape(len(masks), -1, 2, d)
    a, b = pairs[:, :, 0], pairs[:, :, 1]
    return [int(np.count_nonzero(a & b)), int(np.count_nonzero(a)), int(np.count_nonzero(b)), a.size]


@pytest.mark.parametrize("shape", [(64, 4096), (3, 1000), (37,)])
def test_offset_check_p_value_is_fisher_on_the_plain_table_of_its_offset(shape):
    rng = np.random.default_rng(1)
    masks = [rng.random(shape) < 0.7 for _ in range(2)]
    c = _offsets(masks)
    d = int(c.observed.split()[1].rstrip(":"))
    offsets = [1 << k for k in range(1, masks[0].size.bit_length()) if 2 << k <= masks[0].size]
    t = _naive_table(masks, d)
    p = fisher_two_sided_pvalue([[t[0], t[1] - t[0]], [t[2] - t[0], t[3] - t[1] - t[2] + t[0]]])
    assert c.pvalue == min(1.0, p * len(offsets))


@pytest.mark.parametrize("k", range(1, 17))
def test_a_mask_tiled_at_any_power_of_two_fails_at_that_offset(k):
    d = 1 << k
    rng = np.random.default_rng(k)
    masks = []
    for _ in range(2):
        m = (rng.random(1 << 18) < 0.8).reshape(-1, 2, d)
        m[:, 1] = m[:, 0]  # the second half of every 2d-block repeats the first
        masks.append(m.reshape(64, 4096))
    c = _offsets(masks)
    assert c.observed.startswith(f"offset {d}:") and c.pvalue < 1e-100, c


def test_call_check_sees_a_mask_that_repeats_every_other_call():
    rng = np.random.default_rng(2)
    once = (rng.random((4, 64, 4096)) < 0.8).sum(axis=0)  # 4 independent calls...
    c = _calls((2 * once).astype(np.uint16), 8)  # ...each seen twice
    assert c.pvalue < 1e-100


def test_call_check_histogram_is_the_binomial_one_on_independent_calls():
    rng = np.random.default_rng(3)
    counts = (rng.random((8, 64, 4096)) < 0.8).sum(axis=0).astype(np.uint16)
    c = _calls(counts, 8)
    assert c.expected == f"kept counts per position ~ Binomial(8, {counts.mean() / 8:.6g})"  # p-hat, exactly
    assert 0 <= c.pvalue <= 1 and " df; largest cell " in c.observed


def test_call_check_needs_enough_positions():
    assert _calls(np.full((8, 8), 3, np.uint16), 4).passed is None


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_value_groups_follow_the_sign_and_the_magnitude(dtype):
    ml_dtypes = pytest.importorskip("ml_dtypes")

    np_dtype = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype)
    magnitudes = np.linspace(0.5, 2.0, 64)
    x = np.concatenate([magnitudes, -magnitudes]).astype(np_dtype)
    groups, sizes = value_groups(x, FORMATS[dtype])
    assert groups.min() >= 0 and groups.max() < 2 * VALUE_BINS and sizes.sum() == x.size
    assert np.array_equal(groups % 2, np.repeat([0, 1], 64))  # the sign
    bins = groups[:64] // 2
    assert bins[0] == 0 and bins[-1] == VALUE_BINS - 1 and np.all(np.diff(bins) >= 0)
    assert np.array_equal(bins, groups[64:] // 2)  # |x| alone sets the bin
