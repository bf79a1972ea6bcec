"""Run the contract corpus (tests/contract_corpus.py) through verify() / verify_layer() and count
false alarms (GitHub issue 28, "Correct means the contract").

Every CORRECT entry runs at every dtype it supports, every rate of RATES and each seed; every
BROKEN entry at its own rates (its dtypes, the first seed) -- all at verify()'s defaults
(false_fail_rate 1e-6, false_pass_rate 1e-3).  One line per run:

    PASS|FAIL|ERROR  entry  dtype  rate  seed  seconds  [failing check: observed | detail; ...]

then the summary: false alarms per framework, the correct runs that failed grouped by their
failing check and its one-line reason (numbers masked so that one cause is one group), and the
broken runs that passed.  Exit code 0 when no correct run failed and every broken one was caught.

    python benchmarks/contract_corpus.py                      # everything (see the README's timing)
    python benchmarks/contract_corpus.py --quick              # rates 0.2, 0.6, 0.65; one seed
    python benchmarks/contract_corpus.py --framework numpy,tensorflow --entry textbook
    python benchmarks/contract_corpus.py --jsonl runs.jsonl   # each run's failures as JSON lines

No per-run timeout: each run ends by itself (max_calls bounds verify()).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import contract_corpus as cc  # noqa: E402

QUICK_RATES = (0.2, 0.6, 0.65)


def one_line(text: str, width: int = 240) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def cause_key(check) -> str:
    """The failing check and its reason with the numbers masked: one cause, one group."""
    words = re.sub(r"(?<![A-Za-z_\d])-?\d[\d,.]*(e[-+]?\d+)?", "#", check.detail or check.observed or "")
    return f"{check.name}: {one_line(words, 140)}"


def run_one(entry, dtype, rate, seed):
    t0 = time.perf_counter()
    try:
        report = entry.verify(rate=rate, dtype=dtype, seed=seed)
    except Exception as exc:  # noqa: BLE001 - a crash is reported as a run's verdict
        return "ERROR", [], f"{type(exc).__name__}: {one_line(exc, 300)}", time.perf_counter() - t0
    verdict = "PASS" if report.passed else "FAIL"
    return verdict, report.failures, "", time.perf_counter() - t0


def plan(args):
    frameworks = args.framework.split(",") if args.framework else list(cc.FRAMEWORKS)
    rates = tuple(float(r) for r in args.rates.split(",")) if args.rates else (QUICK_RATES if args.quick else cc.RATES)
    seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else ((0,) if args.quick else (0, 1))
    dtypes = tuple(args.dtypes.split(",")) if args.dtypes else None
    runs = []
    skipped = []
    for kind, entries in (("correct", cc.CORRECT), ("broken", cc.BROKEN)):
        if (kind == "correct" and args.broken_only) or (kind == "broken" and args.correct_only):
            continue
        for e in entries:
            if e.framework not in frameworks or (args.entry and args.entry not in e.name):
                continue
            if not e.available():
                skipped.append(e.name)
                continue
            ds = [d for d in e.dtypes if dtypes is None or d in dtypes]
            if kind == "correct":
                for d in ds:
                    for r in rates:
                        for s in seeds:
                            runs.append((kind, e, d, r, s))
            else:
                for d in ds:
                    for r in e.rates:
                        runs.append((kind, e, d, r, seeds[0]))
    return runs, skipped


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="rates 0.2, 0.6, 0.65 and one seed")
    p.add_argument("--framework", help="comma-separated: tensorflow, numpy, jax, torch (default all)")
    p.add_argument("--entry", help="only entries whose name contains this")
    p.add_argument("--rates", help="comma-separated rates for the correct entries (default RATES)")
    p.add_argument("--seeds", help="comma-separated seeds (default 0,1; --quick: 0)")
    p.add_argument("--dtypes", help="comma-separated dtypes (default: each entry's own)")
    p.add_argument("--correct-only", action="store_true")
    p.add_argument("--broken-only", action="store_true")
    p.add_argument("--jsonl", help="write one JSON line per run (failures with observed and detail)")
    args = p.parse_args(argv)

    runs, skipped = plan(args)
    if skipped:
        print(f"skipped (framework not importable): {', '.join(skipped)}")
    print(f"{len(runs)} runs")
    out = open(args.jsonl, "w") if args.jsonl else None  # noqa: SIM115
    t_start = time.perf_counter()
    results = []
    time_by_framework = Counter()
    for i, (kind, e, dtype, rate, seed) in enumerate(runs):
        verdict, failures, error, secs = run_one(e, dtype, rate, seed)
        time_by_framework[e.framework] += secs
        results.append((kind, e, dtype, rate, seed, verdict, failures, error))
        tag = "" if kind == "correct" else " [broken]"
        why = "; ".join(f"{c.name}: {one_line(c.observed, 120)} | {one_line(c.detail, 200)}" for c in failures)
        print(
            f"{i + 1:4d} {verdict:5s} {e.name + tag:42s} {dtype:8s} rate={rate:<5g} seed={seed} {secs:5.1f}s"
            + (f"  {why}" if why else "")
            + (f"  {error}" if error else ""),
            flush=True,
        )
        if out:
            out.write(
                json.dumps(
                    {
                        "kind": kind,
                        "entry": e.name,
                        "framework": e.framework,
                        "call": e.call,
                        "dtype": dtype,
                        "rate": rate,
                        "seed": seed,
                        "verdict": verdict,
                        "seconds": round(secs, 2),
                        "error": error,
                        "failures": [
                            {"name": c.name, "observed": c.observed, "detail": c.detail, "reproduce": c.reproduce}
                            for c in failures
                        ],
                    }
                )
                + "\n"
            )
            out.flush()
    total = time.perf_counter() - t_start
    if out:
        out.close()

    # -- summary ---------------------------------------------------------------------------------
    print("\n== summary ==")
    print(
        f"{len(runs)} runs in {total:.0f} s (" + ", ".join(f"{k} {v:.0f} s" for k, v in time_by_framework.items()) + ")"
    )
    correct = [r for r in results if r[0] == "correct"]
    broken = [r for r in results if r[0] == "broken"]
    print("\ncorrect runs: false alarms per framework")
    for fw in cc.FRAMEWORKS:
        rs = [r for r in correct if r[1].framework == fw]
        if rs:
            bad = [r for r in rs if r[5] != "PASS"]
            entries = Counter(r[1].name for r in bad)
            print(
                f"  {fw:11s} {len(bad):4d} of {len(rs):4d} runs fail"
                + (f"  ({', '.join(f'{n} {k}' for n, k in sorted(entries.items()))})" if bad else "")
            )
    bad = [r for r in correct if r[5] != "PASS"]
    print(f"  total       {len(bad):4d} of {len(correct):4d}")
    causes = defaultdict(list)
    for r in bad:
        if r[5] == "ERROR":
            causes[f"ERROR: {re.sub(r'(?<![A-Za-z_0-9])[0-9]+', '#', r[7])[:140]}"].append(r)
        for c in r[6]:
            causes[cause_key(c)].append(r)
    if causes:
        print("\nfalse alarms by cause (a run with several failing checks counts under each)")
        for key, rs in sorted(causes.items(), key=lambda kv: -len(kv[1])):
            print(f"  {len(rs):4d}  {key}")
            where = defaultdict(set)
            for r in rs:
                where[r[1].name].add(f"{r[2]}@{r[3]:g}")
            for name, cfgs in sorted(where.items()):
                print(f"          {name}: {', '.join(sorted(cfgs))}")
    print("\nbroken runs")
    missed = [r for r in broken if r[5] == "PASS"]
    errored = [r for r in broken if r[5] == "ERROR"]
    print(
        f"  caught {len(broken) - len(missed) - len(errored)} of {len(broken)}; "
        f"missed {len(missed)}; errors {len(errored)}"
    )
    for r in missed:
        print(f"  MISSED {r[1].name} {r[2]} rate={r[3]:g}: {r[1].reason}")
    for r in errored:
        print(f"  ERROR  {r[1].name} {r[2]} rate={r[3]:g}: {r[7]}")
    caught_by = defaultdict(Counter)
    for r in broken:
        for c in r[6]:
            caught_by[r[1].name][c.name] += 1
    for name, cnt in caught_by.items():
        print(f"  {name}: failing checks {dict(cnt)}")
    return 0 if not bad and not missed and not errored else 1


if __name__ == "__main__":
    sys.exit(main())
