"""The battery's structure checks on hand-made masks and counts (no TensorFlow, no fn): their
packed-bit and histogram arithmetic against plain numpy, and the defects each exists for.

Statistical verdicts here are on masks with a gross defect (miss chance far below 1e-12) or
compare p-values to their exact recomputation; the null cases assert only what holds exactly.
"""

import numpy as np
import pytest

from dropout_stats._floats import FORMATS
from dropout_stats.battery.checks.call_independence import call_histogram_check
from dropout_stats.battery.checks.value_independence import VALUE_BINS, value_groups


def _calls(per_position, calls):
    return call_histogram_check(per_position, calls, "verify(...)")


def test_call_check_sees_a_mask_that_repeats_every_other_call():
    rng = np.random.default_rng(2)
    once = (rng.random((4, 64, 4096)) < 0.8).sum(axis=0)  # 4 independent calls...
    c = _calls((2 * once).astype(np.uint16), 8)  # ...each seen twice
    assert c.pvalue < 1e-100


def pooled_histogram(counts, calls):
    """(p-value, degrees of freedom, observed cells, expected cells, chi-square) of kept counts per
    position against Binomial(calls, p-hat), recomputed with scipy: binomial cells pooled left to
    right until each expects >= 1000 positions (a short last one joins the one before), Pearson's
    chi-square on cells - 2 df."""
    from scipy import stats

    counts = np.asarray(counts).ravel()
    p_hat = counts.sum() / (counts.size * calls)
    expected = counts.size * stats.binom.pmf(np.arange(calls + 1), calls, p_hat)
    observed = np.bincount(counts, minlength=calls + 1)
    cells, acc = [], [0.0, 0.0]
    for o, e in zip(observed, expected, strict=True):
        acc = [acc[0] + o, acc[1] + e]
        if acc[1] >= 1000:
            cells.append(acc)
            acc = [0.0, 0.0]
    cells[-1] = [cells[-1][0] + acc[0], cells[-1][1] + acc[1]]
    o, e = np.array(cells).T
    stat = ((o - e) ** 2 / e).sum()
    return stats.chi2.sf(stat, len(cells) - 2), len(cells) - 2, o, e, stat


def test_call_check_histogram_is_the_binomial_one_on_independent_calls():
    rng = np.random.default_rng(3)
    counts = (rng.random((8, 64, 4096)) < 0.8).sum(axis=0).astype(np.uint16)
    c = _calls(counts, 8)
    assert c.expected == f"kept counts per position ~ Binomial(8, {counts.mean() / 8:.6g})"  # p-hat, exactly
    want = pooled_histogram(counts, 8)[0]
    assert c.pvalue == pytest.approx(want, rel=1e-9, abs=0) and " df; largest cell " in c.observed


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


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_value_bins_split_the_bit_patterns_of_x_equally(dtype):
    """Bin of |x|'s pattern m: floor(8 (m - lo) / (hi - lo + 1)), each position's by Python's
    integer division (float64 patterns need more than 64 bits times 8), on values spread over
    many binades, and on a span of 8 patterns where each bin holds exactly one."""
    ml_dtypes = pytest.importorskip("ml_dtypes")

    np_dtype = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype)
    fmt = FORMATS[dtype]
    rng = np.random.default_rng(5)
    spread = (rng.standard_normal(5000) * np.exp(rng.uniform(-8, 8, 5000))).astype(np_dtype)
    eight = (np.arange(1000, 1008, dtype=np.uint64) + 1).astype(fmt.uint).view(np_dtype)
    for x in (spread, eight, -eight):
        m = [int(v) & fmt.abs_mask for v in x.view(fmt.uint)]
        lo, span = min(m), max(m) - min(m) + 1
        want = [
            2 * (VALUE_BINS * (v - lo) // span) + (int(s) >> (8 * x.itemsize - 1))
            for v, s in zip(m, x.view(fmt.uint), strict=True)
        ]
        groups, sizes = value_groups(x, fmt)
        assert groups.tolist() == want
        assert sizes.tolist() == np.bincount(want, minlength=2 * VALUE_BINS).tolist()
    assert sorted(value_groups(eight, fmt)[0].tolist()) == [0, 2, 4, 6, 8, 10, 12, 14]


def test_a_table_of_pairs_is_tested_whenever_it_holds_a_pair():
    """table_check: no pairs is 'not applicable'; one pair, or a partner never kept, is a
    tested entry with Fisher's p-value 1 (a margin of 0 or n fixes the table), never n/a:
    a defect that always drops the second of each pair still reports its samples."""
    from dropout_stats.battery.checks._common import table_check

    none = table_check("row_independence", None, "pairs", "r")
    empty = table_check("row_independence", np.zeros(4, np.int64), "pairs", "r")
    assert none.passed is None and empty.passed is None and empty.detail == "no pairs to compare"
    for table in ([1, 1, 1, 1], [0, 1, 0, 1], [0, 30, 0, 100], [5, 5, 100, 100]):
        c = table_check("row_independence", np.array(table), "pairs", "r")
        assert (c.passed, c.pvalue, c.samples) == (True, 1.0, table[3]), table
    # a margin of 1 is not degenerate: one pair kept together among 100 has p = 1/100 (scipy's)
    from scipy import stats

    c = table_check("row_independence", np.array([1, 1, 1, 100]), "pairs", "r")
    want = stats.fisher_exact([[1, 0], [0, 99]]).pvalue
    assert c.pvalue == pytest.approx(want, rel=1e-12, abs=0) and want < 1
