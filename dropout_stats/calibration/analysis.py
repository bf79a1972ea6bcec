"""What a calibration's runs show: the false-alarm rate with its exact bound, and whether each
check's p-values are uniform (a second-level test, in the spirit of NIST SP 800-22).

* False alarms: k of n correct runs failed.  The bound is Clopper-Pearson's one-sided upper limit,
  the p with P(Bin(n, p) <= k) = 1 - confidence (exact: "0 of 2,995,732: rate <= 1.0e-6 at 95%";
  printed rounded up, so the printed bound holds too).  The design is exceeded when
  P(Bin(n, designed rate) >= k) < 0.001: a battery that meets its design is called exceeding with
  probability at most 0.001.
* p-value uniformity, per check: under a correct implementation each check's p-value is uniform
  or, for a discrete or conservative test, stochastically larger (P(p <= t) <= t).  The test
  that matters is one-sided: too many small p-values (the check fails correct code more often than
  its level says).  The one-sided Kolmogorov-Smirnov statistic D+ = max(F_n(t) - t) only
  decreases when a p-value grows, so for super-uniform p-values its p-value is conservative
  (coupling p >= U): a check is flagged TOO MANY SMALL when that p-value is below 0.001 / m over
  the m checks tested (Bonferroni: a correct battery has any check flagged with probability at
  most 0.001).  The other side (KS for too few small p-values, at the same level) marks a check
  conservative: never a defect, a check with less power than its level allows.  The ten bins
  and their chi-square p-value (NIST's uniformity of p-values) are shown as a description; on a
  conservative or discrete check they reject uniformity without anything being wrong.
  ``keep_fraction`` is not tested: its p-value is read at the sequential test's stopping time,
  not at a fixed sample size, so it is not uniform under a correct implementation.
"""

from __future__ import annotations

import json
import math
from array import array

import numpy as np
from scipy import stats

SCHEMA = "dropout-stats-calibration/1"
SECOND_LEVEL_ALPHA = 1e-3
EXCEEDS_ALPHA = 1e-3
NOT_TESTED = {"keep_fraction": "a p-value at a sequential stopping time is not uniform"}
FAILED_SEEDS_KEPT = 1000


def upper_bound(k: int, n: int, confidence: float = 0.95) -> float:
    """Clopper-Pearson's exact one-sided upper confidence limit for k successes in n trials."""
    if k >= n:
        return 1.0
    return float(stats.beta.ppf(confidence, k + 1, n - k))


def runs_for_bound(rate: float, confidence: float = 0.95) -> int:
    """The fewest runs whose zero failures bound the rate by ``rate`` at ``confidence``."""
    n = math.ceil(math.log1p(-confidence) / math.log1p(-rate))
    while upper_bound(0, n, confidence) > rate:  # the float logs may land one short
        n += 1
    return n


def ceil_sig(x: float, digits: int = 2) -> str:
    """x rounded up to ``digits`` significant digits, as 1.0e-06 is written: 1.0e-6."""
    if x <= 0:
        return "0"
    e = math.floor(math.log10(x))
    m = math.ceil(round(x / 10**e * 10 ** (digits - 1), 9)) / 10 ** (digits - 1)
    if m >= 10:
        m, e = m / 10, e + 1
    return f"{m:.{digits - 1}f}e{e}"


def bound_text(k: int, n: int, confidence: float) -> str:
    return f"{k:,} of {n:,}: rate <= {ceil_sig(upper_bound(k, n, confidence))} at {100 * confidence:g}%"


def _uniformity(name: str, a: np.ndarray, m: int, alpha: float) -> dict:
    n = int(a.size)
    out = {"name": name, "pvalues": n}
    if n == 0:
        return out | {"verdict": "no p-values"}
    bins = np.histogram(a, bins=10, range=(0.0, 1.0))[0]
    out["at_most"] = {t: int(np.count_nonzero(a <= float(t))) for t in ("0.001", "0.01", "0.05", "0.1")}
    out["bins"] = [int(b) for b in bins]
    out["bins_chi2_pvalue"] = float(stats.chisquare(bins).pvalue) if n >= 50 else None
    if name in NOT_TESTED:
        return out | {"verdict": "not tested", "note": NOT_TESTED[name]}
    small = float(stats.kstest(a, "uniform", alternative="greater").pvalue)
    large = float(stats.kstest(a, "uniform", alternative="less").pvalue)
    level = alpha / m
    verdict = "TOO MANY SMALL" if small < level else "conservative" if large < level else "uniform"
    return out | {"ks_small_pvalue": small, "ks_large_pvalue": large, "level": level, "verdict": verdict}


def summarize(records, *, spec_json: str, lo: int, hi: int, confidence: float = 0.95, alpha=SECOND_LEVEL_ALPHA):
    """(the result as a dict, {check: its p-values as an array}) from the records of seeds
    [lo, hi), read in seed order; every float in it follows from the records alone.  ``alpha``:
    the chance that a correct battery has a check flagged (Bonferroni over the checks)."""
    spec = json.loads(spec_json)
    runs = alarms = 0
    failed_seeds: list = []
    failing: dict = {}
    pvalues: dict = {}
    for text in records:
        rec = json.loads(text)
        runs += 1
        if not rec["passed"]:
            alarms += 1
            if len(failed_seeds) < FAILED_SEEDS_KEPT:
                failed_seeds.append(rec["seed"])
        for name, (status, p) in rec["checks"].items():
            if status == "FAIL":
                failing[name] = failing.get(name, 0) + 1
            if p is not None:
                pvalues.setdefault(name, array("d")).append(p)
            else:
                pvalues.setdefault(name, array("d"))
    arrays = {k: np.frombuffer(v, dtype=np.float64) if len(v) else np.zeros(0) for k, v in pvalues.items()}
    tested = [k for k, a in arrays.items() if a.size and k not in NOT_TESTED]
    checks = [_uniformity(k, a, max(1, len(tested)), alpha) for k, a in arrays.items() if a.size]
    level = spec["false_fail_rate"]
    exceed_p = float(stats.binom.sf(alarms - 1, runs, level)) if runs else 1.0
    result = {
        "schema": SCHEMA,
        "target": spec["fn"] or f"{spec['entry_point']}[{spec['mode']}] ({spec['framework']})",
        "settings": spec,
        "seeds": [lo, hi],
        "runs": runs,
        "false_alarms": {
            "count": alarms,
            "designed": level,
            "confidence": confidence,
            "upper": upper_bound(alarms, runs, confidence) if runs else 1.0,
            "text": bound_text(alarms, runs, confidence) if runs else "no runs",
            "pvalue_designed": exceed_p,
            "exceeds_design": exceed_p < EXCEEDS_ALPHA,
            "by_check": failing,
            "seeds": failed_seeds,
        },
        "checks": checks,
        "second_level_alpha": alpha,
        "plan": {"rate": level, "confidence": confidence, "runs": runs_for_bound(level, confidence)},
    }
    flagged = [c["name"] for c in checks if c.get("verdict") == "TOO MANY SMALL"]
    result["flagged"] = flagged
    result["passed"] = runs == hi - lo and not result["false_alarms"]["exceeds_design"] and not flagged
    return result, arrays


def _pct(x) -> str:
    return "-" if x is None else f"{x:.3g}"


def result_text(result: dict) -> list[str]:
    """The result for a person: the bound, the design, each check's second-level test."""
    fa, s = result["false_alarms"], result["settings"]
    lines = [
        f"calibration of {result['target']}: rate {s['rate']:g}, {s['dtype']}, false-fail rate "
        f"{s['false_fail_rate']:g}, seeds {result['seeds'][0]} to {result['seeds'][1] - 1}",
        f"false alarms: {fa['text']} (Clopper-Pearson)",
        f"  designed <= {fa['designed']:g}: "
        + ("EXCEEDS the design" if fa["exceeds_design"] else "consistent")
        + f" (P(>= {fa['count']:,} of {result['runs']:,} at {fa['designed']:g}) = {_pct(fa['pvalue_designed'])})",
    ]
    if fa["by_check"]:
        lines.append("  failed checks: " + ", ".join(f"{k} {v:,}" for k, v in fa["by_check"].items()))
    tested = sum(1 for c in result["checks"] if "level" in c)
    lines.append(
        f"p-values per check against uniform (one-sided KS at {result['second_level_alpha']:g} / {tested} "
        "checks; ten bins, chi-square):"
    )
    lines.append(
        f"  {'check':26s} {'n':>9s} {'<=0.01':>7s} {'<=0.05':>7s} {'KS small':>9s} {'KS large':>9s} "
        f"{'bins':>7s}  verdict"
    )
    for c in result["checks"]:
        n = c["pvalues"]
        lines.append(
            f"  {c['name']:26s} {n:9,d} {c['at_most']['0.01'] / n:7.4f} {c['at_most']['0.05'] / n:7.4f} "
            f"{_pct(c.get('ks_small_pvalue')):>9s} {_pct(c.get('ks_large_pvalue')):>9s} "
            f"{_pct(c['bins_chi2_pvalue']):>7s}  {c['verdict']}"
        )
    plan = result["plan"]
    lines.append(
        f"plan: bounding the rate by {plan['rate']:g} at {100 * plan['confidence']:g}% takes {plan['runs']:,} runs "
        "if none fails"
    )
    return lines
