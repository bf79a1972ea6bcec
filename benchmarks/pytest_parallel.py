"""`pytest -n auto` against `-n 0` on this machine: wall-time ratio of the whole suite.

Target: <= 0.6 on 2 cores.  Run from the repository root: python benchmarks/pytest_parallel.py

Also reports each run's CPU time (user + sys of the pytest process tree) and the cores it kept
busy on average.  The serial run is not single-threaded (TensorFlow's kernels use every core),
so the best ratio -n auto can reach is (serial cores busy) / (cores), whatever the scheduling.
"""

import os
import resource
import subprocess
import sys
import time

from _timing import machine


def run(*args):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], capture_output=True, text=True
    )
    elapsed = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    tail = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-200:]
    return elapsed, cpu, tail


cores = os.cpu_count()
print(f"machine: {machine()}")
s_wall, s_cpu, s_tail = run("-n", "0")
p_wall, p_cpu, p_tail = run("-n", "auto")
print(f"-n 0:    {s_wall:.0f} s wall, {s_cpu:.0f} s CPU, {s_cpu / s_wall:.2f} cores busy ({s_tail})")
print(f"-n auto: {p_wall:.0f} s wall, {p_cpu:.0f} s CPU, {p_cpu / p_wall:.2f} cores busy ({p_tail})")
print(
    f"ratio {p_wall / s_wall:.2f} (target <= 0.6); bound from the serial run's own parallelism: "
    f"{s_cpu / s_wall / cores:.2f} on {cores} cores"
)
