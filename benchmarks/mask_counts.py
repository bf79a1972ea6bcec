"""mask_counts on 10^8 float32 elements against the floor of reading x and y once.

Floor: np.count_nonzero(x) + np.count_nonzero(y).  Target: ratio <= 1.25.
Run: python benchmarks/mask_counts.py
"""

import numpy as np
from _timing import machine, median_time

from dropout_stats import mask_counts

n = 10**8
rng = np.random.default_rng(0)
x = rng.uniform(0.5, 2.0, n).astype(np.float32)
y = np.where(rng.random(n, dtype=np.float32) >= 0.2, x * np.float32(1.25), np.float32(0))
ours = median_time(lambda: mask_counts(x, y))
floor = median_time(lambda: (np.count_nonzero(x), np.count_nonzero(y)))
print(f"machine: {machine()}, numpy {np.__version__}")
print(f"mask_counts {ours * 1e3:.0f} ms, floor {floor * 1e3:.0f} ms, ratio {ours / floor:.2f} (target <= 1.25)")
