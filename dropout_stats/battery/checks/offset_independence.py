"""offset_independence: positions 2, 4, 8, ... apart in the flattened mask are independent.

Detects a mask drawn for part of the tensor and tiled, or broadcast along an axis the noise
shape does not name: it repeats at such an offset, far from the neighbours and rows the pair
checks compare.
Only this check catches: ``corpus.tiled_half`` (half the last axis drawn and tiled).
Test: disjoint pairs per power-of-2 offset over the stored masks (packed bits); Fisher's exact
test on the offset whose agreement is most extreme, times the number of offsets (Bonferroni:
its p is at least the smallest of all), in the run's Holm family.  Tested in
tests/test_battery_checks.py (the packed tables against plain numpy, a tiling at every power of
two).
"""
from __future__ import annotations

import math

import numpy as np

from ...report import Check
from . import Family
from ._common import bitcounts, fisher


class OffsetIndependence(Family):
    name = "offset_independence"
    names = ("offset_independence",)
    observes = frozenset()

    def applies(self) -> bool:
        return self.run.units >= 4

    def statistical(self):
        return ["offset_independence"]

    def conclude(self):
        return [offset_check(self.run.stored_masks, self.cfg.reproduce())]


def offset_check(masks: list, reproduce: str) -> Check:
    n_units = masks[0].size
    offsets = [1 << k for k in range(1, n_units.bit_length()) if 2 << k <= n_units]
    # every stored mask at once, 8 positions a byte (the first in the high bit)
    packed = np.packbits(np.stack([m.ravel() for m in masks]), axis=1)
    kept = int(bitcounts(packed).sum(dtype=np.int64))

    def halves(d):
        """The first and second positions of the disjoint pairs at offset d, packed."""
        if d < 8:  # pairs inside a byte: the first half of each 2d-block against the second
            half = np.uint8(0xCC if d == 2 else 0xF0)
            whole = packed[:, : n_units // 8]
            return whole & half, (whole << np.uint8(d)) & half, 8 * (n_units // 8)
        used = n_units - n_units % (2 * d)
        pairs = packed[:, : used // 8].reshape(len(packed), -1, 2, d // 8)
        return pairs[:, :, 0], pairs[:, :, 1], used

    # pick the offset whose both-kept count is most extreme against the pooled keep rate
    # (any choice keeps Bonferroni valid: its exact p is at least the smallest of all)
    p_bar = kept / (len(packed) * n_units)
    z = []
    for d in offsets:
        a, b, used = halves(d)
        pairs_n = len(packed) * used // 2
        both = int(bitcounts(a & b).sum(dtype=np.int64))
        z.append((both - pairs_n * p_bar ** 2) / math.sqrt(pairs_n * p_bar ** 2 * (1 - p_bar ** 2) or 1))
    worst = int(np.argmax(np.abs(z)))
    a, b, used = halves(offsets[worst])
    t = [int(bitcounts(v).sum(dtype=np.int64)) for v in (a & b, a, b)] + [len(packed) * used // 2]
    p, agree = fisher(t)
    expected = (t[1] * t[2] + (t[3] - t[1]) * (t[3] - t[2])) / t[3] ** 2 if t[3] else float("nan")
    samples = sum(len(packed) * (8 * (n_units // 8) if d < 8 else n_units - n_units % (2 * d)) // 2
                  for d in offsets)
    return Check(
        "offset_independence", True, "statistical", min(1.0, p * len(offsets)), None, samples,
        observed=f"offset {offsets[worst]}: agreement {agree:.6g} (z = {z[worst]:.3g})",
        expected=f"{expected:.6g} (independent) at every offset 2 .. {offsets[-1]}",
        detail=f"disjoint pairs at {len(offsets)} power-of-2 offsets of the flattened mask over "
               f"{len(masks)} calls; Fisher exact on the most extreme, Bonferroni over the offsets",
        reproduce=reproduce)
