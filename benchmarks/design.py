"""min_num_samples_for_rate_test: time to answer, and the draws it asks for against DKWM.

Run: python benchmarks/design.py
"""

import math

from _timing import machine, median_time

from dropout_stats import min_num_samples_for_rate_test
from dropout_stats.design import _min_num_samples

print(f"machine: {machine()}")
for keep, delta, a, b in [
    (0.1, 0.01, 1e-6, 1e-6),
    (0.8, 0.002, 1e-6, 1e-3),
    (0.8, 0.0002, 1e-6, 1e-3),
    (0.5, 0.00005, 1e-6, 1e-3),
]:
    n = min_num_samples_for_rate_test(keep, delta, false_fail_rate=a, false_pass_rate=b)

    def uncached(keep=keep, delta=delta, a=a, b=b):
        _min_num_samples.cache_clear()  # time the search, not the cache
        return min_num_samples_for_rate_test(keep, delta, false_fail_rate=a, false_pass_rate=b)

    t = median_time(uncached, 5)
    # DKWM two-sided mean test as in TFP: n >= (sqrt(log(2/a)/2) + sqrt(log(2/b)/2))^2 / delta^2... per side
    dkwm = math.ceil(((math.sqrt(math.log(2 / a) / 2) + math.sqrt(math.log(2 / b) / 2)) / delta) ** 2)
    print(
        f"keep {keep}, discrepancy {delta}, false fail {a:g}, false pass {b:g}: n* = {n:,} "
        f"in {t * 1e3:.1f} ms; DKWM bound {dkwm:,} ({dkwm / n:.2f}x)"
    )
