"""`pytest -n auto` against `-n 0` on this machine: wall-time ratio of the whole suite.

Target: <= 0.6 on 2 cores.  Run from the repository root: python benchmarks/pytest_parallel.py
"""
import subprocess
import sys
import time

from _timing import machine


def wall(*args):
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                       capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    tail = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-200:]
    return elapsed, tail


print(f"machine: {machine()}")
serial, s_tail = wall("-n", "0")
parallel, p_tail = wall("-n", "auto")
print(f"-n 0: {serial:.0f} s ({s_tail}); -n auto: {parallel:.0f} s ({p_tail}); ratio {parallel / serial:.2f} (target <= 0.6)")
