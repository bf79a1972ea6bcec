"""row_independence and neighbour_independence: units next to each other are independent.

Detects one mask row shared across the batch (rows agree with probability 1), one draw shared
by neighbouring elements, and any correlation between adjacent rows or adjacent elements.
Only these catch: ``corpus.shared_across_batch`` (row_independence) and
``corpus.correlated_neighbours`` (neighbour_independence).
Test: Fisher's exact test on the 2 x 2 table of disjoint pairs (0, 1), (2, 3), ... along the
first axis (rows of the batch) and the last (neighbours), over every main call, each in the
run's Holm family.  Disjoint pairs are independent of each other under the null, so the table's
exact p-value is valid.  Tested in tests/test_verify.py and tests/test_structure.py.
"""
from __future__ import annotations

import numpy as np

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
        return [table_check(name, self.tables.get(axis), f"pairs along axis {axis} (disjoint pairs (0,1), (2,3), ...)",
                            self.cfg.reproduce())
                for name, axis in (("row_independence", 0), ("neighbour_independence", len(shape) - 1))
                if name in planned]


def accumulate_pairs(tables: dict, m: np.ndarray, kept: int) -> None:
    """2 x 2 tables of disjoint pairs (0, 1), (2, 3), ... along the first and the last axis
    (``kept``: m's kept count, which the main loop has already made)."""
    m = np.ascontiguousarray(m)
    for axis in sorted({0, m.ndim - 1}):
        length = m.shape[axis] - m.shape[axis] % 2
        if length < 2:
            continue
        table = tables.setdefault(axis, np.zeros(4, dtype=np.int64))
        if axis == m.ndim - 1 and length == m.shape[-1]:
            # neighbours along the contiguous last axis: read each pair as one uint16
            # (little-endian: bit 0 is the first of the pair, bit 8 the second)
            v = m.view(np.uint16)
            table[0] += np.count_nonzero(v == 0x0101)
            first = np.count_nonzero(v & np.uint16(0x0001))
            table[1] += first
            table[2] += kept - first
            table[3] += v.size
            continue
        view = np.moveaxis(m, axis, 0)[:length]
        pairs = view.reshape((length // 2, 2) + view.shape[1:])  # contiguous halves when axis == 0
        accumulate_table(table, pairs[:, 0], pairs[:, 1])
