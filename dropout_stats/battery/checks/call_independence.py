"""call_independence: masks do not repeat across calls.

Detects a mask that comes back every few calls (a seed counter that wraps, two masks used in
turn), positions stuck kept or dropped, and rates that differ by position across calls.
Only this check catches: ``corpus.wraps_seed1`` (seed[1] taken mod 4: calls 4 apart share a
mask, neighbouring calls do not) and ``corpus.alternating_masks`` (stateful: two masks in turn).
Test: each position's kept count over the main calls is Binomial(calls, p) and independent of
the others', so their histogram is P x Binomial(calls, p-hat); Pearson's chi-square over the
histogram, cells pooled to >= 1000 expected positions (the approximation holds far into the
tail there), in the run's Holm family.  Tested in tests/test_battery_checks.py.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binom, chi2

from ...report import Check
from . import Family

POOLED_EXPECTED = 1000  # expected positions per cell of the histogram


class CallIndependence(Family):
    name = "call_independence"
    names = ("call_independence",)
    needs = frozenset({"per_position"})
    observes = frozenset()

    def statistical(self):
        # a histogram of at least 3 cells of POOLED_EXPECTED positions needs 3x that many
        return ["call_independence"] if self.run.units >= 3 * POOLED_EXPECTED else []

    def conclude(self):
        if not self.statistical():
            return [
                Check(
                    "call_independence",
                    None,
                    "statistical",
                    detail=f"{self.run.units} positions: too few for a histogram of their kept counts "
                    f"(>= {3 * POOLED_EXPECTED} needed)",
                )
            ]
        return [call_histogram_check(self.run.per_position, self.run.main_calls, self.cfg.reproduce())]


def call_histogram_check(per_position: np.ndarray, calls: int, reproduce: str) -> Check:
    name = "call_independence"
    counts = per_position.ravel()
    positions = counts.size
    hist = np.bincount(counts, minlength=calls + 1)[: calls + 1]
    p_hat = int((hist * np.arange(calls + 1)).sum()) / (positions * calls)  # exact; no BLAS
    if not 0 < p_hat < 1:
        return Check(name, None, "statistical", detail="every draw kept, or every draw dropped")
    expected = positions * binom.pmf(np.arange(calls + 1), calls, p_hat)
    observed_cells, expected_cells = [], []
    o = e = 0.0
    for ov, ev in zip(hist, expected, strict=True):
        o, e = o + ov, e + ev
        if e >= POOLED_EXPECTED:
            observed_cells.append(o)
            expected_cells.append(e)
            o = e = 0.0
    if (o or e) and expected_cells:  # a short last cell joins the one before it
        observed_cells[-1] += o
        expected_cells[-1] += e
    df = len(expected_cells) - 2  # the total and p-hat are fitted
    if df < 1:
        return Check(
            name, None, "statistical", detail=f"{positions} positions x {calls} calls: too few for a histogram test"
        )
    ob, ex = np.array(observed_cells), np.array(expected_cells)
    stat = float(np.sum((ob - ex) ** 2 / ex))
    worst = int(np.argmax(np.abs(ob - ex) / np.sqrt(ex)))
    return Check(
        name,
        True,
        "statistical",
        float(chi2.sf(stat, df)),
        None,
        positions * calls,
        values={"chi2": stat, "df": df, "calls": calls},
        observed=f"chi2 {stat:.4g} on {df} df; largest cell {ob[worst]:.0f} positions vs {ex[worst]:.1f} expected",
        expected=f"kept counts per position ~ Binomial({calls}, {p_hat:.6g})",
        detail=f"histogram of {positions:,} positions' kept counts over {calls} calls, {len(ex)} cells",
        reproduce=reproduce,
    )
