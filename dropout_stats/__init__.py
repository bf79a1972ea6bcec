"""dropout_stats: exact statistics for verifying dropout.

The package is layered; importing it loads numpy and scipy, never TensorFlow:

* statistics on counts and arrays: ``counts``, ``binomial``, ``design``, ``precision``,
  ``structure``, ``sequential`` (this module re-exports their public names);
* the TensorFlow reference model and adapters: ``dropout_stats.tf`` (imports TensorFlow);
* the verification battery ``verify`` (``battery``, loaded on first use; imports TensorFlow).
"""
from __future__ import annotations

from .binomial import ProportionInterval, RateTestResult, proportion_ci, rate_test
from .counts import MaskCounts, mask_counts
from .design import (
    RejectionRegion,
    min_discrepancy_detectable,
    min_num_samples_for_rate_test,
    power_of_rate_test,
    rejection_region_for_rate_test,
)
from .precision import (
    ScaleFormula,
    apply_scale,
    expected_keep_fraction,
    expected_keep_probability,
    expected_scale,
    exact_scale,
    ulp_distance,
)
from .sequential import SequentialRateTest, SequentialResult, sequential_rate_test
from .structure import (
    HolmResult,
    StructureTestResult,
    agreement_test,
    holm_bonferroni,
    homogeneity_test,
    independence_test,
    pair_independence_test,
    trend_test,
)

__version__ = "0.1.0"

_LAZY = {"verify": "battery", "verify_alpha_dropout": "battery", "verify_gaussian_dropout": "battery", "Report": "report", "Check": "report", "Finding": "report"}


def __getattr__(name):  # PEP 562: the battery (and TensorFlow) load on first use only
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'dropout_stats' has no attribute {name!r}")


__all__ = [
    "MaskCounts", "mask_counts",
    "ProportionInterval", "RateTestResult", "proportion_ci", "rate_test",
    "RejectionRegion", "rejection_region_for_rate_test", "power_of_rate_test",
    "min_num_samples_for_rate_test", "min_discrepancy_detectable",
    "ScaleFormula", "expected_keep_fraction", "expected_keep_probability", "expected_scale",
    "exact_scale", "apply_scale", "ulp_distance",
    "SequentialRateTest", "SequentialResult", "sequential_rate_test",
    "StructureTestResult", "homogeneity_test", "independence_test", "agreement_test",
    "pair_independence_test", "trend_test", "HolmResult", "holm_bonferroni",
    "verify", "verify_alpha_dropout", "verify_gaussian_dropout", "Report", "Check", "Finding",
]
