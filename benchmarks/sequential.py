"""Draws used by the sequential rate test against the fixed-n exact minimum n*.

Discrepancy 1% relative at rate 0.2 (keep 0.8, delta 0.002), false fail 1e-6, false pass 1e-3.
Target: mean draws <= 0.6 n* under the null and under both alternatives.
Run: python benchmarks/sequential.py [runs]
"""

import sys

import numpy as np
from _timing import machine

from dropout_stats import min_num_samples_for_rate_test, sequential_rate_test

runs = int(sys.argv[1]) if len(sys.argv) > 1 else 200
keep, delta = 0.8, 0.002
nstar = min_num_samples_for_rate_test(keep, delta)
print(f"machine: {machine()}; n* = {nstar:,}; {runs} runs per row")
for label, truth in (("null", keep), ("keep - delta", keep - delta), ("keep + delta", keep + delta)):
    rng = np.random.default_rng(1)
    used, passed = [], 0
    for _ in range(runs):
        r = sequential_rate_test(lambda m, rng=rng, truth=truth: (int(rng.binomial(m, truth)), m), keep, delta)
        used.append(r.n)
        passed += r.passed
    print(
        f"{label:13s}: mean draws {np.mean(used) / nstar:.3f} n*, max {max(used) / nstar:.3f} n*, "
        f"passed {passed}/{runs}"
    )
