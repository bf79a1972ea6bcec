"""Second-level test of the battery: each check's p-values over many correct runs.

A correct implementation's p-values must not be stochastically smaller than uniform: for each
check, the share at or below 0.01 / 0.05 / 0.1 and the one-sided Kolmogorov-Smirnov p-value
against uniform (small means too many small p-values: the check would fail correct code more
often than its level says).  Conservative checks (Bonferroni over many displacements) sit near 1.
Run: python benchmarks/check_pvalues.py [RUNS]   (four dtype/rate configurations, RUNS each)
"""

import collections
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from scipy import stats  # noqa: E402

import dropout_stats as ds  # noqa: E402


def fn(x, rate, seed, noise_shape=None):
    return tf.nn.experimental.stateless_dropout(x, rate, seed=seed, noise_shape=noise_shape)


runs = int(sys.argv[1]) if len(sys.argv) > 1 else 100
configs = [("float32", 0.2), ("bfloat16", 0.2), ("float16", 0.7), ("float64", 0.5)]
pvalues = collections.defaultdict(list)
t0 = time.perf_counter()
for dtype, rate in configs:
    for i in range(runs):
        r = ds.verify(fn, rate=rate, dtype=dtype, seed=10_000 + i, backend="tensorflow", false_fail_rate=0.05)
        for c in r.checks:
            if c.pvalue is not None and c.name != "keep_fraction":  # sequential: p at a stopping time
                pvalues[c.name].append(c.pvalue)
print(f"{runs} runs x {len(configs)} configurations in {time.perf_counter() - t0:.0f} s")
print(f"{'check':26s} {'n':>5s}  <=0.01  <=0.05  <=0.10  KS p (one-sided)")
for name, ps in sorted(pvalues.items()):
    a = np.asarray(ps)
    ks = stats.kstest(a, "uniform", alternative="greater").pvalue
    print(
        f"{name:26s} {a.size:5d}  {np.mean(a <= 0.01):.4f}  {np.mean(a <= 0.05):.4f}  {np.mean(a <= 0.1):.4f}  {ks:.3g}"
    )
