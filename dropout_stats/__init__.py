"""dropout_stats: exact statistics for verifying dropout.

The package is layered, and importing it loads nothing heavy: each public name is imported on
first use (PEP 562), so the pytest plugin, which pytest loads in every project that installs
this one, stays cheap.

* statistics on counts and arrays (numpy, scipy; never TensorFlow): ``counts``, ``binomial``,
  ``design``, ``precision``, ``structure``, ``sequential``;
* the TensorFlow reference model and adapters: ``reference``, ``adapters``;
* the verification battery: ``battery`` (``verify``), ``report``;
* the user's surface: ``cli``, ``pytest_plugin``, ``testing``, ``strategies``.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "counts": ["MaskCounts", "mask_counts"],
    "binomial": ["ProportionInterval", "RateTestResult", "proportion_ci", "rate_test"],
    "design": [
        "RejectionRegion",
        "rejection_region_for_rate_test",
        "power_of_rate_test",
        "min_num_samples_for_rate_test",
        "min_discrepancy_detectable",
    ],
    "precision": [
        "ScaleFormula",
        "expected_keep_fraction",
        "expected_keep_probability",
        "expected_scale",
        "exact_scale",
        "apply_scale",
        "ulp_distance",
    ],
    "sequential": ["SequentialRateTest", "SequentialResult", "sequential_rate_test"],
    "structure": [
        "StructureTestResult",
        "homogeneity_test",
        "independence_test",
        "agreement_test",
        "pair_independence_test",
        "trend_test",
        "HolmResult",
        "holm_bonferroni",
    ],
    "battery": [
        "verify",
        "verify_alpha_dropout",
        "verify_gaussian_dropout",
        "verify_layer",
        "use_logical_cpus",
        "verify_recurrent",
        "verify_attention",
        "verify_drop_path",
        "verify_dropblock",
    ],
    "report": ["Report", "Check", "Finding"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'dropout_stats' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
