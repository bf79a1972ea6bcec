"""mask_repeats: no mask row of an attention or recurrent layer comes back exactly, at any
distance (verify_attention's ``mask_repeats``; verify_recurrent's ``input_mask_repeats`` and
``recurrent_mask_repeats``).

The independence entries of those batteries compare neighbours only (sequences 2i and 2i + 1,
queries 2i and 2i + 1, heads 0 and 1, call 1 against call 0 at the same position), so a mask row
that is a copy of a row further away passes them.  Detects, whatever the distance: attention
dropout whose mask is drawn for 4 queries and tiled over the 8 (query q's mask is query q mod
4's), whose batch halves share one mask (micro-batches seeded the same), whose heads h and h + 2
share one, whose mask of call 1 is call 0's moved by a sequence (an RNG offset advanced by too
little); recurrent input and recurrent masks drawn for part of the batch and tiled (sequence b's
mask is sequence b + k's), or moved by a sequence from one call to the next.  Each of those
keeps its rate, its scale and independent neighbours: only this entry fails them
(tests/test_attention.py, tests/test_recurrent.py; Keras, torch modules and Keras 3 on torch).
Not caught: a row equal to another on only some of its units (the independence entries' class),
and a repeat that holds for fewer consecutive rows than a window (below).

The rows: attention, each (call, sequence, head, query) row of the mask over the keys (2 calls);
recurrent, each (call, sequence) row of the input mask, and of the recurrent mask, over the units
(2 calls; with ``per_step=True`` each (call, step, sequence) row).  Each row is packed into bits
and compared exactly with every other, at any distance, by sorting.  One row of 16 keys is too
short for that alone (two independent rows agree with chance 0.68^16 = 0.002 at rate 0.2), so
windows of g consecutive rows are compared, in fixed orders of the rows: along the batch (the
sequence index runs fastest: windows of g sequences at one (call, head, query), for repeats over
calls, heads, queries and sequences alike) and, for attention, along each sequence's (head,
query) rows (for repeats between sequences, and calls).  X counts the pairs of equal windows of
an order that do not overlap (long_range's ``window_ids`` and ``count_repeats``, the code of
verify's ``repeats``).

The bound: under a correct implementation every unit is an independent Bernoulli(p) draw, so two
windows with no row in common agree unit by unit independently, each with chance p^2 + q^2: they
are equal with chance c^(gL) exactly, c = max(p^2 + q^2) over the keep probabilities a correct
implementation may have (the backend's keep model and 1 - rate; the largest, as long_range
takes it), L units per row.  With W windows in an order, E[X] <= E = sum over the orders of
(W choose 2) c^(gL), and Markov's inequality gives P(X >= k) <= E / k: the p-value is
min(1, E / X), valid at any size, no approximation.  g is the fewest rows with E <= bound =
min(1e-30, false_fail_rate / 1000) (the orders share it equally); the entry's level is that
bound, taken from the run's false-fail budget (the other statistical entries share the rest,
false_fail_rate - bound: the same level in floating point).  So a single repeated window fails,
and a correct layer fails this entry with probability <= 1e-30.  At the defaults: attention
(rate 0.2, 56 sequences, 2 heads, 8 queries, 16 keys, c = 0.68) 1,792 rows per order, windows
of 14 rows (224 units); a repeat is found once it holds for 14 consecutive sequences (at a fixed
call, head and query displacement) or 14 consecutive rows of the (head, query) order (at a fixed
displacement between sequences or calls).  Recurrent (332 sequences, 64 units) 664 rows: the
input mask at rate 0.2 in windows of 4 sequences (c = 0.68, 256 units), the recurrent mask at
0.4 in windows of 2 (c = 0.52, 128 units).  Rows too short or too few for two windows of g rows
make the entry not applicable, with the reason.
Tested in tests/test_attention.py and tests/test_recurrent.py.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from ..report import Check
from .checks.long_range import count_repeats, window_ids, window_rows

REPEAT_BOUND = 1e-30  # E[repeated windows] of a correct implementation, at most (per entry)
NOUNS = {
    "call": ("call", "calls"),
    "sequence": ("sequence", "sequences"),
    "head": ("head", "heads"),
    "query": ("query", "queries"),
    "step": ("step", "steps"),
}


def repeat_bound(alpha: float) -> float:
    """The entry's share of the false-fail budget, and the bound on its expected chance repeats:
    1e-30, or a thousandth of the budget when that is smaller (long_range's ``pair_bound``)."""
    return min(REPEAT_BOUND, alpha * 1e-3)


def mask_repeats(name, masks, axes, orders, keeps, bound, what="mask", reproduce="", first=None) -> Check:
    """The entry ``name``: ``masks`` (bool, shape (*rows, units)) has one row per index of the
    row ``axes`` (names, e.g. ("call", "sequence", "head", "query")); each of ``orders`` (tuples
    of those names, the fastest last) arranges the rows for windows of consecutive rows.
    ``keeps``: the keep probabilities a correct implementation may have; ``bound``: E[chance
    repeats] at most, and the entry's level; ``first``: axis -> the index its first row has in
    words (0 unless named: the recurrent mask's steps start at 1)."""
    masks = np.asarray(masks, dtype=bool)
    shape, units = masks.shape[:-1], masks.shape[-1]
    rows = math.prod(shape)
    cs = [k * k + (1 - k) * (1 - k) for k in keeps if 0 < k < 1]
    if not cs or units == 0:
        return Check(name, None, "statistical", detail="nothing is dropped: no mask to compare")
    c = max(cs)
    share = bound / len(orders)
    g = window_rows(rows, units, c, share)
    while g <= rows and math.comb(max(rows - g + 1, 0), 2) * math.exp(g * units * math.log(c)) > share:
        g += 1  # floating point: the bound holds as computed
    if rows < 2 * g:
        return Check(
            name,
            None,
            "statistical",
            detail=f"{rows:,} rows of {units} units: a chance repeat below {bound:.2g} needs windows of {g} rows, "
            "and fewer than two fit",
        )
    packed = {}  # order -> row ids in that order
    total, expected, nearest = 0, 0.0, Counter()
    for order in orders:
        perm = [axes.index(a) for a in order] + [len(axes)]
        flat = np.ascontiguousarray(np.packbits(masks.transpose(perm).reshape(rows, units), axis=1))
        ids = np.unique(flat.view(np.dtype((np.void, flat.shape[1]))).ravel(), return_inverse=True)[1].ravel()
        packed[order] = ids.astype(np.int64)
        windows, pairs, near, _ = count_repeats(window_ids({order: packed[order]}, g), g)
        expected += math.comb(windows, 2) * math.exp(g * units * math.log(c))
        total += pairs
        nearest.update(near)
    p = 1.0 if total == 0 else min(1.0, expected / total)
    values = {"pairs": total, "rows": rows, "units": units, "window_rows": g, "bound": expected, "c": c}
    observed = f"no repeat among {rows:,} rows of {units} units (windows of {g} rows)"
    if total:
        (order, d), _ = max(nearest.items(), key=lambda t: (t[1], -t[0][1]))
        delta = _displacement(packed[order], [shape[axes.index(a)] for a in order], order, d)
        words, extra = describe(masks, axes, [delta.get(a, 0) for a in axes], what, first or {})
        values.update(extra, words=words)
        observed = f"{total:,} repeated windows of {g} rows: {words}"
    lines = " and ".join(f"({', '.join(o)})" for o in orders)
    orders_word = "orders" if len(orders) > 1 else "order"
    return Check(
        name,
        bool(p > bound),
        "statistical",
        p,
        bound,
        rows * units,
        values=values,
        observed=observed,
        expected=f"no repeat (a correct layer repeats a window of {g} rows with chance <= {expected:.2g})",
        detail=f"every ({', '.join(axes)}) row of the {what} ({units} units) compared exactly with every other, "
        f"at any distance: windows of {g} consecutive rows in the {orders_word} {lines} (the last index fastest); "
        "p = E / repeats (Markov)",
        reproduce=reproduce,
    )


def _displacement(ids, shape, order, d) -> dict:
    """The commonest displacement, per axis, between a row and the equal row d rows later in
    this order."""
    i = np.flatnonzero(ids[:-d] == ids[d:])
    a = np.stack(np.unravel_index(i, shape), axis=1)
    b = np.stack(np.unravel_index(i + d, shape), axis=1)
    deltas, counts = np.unique(b - a, axis=0, return_counts=True)
    return dict(zip(order, (int(v) for v in deltas[int(np.argmax(counts))]), strict=True))


def _plural(axis, k) -> str:
    return NOUNS[axis][0 if abs(k) == 1 else 1]


def describe(masks, axes, delta, what, first=None) -> tuple[str, dict]:
    """The repeat in words: which row is which (the displacement over the row axes, indices from
    ``first``: axis -> its first index, 0 by default) and in how many rows it holds."""
    first = first or {}
    src, dst = [], []
    for n, k in zip(masks.shape[:-1], delta, strict=True):
        src.append(slice(max(0, -k), n - max(0, k)))
        dst.append(slice(max(0, k), n - max(0, -k)))
    eq = np.all(masks[tuple(src)] == masks[tuple(dst)], axis=-1)
    n_eq, n_all = int(eq.sum()), int(eq.size)
    moved = [(a, k) for a, k in zip(axes, delta, strict=True) if k]
    rows = f"({', '.join(axes)}) rows"
    extra = {"displacement": dict(moved), "equal_rows": n_eq, "compared_rows": n_all}
    if len(moved) == 1:
        (axis, k), at = moved[0], axes.index(moved[0][0])
        per = eq.sum(axis=tuple(j for j in range(eq.ndim) if j != at))
        i = int(np.argmax(per))
        x = i + first.get(axis, 0)
        others = [a for a in axes if a != axis]
        of = NOUNS[others[0]][1] if len(others) == 1 else f"({', '.join(others)}) rows"
        words = (
            f"{axis} {x + k}'s {what} is {axis} {x}'s ({k} {_plural(axis, k)} apart) in {int(per[i]):,} of "
            f"{eq.size // per.size:,} {of}; {n_eq:,} of {n_all:,} {rows} equal the row {k} {_plural(axis, k)} later"
        )
        return words, extra
    parts = ", ".join(f"{k:+d} {_plural(a, k)}" for a, k in moved)
    x = [int(v) + s.start for v, s in zip(np.argwhere(eq)[0], src, strict=True)] if n_eq else [s.start for s in src]
    x = [v + first.get(a, 0) for v, a in zip(x, axes, strict=True)]
    here = ", ".join(f"{a} {x[axes.index(a)]}" for a, _ in moved)
    there = ", ".join(f"{a} {x[axes.index(a)] + k}" for a, k in moved)
    words = f"({there})'s {what} is ({here})'s ({parts}): {n_eq:,} of {n_all:,} {rows} equal the row at {parts}"
    return words, extra
