"""stateful_fresh and stateful_drift: a stateful dropout draws a fresh mask at a steady rate on
every call.

Detects a mask drawn once and returned on every call, and a rate that creeps with the call
count (a counter, a schedule, state left by an earlier call).
Only these catch: ``corpus.reused_mask`` (stateful_fresh) and ``corpus.drifting_rate``
(stateful_drift).
Tests: fresh is Fisher's exact test on the 2 x 2 table of successive calls' masks; drift is the
Cochran-Armitage trend test over the calls' kept counts in up to 64 groups; each in the run's
Holm family.  Stateful contract only.  Tested in tests/test_verify.py.
"""
from __future__ import annotations

import numpy as np

from ...report import Check
from ...structure import trend_test
from . import Family
from ._common import accumulate_table, table_check


class Stateful(Family):
    name = "stateful"
    names = ("stateful_fresh", "stateful_drift")

    def __init__(self, run):
        super().__init__(run)
        self.table = np.zeros(4, dtype=np.int64)
        self.previous = None
        self.per_call_kept = []

    def applies(self) -> bool:
        return self.cfg.stateful

    def statistical(self):
        return ["stateful_fresh", "stateful_drift"]

    def observe(self, call) -> None:
        if self.previous is not None:
            accumulate_table(self.table, self.previous, call.mask)
        self.previous = call.mask
        self.per_call_kept.append(call.kept)

    def conclude(self):
        cfg = self.cfg
        fresh = table_check("stateful_fresh", self.table, "masks of successive calls", cfg.reproduce())
        k = np.asarray(self.per_call_kept, dtype=np.int64)
        groups = min(64, k.size)
        edges = np.linspace(0, k.size, groups + 1).astype(np.int64)
        gk = np.add.reduceat(k, edges[:-1])
        gn = np.diff(edges) * self.run.units
        r = trend_test(gk, gn)
        drift = Check(
            "stateful_drift", True, "statistical", r.pvalue, None, int(gn.sum()),
            observed=f"trend z = {r.statistic:.3g} over {k.size} calls in {groups} groups",
            expected="keep rate stable across calls", detail="Cochran-Armitage trend test",
            reproduce=cfg.reproduce())
        return [fresh, drift]
