"""Throughput of dropout-stats calibrate: serial (--workers 0) against a local Dask cluster of two
worker processes (--workers 2), start-up included.

Each measurement is the wall time of the whole command as a user runs it (a fresh process that
loads TensorFlow, or starts the cluster whose workers load it, then RUNS runs and the analysis),
alternating serial and distributed REPEAT times so that a change in the machine's load falls on
both.  Both produce the same result (checked: the JSON without its timing is identical).  The
load average before each measurement is printed: on a shared machine it says how much of the two
cores the command had.

--target numpy calibrates a numpy dropout instead of TensorFlow's default target: single-threaded
work and no framework start-up, what the engine itself scales to (a serial TensorFlow run already
keeps more than one core busy with its own threads).

Run: python benchmarks/calibrate_distributed.py [--runs 200] [--repeat 2] [--false-fail-rate 0.05]
     [--target tensorflow|numpy]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

NUMPY_DROPOUT = """
import numpy as np


def dropout(x, rate, seed, noise_shape=None):
    keep = np.random.default_rng(seed).random(noise_shape or x.shape) >= rate
    return np.where(keep, x / (1 - rate), 0).astype(x.dtype)
"""


def once(workers: int, runs: int, level: float, folder: str, target: str) -> tuple[float, dict]:
    out = os.path.join(folder, f"w{workers}.json")
    command = [sys.executable, "-m", "dropout_stats", "calibrate", "--runs", str(runs), "--workers", str(workers)]
    command += ["--false-fail-rate", str(level), "--json", out]
    if target == "numpy":
        command += ["--fn", "npdrop:dropout"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=folder)
    seconds = time.perf_counter() - t0
    if done.returncode not in (0, 1):
        sys.exit(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr}")
    with open(out) as f:
        result = json.load(f)
    result.pop("timing")
    return seconds, result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--false-fail-rate", type=float, default=0.05)
    p.add_argument("--target", choices=["tensorflow", "numpy"], default="tensorflow")
    args = p.parse_args()
    times: dict = {0: [], 2: []}
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "npdrop.py"), "w") as f:
            f.write(NUMPY_DROPOUT)
        for i in range(args.repeat):
            for workers in (0, 2):
                load = os.getloadavg()[0]
                seconds, results[workers] = once(workers, args.runs, args.false_fail_rate, folder, args.target)
                times[workers].append(seconds)
                what = "serial" if workers == 0 else "2 workers"
                print(f"[{i + 1}/{args.repeat}] {what:9s} {seconds:6.1f} s  (load average before: {load:.2f})")
    assert results[0] == results[2], "serial and distributed results differ"
    best = {w: min(t) for w, t in times.items()}
    what = "TensorFlow's stateless dropout" if args.target == "tensorflow" else "a numpy dropout"
    print(
        f"{args.runs} runs of {what} at false-fail rate {args.false_fail_rate:g}, start-up included, "
        f"best of {args.repeat}:"
    )
    for w, s in best.items():
        print(f"  {'serial' if w == 0 else '2 workers':9s} {s:6.1f} s  {args.runs / s:5.2f} runs/s")
    print(f"  speed-up {best[0] / best[2]:.2f}x (results identical)")


if __name__ == "__main__":
    main()
