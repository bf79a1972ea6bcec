"""The statistical tests under many base seeds: with a designed false-fail rate below 1e-6 per
run, one failure in 20 runs is a bug (its chance is below 2e-5), never bad luck.

Run: python benchmarks/seed_sweep.py [FIRST [LAST]]   (base seeds 1..20 by default)
Each base seed runs `pytest -n auto -m statistical --dropout-stats-seed=SEED`; a failure prints
the replay command.  Prints the time of each run and of the sweep.
"""

import pathlib
import re
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
first, last = (int(v) for v in (sys.argv[1:3] + ["1", "20"][len(sys.argv[1:3]) :]))
t0 = time.perf_counter()
failed = []
for seed in range(first, last + 1):
    t = time.perf_counter()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-n",
            "auto",
            "-q",
            "-m",
            "statistical",
            "-p",
            "no:cacheprovider",
            f"--dropout-stats-seed={seed}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    summary = (re.findall(r"^=*\s*(\d+ (?:passed|failed).*?) in [\d.]+s", r.stdout, re.M) or [r.stdout[-300:]])[-1]
    print(f"base seed {seed:3d}: {summary} ({time.perf_counter() - t:.0f} s)", flush=True)
    if r.returncode != 0:
        failed.append(seed)
        for line in r.stdout.splitlines():
            if line.startswith("FAILED"):
                print(f"    {line}  (replay: pytest '{line.split()[1]}' --dropout-stats-seed={seed})")
print(f"{last - first + 1} base seeds in {time.perf_counter() - t0:.0f} s; failing: {failed or 'none'}")
sys.exit(1 if failed else 0)
