"""verify() wall time of this working tree against a git revision, in one process, alternating
run by run: the two packages see the same machine load, the same TensorFlow state and the same
seeds, so the ratio holds to a few percent where separate processes (decision_cost.py run twice)
differ by 10-20% on a shared machine.

The revision's ``dropout_stats`` is extracted (git archive) into a temporary folder as the package
``dsbase`` (its imports are relative, so it loads under another name).  Each kind: N seeds, the
two packages in turn (the order alternating), a warm-up of 3 runs each first.

Run: python benchmarks/decision_cost_ab.py [--base b5f7e61] [--runs 100]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
KINDS = (("float32", 0.01), ("bfloat16", 0.01), ("float32", 0.002))  # (dtype, discrepancy / rate)


def extract(rev: str, folder: str) -> None:
    root = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True)
    archive = subprocess.run(
        ["git", "-C", root.stdout.strip(), "archive", rev, "dropout_stats"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", folder], input=archive.stdout, check=True)
    shutil.move(os.path.join(folder, "dropout_stats"), os.path.join(folder, "dsbase"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="b5f7e61", help="the git revision to compare with")
    p.add_argument("--runs", type=int, default=100, help="seeds per kind (a third of it at 0.2%%)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        extract(args.base, folder)
        sys.path.insert(0, folder)
        import dsbase
        import tensorflow as tf

        import dropout_stats as ds

        def fn(x, rate, seed, noise_shape=None):
            return tf.nn.experimental.stateless_dropout(x, rate, seed=seed, noise_shape=noise_shape)

        packages = {"base": dsbase, "now": ds}
        print(f"base {args.base} against the working tree, TensorFlow {tf.__version__}")
        for dtype, rel in KINDS:
            runs = args.runs if rel >= 0.01 else max(5, args.runs // 5)

            def once(pkg, seed, dtype=dtype, rel=rel):
                t0 = time.perf_counter()
                pkg.verify(fn, rate=0.2, dtype=dtype, seed=seed, discrepancy=rel * 0.2, backend="tensorflow")
                return time.perf_counter() - t0

            for pkg in packages.values():
                for s in range(3):
                    once(pkg, s)
            times = {k: [] for k in packages}
            for s in range(runs):
                for k in ("base", "now") if s % 2 else ("now", "base"):
                    times[k].append(once(packages[k], s))
            b, n = (statistics.median(times[k]) for k in ("base", "now"))
            paired = statistics.median(x / y for x, y in zip(times["now"], times["base"], strict=True))
            print(
                f"{dtype}, discrepancy {rel:.1%} of the rate, {runs} seeds: "
                f"base {b * 1e3:.1f} ms, now {n * 1e3:.1f} ms; "
                f"ratio of medians {n / b:.3f}, median of paired ratios {paired:.3f}"
            )


if __name__ == "__main__":
    main()
