"""row_independence and neighbour_independence: units next to each other are independent.

Detects one mask row shared across the batch (rows agree with probability 1), one draw shared
by neighbouring elements, and any correlation between adjacent rows or adjacent elements.
Only these catch: ``corpus.rows_in_pairs`` with reference=None (batch rows 2j and 2j + 1 share a
mask: row_independence) and ``corpus.correlated_neighbours`` with reference=None (one draw per
pair of neighbours: neighbour_independence).
Test: Fisher's exact test on the 2 x 2 table of disjoint pairs (0, 1), (2, 3), ... and on that
of (1, 2), (3, 4), ... along the first axis (rows of the batch) and the last (neighbours), over
every main call, Bonferroni over the two pairings, each entry in the run's Holm family.
Disjoint pairs are independent of each other under the null, so each table's exact p-value is
valid; together the pairings cover every adjacent pair, so the autocorrelation check leaves
these two lags to this one.  Tested in tests/test_verify.py and tests/test_structure.py.
"""

from __future__ import annotations

import numpy as np

from ...report import Check
from . import Family
from ._common import accumulate_table, table_check


class Pairs(Family):
    name = "pairs"
    names = ("row_independence", "neighbour_independence")

    def __init__(self, run):
        super().__init__(run)
        self.tables = {}

    def statistical(self):
        shape = self.run.unit_shape
        names = []
        if shape[0] > 1 and len(shape) > 1:
            names.append("row_independence")
        if shape[-1] > 1:
            names.append("neighbour_independence")
        return names

    def applies(self) -> bool:
        return bool(self.statistical())

    def observe(self, call) -> None:
        accumulate_pairs(self.tables, call.mask, call.kept)

    def conclude(self):
        shape = self.run.unit_shape
        planned = self.statistical()
        return [
            self.entry(name, axis)
            for name, axis in (("row_independence", 0), ("neighbour_independence", len(shape) - 1))
            if name in planned
        ]

    def entry(self, name: str, axis: int) -> Check:
        """Fisher on each pairing, Bonferroni over the two (disjoint pairs are independent)."""
        checks = [
            table_check(
                name,
                self.tables.get((axis, o)),
                f"pairs along axis {axis} ({'(0,1), (2,3)' if o == 0 else '(1,2), (3,4)'}, ...)",
                self.cfg.reproduce(),
            )
            for o in (0, 1)
        ]
        tested = [c for c in checks if c.pvalue is not None]
        if not tested:
            return checks[0]
        worst = min(tested, key=lambda c: c.pvalue)
        worst.pvalue = min(1.0, worst.pvalue * len(tested))
        worst.samples = sum(c.samples for c in tested)
        worst.detail += f"; the worse of {len(tested)} pairings (Bonferroni)"
        return worst


def accumulate_pairs(tables: dict, m: np.ndarray, kept: int) -> None:
    """2 x 2 tables of disjoint pairs along the first and the last axis, in both pairings:
    (0, 1), (2, 3), ... and (1, 2), (3, 4), ...; tables[(axis, 0 or 1)].  ``kept``: m's kept
    count, which the caller has already made."""
    m = np.ascontiguousarray(m)
    for axis in sorted({0, m.ndim - 1}):
        for o in (0, 1):
            length = m.shape[axis] - o
            length -= length % 2
            if length < 2:
                continue
            table = tables.setdefault((axis, o), np.zeros(4, dtype=np.int64))
            if axis == m.ndim - 1:
                # neighbours along the contiguous last axis: read each pair as one uint16
                # (little-endian: bit 0 is the first of the pair, bit 8 the second)
                whole = o == 0 and length == m.shape[-1]
                v = (m if whole else np.ascontiguousarray(m[..., o : o + length])).view(np.uint16)
                first = int(np.count_nonzero(v & np.uint16(0x0001)))
                second = kept - first if whole else int(np.count_nonzero(v & np.uint16(0x0100)))
                table += (int(np.count_nonzero(v == 0x0101)), first, second, v.size)
                continue
            view = np.moveaxis(m, axis, 0)[o : o + length]
            pairs = view.reshape((length // 2, 2) + view.shape[1:])  # contiguous halves when axis == 0
            accumulate_table(table, pairs[:, 0], pairs[:, 1])
