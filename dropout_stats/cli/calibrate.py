"""dropout-stats calibrate: verify()'s false-alarm rate on correct runs of any implementation, with
its exact bound and each check's p-values against uniform; serially or on Dask, resumable through
a store (docs/calibrating.md)."""

from __future__ import annotations

import json
import os
import sys
import time

from ._common import EXIT_FAILED, EXIT_OK, RUN, UsageError, check_design, quiet_tensorflow
from .files import save_text

SEED_LIMIT = 2**31 - 1
PLAN_WORKERS = (1, 16, 64, 256)


def _check(args) -> None:
    """Every option, before a store is opened or a framework loads."""
    from ..calibration.distributed import dask_installed

    if args.runs < 1:
        raise UsageError(f"--runs ({args.runs}) must be >= 1")
    if args.power_runs < 0:
        raise UsageError(f"--power-runs ({args.power_runs}) must be >= 0")
    if args.seed + args.runs > SEED_LIMIT:
        raise UsageError(f"--seed + --runs ({args.seed + args.runs}) must be <= 2**31 - 1: run i has seed S + i")
    if args.chunk is not None and args.chunk < 1:
        raise UsageError(f"--chunk ({args.chunk}) must be >= 1")
    if not 0 < args.confidence < 1:
        raise UsageError(f"--confidence ({args.confidence}) must be in (0, 1)")
    if not 0 < args.false_pass_rate < 1:
        raise UsageError(f"--false-pass-rate ({args.false_pass_rate}) must be in (0, 1)")
    if args.fn is not None:
        if ":" not in args.fn:
            raise UsageError(f"--fn ({args.fn}) must be MODULE:FUNCTION, e.g. mypkg.layers:dropout")
        if args.entry_point or args.framework or args.mode:
            raise UsageError("--fn and --entry-point/--framework/--mode name two targets: give one")
    elif args.stateful or args.backend or args.reference != "auto":
        raise UsageError("--stateful, --backend and --reference apply to --fn only: an entry point has its own")
    if args.workers is not None and args.scheduler:
        raise UsageError("--workers and --scheduler both say where to run: give one")
    if (args.scheduler or args.workers) and not dask_installed():
        option = "--scheduler" if args.scheduler else "--workers"
        raise UsageError(f"{option} needs Dask distributed: pip install 'dropout-stats[distributed]'")
    if args.store is not None and os.path.isdir(args.store):
        raise UsageError(f"--store ({args.store}) is a folder: name a file in it, e.g. calibration.sqlite")
    check_design(args.rate, args.false_fail_rate)


def _spec(args):
    from ..calibration.target import DEFAULT_ENTRY_POINT, Spec

    return Spec(
        entry_point=args.entry_point or DEFAULT_ENTRY_POINT,
        framework=args.framework or "tensorflow",
        mode=args.mode or "eager",
        fn=args.fn,
        stateful=args.stateful,
        backend=args.backend,
        reference=None if args.reference == "none" else args.reference,
        rate=args.rate,
        dtype=args.dtype,
        shape=tuple(args.shape) if args.shape else None,
        noise_shape=tuple(args.noise_shape) if args.noise_shape else None,
        false_fail_rate=args.false_fail_rate,
        false_pass_rate=args.false_pass_rate,
        mechanism=None if args.mechanism == "none" else args.mechanism,
        exact_scale=args.exact_scale,
        backward=False if args.no_backward else None,
    )


class _Progress:
    """Runs done, rate and ETA through tqdm: a bar on a terminal, else a line at each tenth and
    at most every 30 s (a log, CI)."""

    def __init__(self, total: int, initial: int, where: str):
        from tqdm import tqdm

        self.tty = sys.stderr.isatty()
        self.bar = tqdm(
            total=total, initial=initial, desc="calibrate", unit="run", file=sys.stderr, disable=not self.tty
        )
        self.total, self.done, self.start, self.last = total, initial, time.monotonic(), time.monotonic()
        self.initial, self.where = initial, where

    def __call__(self, n: int) -> None:
        self.done += n
        RUN.where = f"{self.done:,} of {self.total:,} runs stored{self.where}"
        if self.tty:
            self.bar.update(n)
            return
        now = time.monotonic()
        step = max(1, self.total // 10)
        if self.done == self.total or now - self.last >= 30 or self.done // step != (self.done - n) // step:
            self.last = now
            line = self.bar.format_meter(self.done, self.total, now - self.start, unit="run", initial=self.initial)
            print(f"calibrate {line}", file=sys.stderr, flush=True)

    def close(self) -> None:
        self.bar.close()


def _execute(args, spec_json: str, pending: list, store, progress):
    from ..calibration import distributed as dist

    here = os.getcwd()
    serial = args.workers == 0 or (args.workers is None and not args.scheduler and not dist.dask_installed())
    try:
        if serial:
            from ..calibration.target import probe

            error = probe(spec_json, here)
            if error:
                raise ValueError(f"loading the target: {error}")
            return dist.run_serial(spec_json, pending, store, progress, here)
        return dist.run_dask(
            spec_json,
            pending,
            store,
            progress,
            here,
            workers=args.workers,
            scheduler=args.scheduler,
            chunk=args.chunk,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _timing(result, store, execution, seconds: float, ran: int) -> dict:
    lo, hi = result["seeds"]
    n, total = store.seconds(lo, hi)
    per_run = total / n if n else None
    timing = {"seconds": round(seconds, 3), "runs_now": ran, "seconds_per_run": per_run}
    if execution is not None:
        timing.update(engine=execution.engine, workers=execution.workers, threads=execution.threads)
        timing["runs_per_second"] = ran / seconds if seconds > 0 else None
    if per_run:
        runs = result["plan"]["runs"]
        timing["plan_hours"] = {str(w): runs * per_run / w / 3600 for w in PLAN_WORKERS}
    return timing


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _duration(hours: float) -> str:
    if hours * 60 < 2:
        return f"{hours * 3600:.3g} s"
    if hours < 2:
        return f"{hours * 60:.3g} min"
    return f"{hours:.3g} h" if hours < 100 else f"{hours:,.0f} h"


def _timing_text(t: dict, plan: dict) -> list[str]:
    lines = []
    if t.get("engine"):
        where = (
            "serially in this process"
            if t["engine"] == "serial"
            else f"on {t['engine']} ({_plural(t['workers'], 'worker')}, {_plural(t['threads'], 'thread')})"
        )
        lines.append(
            f"timing: {t['runs_now']:,} runs in {t['seconds']:.1f} s {where}: {t['runs_per_second']:.2f} runs/s"
        )
    if t.get("plan_hours"):
        hours = ", ".join(f"{_plural(int(w), 'worker')} {_duration(h)}" for w, h in t["plan_hours"].items())
        lines.append(f"  a run takes {t['seconds_per_run']:.3g} s of a worker: {plan['runs']:,} runs take {hours}")
    return lines


def cmd_calibrate(args) -> int:
    _check(args)
    spec = _spec(args)
    quiet_tensorflow()
    from ..calibration.analysis import result_text, summarize
    from ..calibration.store import Store, StoreError

    lo, hi = args.seed, args.seed + args.runs
    try:
        store = Store(args.store, spec.to_json())
    except StoreError as exc:
        raise UsageError(str(exc)) from None
    try:
        done = store.done(lo, hi)
        pending = [s for s in range(lo, hi) if s not in done]
        if done:
            print(f"resuming: {len(done):,} of {args.runs:,} runs already in {args.store}", file=sys.stderr)
        execution, t0 = None, time.perf_counter()
        if pending:
            where = f" in {args.store} (the same command resumes)" if args.store else ""
            RUN.where = f"{len(done):,} of {args.runs:,} runs stored{where}"
            progress = _Progress(args.runs, len(done), where)
            try:
                execution = _execute(args, spec.to_json(), pending, store, progress)
            finally:
                progress.close()
        seconds = time.perf_counter() - t0
        result, pvalues = summarize(
            store.records(lo, hi), spec_json=spec.to_json(), lo=lo, hi=hi, confidence=args.confidence
        )
        result["timing"] = _timing(result, store, execution, seconds, len(pending))
    finally:
        store.close()
    for line in result_text(result) + _timing_text(result["timing"], result["plan"]):
        print(line)
    if args.power_runs:
        result["power"] = _power(args)
    if args.json:
        save_text(args.json, json.dumps(result, indent=1) + "\n", "--json")
    if args.plot:
        from .plots import calibrate_plot

        calibrate_plot(result, pvalues, args.plot)
    return EXIT_OK if result["passed"] else EXIT_FAILED


def _power(args) -> list:
    from ..calibration.calibrate import calibrate_power

    print(f"power: each defect of the corpus, {args.power_runs} runs at false-fail 1e-6, false-pass 1e-3")
    rows = calibrate_power(args.power_runs, seed=args.seed)
    for row in rows:
        print(f"  {row}")
    return [{"defect": r.defect, "runs": r.runs, "caught": r.caught, "mean_draws": r.mean_draws} for r in rows]
