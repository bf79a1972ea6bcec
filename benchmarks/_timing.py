"""Ratios in one run: median of repeated timings, ours over a baseline."""

import os
import platform
import statistics
import time


def median_time(fn, repeat=7):
    fn()  # warm
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
