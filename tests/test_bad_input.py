"""Every public statistics function: bad input gets an error naming the argument and value."""
import numpy as np
import pytest

import dropout_stats as ds

F32 = np.ones(4, np.float32)

CASES = [
    # (call, exception, message fragment)
    (lambda: ds.expected_keep_probability(1.5, "float32"), ValueError, "rate (1.5) must be in [0, 1)"),
    (lambda: ds.expected_keep_probability(-0.1, "float32"), ValueError, "rate (-0.1) must be in [0, 1)"),
    (lambda: ds.expected_keep_probability(float("nan"), "float32"), ValueError, "rate (nan) must be in [0, 1)"),
    (lambda: ds.expected_keep_probability(1.0, "float32"), ValueError, "rate (1.0) must be in [0, 1)"),
    (lambda: ds.expected_keep_probability("0.2", "float32"), TypeError, "rate ('0.2') must be a real number"),
    (lambda: ds.expected_keep_probability(0.2, "int32"), ValueError, "dtype ('int32') must be one of"),
    (lambda: ds.expected_scale(1.5, "float32"), ValueError, "rate (1.5)"),
    (lambda: ds.proportion_ci(11, 10), ValueError, "k (11) must be <= n (10)"),
    (lambda: ds.proportion_ci(-1, 10), ValueError, "k (-1) must be >= 0"),
    (lambda: ds.proportion_ci(1, 0), ValueError, "n (0) must be >= 1"),
    (lambda: ds.proportion_ci(1.5, 10), ValueError, "k (1.5) must be an integer"),
    (lambda: ds.proportion_ci(1, 10, confidence_level=1.0), ValueError, "confidence_level (1.0) must be in (0, 1)"),
    (lambda: ds.proportion_ci(1, 10, confidence_level=0), ValueError, "confidence_level (0.0) must be in (0, 1)"),
    (lambda: ds.proportion_ci(1, 10, method="wald"), ValueError, "method ('wald') must be one of"),
    (lambda: ds.rate_test(5, 10, 1.2), ValueError, "keep_prob (1.2) must be in [0, 1]"),
    (lambda: ds.rate_test(11, 10, 0.5), ValueError, "kept (11) must be <= n (10)"),
    (lambda: ds.rate_test(1, 10, 0.5, alternative="both"), ValueError, "alternative ('both') must be one of"),
    (lambda: ds.min_num_samples_for_rate_test(0.8, 0), ValueError, "discrepancy (0.0) must be a finite number > 0"),
    (lambda: ds.min_num_samples_for_rate_test(0.8, 0.9), ValueError, "discrepancy (0.9) must leave"),
    (lambda: ds.min_num_samples_for_rate_test(1.0, 0.01), ValueError, "keep_prob (1.0) must be in (0, 1)"),
    (lambda: ds.min_num_samples_for_rate_test(0.8, 0.01, false_fail_rate=0), ValueError, "false_fail_rate (0.0) must be in (0, 1)"),
    (lambda: ds.min_num_samples_for_rate_test(0.8, 0.01, false_pass_rate=2), ValueError, "false_pass_rate (2.0) must be in (0, 1)"),
    (lambda: ds.min_discrepancy_detectable(0.8, -5), ValueError, "n (-5) must be >= 1"),
    (lambda: ds.mask_counts(F32, np.ones(5, np.float32)), ValueError, "x and y must have the same shape"),
    (lambda: ds.mask_counts(np.ones(4, np.int32), np.ones(4, np.int32)), TypeError, "x (dtype int32) must be a floating-point array"),
    (lambda: ds.mask_counts(F32, np.ones(4, np.float64)), TypeError, "x and y must have the same dtype"),
    (lambda: ds.mask_counts(np.ones(0, np.float32), np.ones(0, np.float32)), ValueError, "x (shape [0]) must not be empty"),
    (lambda: ds.mask_counts(np.ones((2, 4), np.float32), np.ones((2, 4), np.float32), noise_shape=[2, 2]), ValueError, "noise_shape ([2, 2]) must broadcast"),
    (lambda: ds.mask_counts(np.ones((2, 4), np.float32), np.ones((2, 4), np.float32), noise_shape=[2]), ValueError, "noise_shape ([2]) must have the rank"),
    (lambda: ds.homogeneity_test([5, 11], [10, 10]), ValueError, "kept (11) must be in [0, n (10)]"),
    (lambda: ds.homogeneity_test([5], [10]), ValueError, "must hold at least 2 groups"),
    (lambda: ds.independence_test(np.ones(3, bool), np.ones(4, bool)), ValueError, "mask_a and mask_b must have the same shape"),
    (lambda: ds.independence_test(np.ones(3), np.ones(3)), TypeError, "mask_a (dtype float64) must be a boolean mask"),
    (lambda: ds.pair_independence_test(np.ones((2, 3), bool), axis=5), ValueError, "axis (5) must be in"),
    (lambda: ds.holm_bonferroni([0.5, 1.5], 0.05), ValueError, "pvalues ([0.5, 1.5]) must lie in [0, 1]"),
    (lambda: ds.holm_bonferroni([0.5], 1.5), ValueError, "false_fail_rate (1.5) must be in (0, 1)"),
    (lambda: ds.SequentialRateTest(0.8, -0.1), ValueError, "discrepancy (-0.1) must be a finite number > 0"),
    (lambda: ds.ulp_distance(F32, np.ones(3, np.float32)), ValueError, "a and b must have the same shape"),
    (lambda: _testing().assert_scaled_by_inverse_keep(F32, np.ones(3, np.float32), 0.2), ValueError,
     "x and y must have the same shape"),
    (lambda: _testing().assert_keep_fraction(F32, F32, 1.5), ValueError, "rate (1.5) must be in [0, 1)"),
    (lambda: _testing().assert_mask_is_uniform_threshold(F32, F32, 0.2, [1, 2, 3]), ValueError,
     "seed ([1, 2, 3]) must be two integers"),
    (lambda: _testing().assert_mask_is_uniform_threshold(np.ones(4, np.int32), F32, 0.2, [1, 2]), TypeError,
     "x (dtype int32) must be a floating-point array"),
]


def _testing():
    from dropout_stats import testing

    return testing


@pytest.mark.parametrize("call,exc,fragment", CASES, ids=[c[2][:40] for c in CASES])
def test_bad_input_names_the_argument_and_value(call, exc, fragment):
    with pytest.raises(exc) as info:
        call()
    assert fragment in str(info.value)
    # raised by our validation, not from inside numpy or scipy
    tb = info.traceback[-1]
    assert "dropout_stats" in str(tb.path), tb.path


def test_import_does_not_load_tensorflow():
    import subprocess
    import sys

    code = "import sys, dropout_stats; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
