"""homogeneity_blocks, homogeneity_strided, homogeneity_axis<a>: one keep rate everywhere.

Detects a keep rate that differs by position while the average is right: a rate that changes
along the last axis, per channel, per row of the batch, in one block of memory, or at every
k-th position (a vectorised kernel whose lanes differ).
Only these catch: ``corpus.position_dependent`` (rate - 0.1 on the first half of the last axis,
rate + 0.1 on the second: right on average).
Test: Pearson's chi-square on the 2 x G table of kept counts per group (16 contiguous blocks;
positions mod 16; each index along a short axis or 16 bins along a long one) over the main
calls, G - 1 degrees of freedom, each entry in the run's Holm family; every expected cell
holds thousands of draws at the default size, where the approximation holds far into the tail.
Tested in tests/test_verify.py and tests/test_structure.py.
"""

from __future__ import annotations

import numpy as np

from ...report import Check
from ...structure import homogeneity_test
from . import Family

GROUPS = 16


class Homogeneity(Family):
    name = "homogeneity"
    needs = frozenset({"per_position"})
    observes = frozenset()

    @property
    def names(self):
        return (
            "homogeneity_blocks",
            "homogeneity_strided",
            *[f"homogeneity_axis{a}" for a in range(len(self.run.unit_shape))],
        )

    def axes(self) -> list[int]:
        shape = self.run.unit_shape
        return [a for a, d in enumerate(shape) if d > 1] if len(shape) > 1 else []

    def statistical(self):
        return ["homogeneity_blocks", "homogeneity_strided", *[f"homogeneity_axis{a}" for a in self.axes()]]

    def conclude(self):
        per_position, calls = self.run.per_position, self.run.main_calls
        flat = per_position.ravel()
        positions = flat.size
        out = []
        g = min(GROUPS, positions)
        edges = np.linspace(0, positions, g + 1).astype(np.int64)
        if g >= 2 and positions % g == 0:  # equal blocks: a reshape sums faster than reduceat
            block_k = flat.reshape(g, -1).sum(axis=1, dtype=np.int64)
        else:
            block_k = np.add.reduceat(flat, edges[:-1], dtype=np.int64) if g >= 2 else flat[:1]
        out.append(self.entry("homogeneity_blocks", block_k, np.diff(edges) * calls, "contiguous blocks of positions"))
        stride = min(GROUPS, positions)
        whole, rest = divmod(positions, stride)
        strided_k = flat[: whole * stride].reshape(whole, stride).sum(axis=0, dtype=np.int64)
        strided_k[:rest] += flat[whole * stride :]
        strided_n = np.full(stride, whole, dtype=np.int64)
        strided_n[:rest] += 1
        out.append(self.entry("homogeneity_strided", strided_k, strided_n * calls, f"positions mod {stride}"))
        for axis in self.axes():
            # per index along the axis when short (a batch's rows), else 16 contiguous bins
            length = per_position.shape[axis]
            others = tuple(a for a in range(per_position.ndim) if a != axis)
            along = per_position.sum(axis=others, dtype=np.int64)
            bins = length if length <= 64 else GROUPS
            edges = np.linspace(0, length, bins + 1).astype(np.int64)
            k = np.add.reduceat(along, edges[:-1])
            n = np.diff(edges) * (positions // length) * calls
            what = f"indices along axis {axis}" if bins == length else f"bins along axis {axis}"
            out.append(self.entry(f"homogeneity_axis{axis}", k, n, what))
        return out

    def entry(self, name, kept, n, what) -> Check:
        if kept.size < 2:
            return Check(name, None, "statistical", detail=f"fewer than 2 {what}")
        r = homogeneity_test(kept, n)
        pooled = kept.sum() / n.sum()
        worst = int(np.argmax(np.abs(kept / n - pooled)))
        return Check(
            name,
            True,
            "statistical",
            r.pvalue,
            None,
            int(n.sum()),
            values={"chi2": r.statistic, "df": int(kept.size - 1)},
            observed=f"chi2 {r.statistic:.4g} on {kept.size - 1} df",
            expected=f"keep rate equal across {kept.size} {what}",
            detail=f"most extreme group {worst}: {kept[worst] / n[worst]:.6g} vs pooled {pooled:.6g}",
            reproduce=self.cfg.reproduce(),
        )
