"""dropout-stats calibrate: verify()'s false-alarm rate on correct runs, the corpus' catch rates."""

from __future__ import annotations

import sys

from ._common import EXIT_FAILED, EXIT_OK, UsageError, quiet_tensorflow


def cmd_calibrate(args) -> int:
    if args.runs < 1:
        raise UsageError(f"--runs ({args.runs}) must be >= 1")
    if args.power_runs < 0:
        raise UsageError(f"--power-runs ({args.power_runs}) must be >= 0")
    quiet_tensorflow()
    from ..calibration.calibrate import calibrate_null, calibrate_power

    def progress(done, total):
        if done == total or done % max(1, total // 10) == 0:
            print(f"  {done}/{total}", file=sys.stderr, flush=True)

    null = calibrate_null(args.runs, false_fail_rate=args.false_fail_rate, seed=args.seed, progress=progress)
    print(null)
    ok = null.consistent
    if args.power_runs:
        print(f"power: each defect of the corpus, {args.power_runs} runs at false-fail 1e-6, false-pass 1e-3")
        for row in calibrate_power(args.power_runs, seed=args.seed, progress=progress):
            print(f"  {row}")
    return EXIT_OK if ok else EXIT_FAILED
