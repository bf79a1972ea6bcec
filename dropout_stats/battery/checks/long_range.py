"""repeats and drift: no row of any mask comes back, at any distance, and the keep probability
does not change during a long run.

Detects a row stream that wraps (a row counter kept modulo some number of rows: rows 150 apart
are equal, across calls), rows that repeat within a call at any displacement (every 37 rows),
a generator whose state cycles every few calls (the mask of call i comes back at call i + 3),
and, in the long mode (``drift=``), a mask that comes back hundreds of calls later and a keep
probability that changes after some call (a threshold that drifts once a counter passes 300).
Only these catch: ``corpus.cycles_every_37_calls`` with ``drift=0.01`` (stateful: the uniform's
seed is the call count mod 37; the cycle is longer than the main sequence, so no stored pair of
calls, no position and no seed shows it: the long sequence's 256 calls do).

repeats: every row of the unit mask of every fresh call at the configured rate (the main
sequence, the seed checks' other seeds, the long sequence: each a stream of rows in call order)
is packed into bits and kept; windows of g consecutive rows of a stream (g the fewest rows whose
chance of equalling an independent window is negligible, below) are compared exactly by
sorting, and X counts the pairs of equal windows that do not overlap.  Two non-overlapping
windows of g rows of L units are independent under a correct implementation and equal with
probability (p^2 + q^2)^(gL) exactly, so E[X] <= E = (W choose 2) c^(gL), c = max(p^2 + q^2)
over the correct keeps, and Markov's inequality gives P(X >= k) <= E / k: the p-value is
min(1, E / X), exact-conservative at any size.  g is chosen so that E <= min(1e-30, alpha / m /
1000): a single repeat fails, and a correct implementation fails with probability <= 1e-30.  In the run's Holm family.

drift (long mode only, ``drift=delta``): C calls of fn on the input's first rows (>= 4096
units), C computed from delta; given the total kept K of the N draws, the kept count of the
first t calls is hypergeometric under a correct implementation whatever its keep, and Hoeffding's
theorem bounds its tails by the binomial Chernoff bound exp(-m KL(x/m || K/N)) (for the first t
calls or the other C - t, whichever bound is smaller); two-sided, Bonferroni over the C - 1
splits: conservative at any C, with no normal approximation.  C is the smallest count at which
a change of the keep probability by delta after any call in the middle half of the run is
detected with probability >= 1 - false_pass_rate at the smallest Holm level (normal
approximation of the alternative: the power side only; tests/test_long_range.py simulates it).
In the run's Holm family.  Tested in tests/test_long_range.py.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
from scipy.special import ndtri

from ...report import Check, Finding
from . import Family

PAIR_BOUND = 1e-30  # E[colliding window pairs] of a correct implementation at most
MAX_PACKED = 64 << 20  # bytes of packed rows kept at most (later rows are not compared)
LONG_UNITS = 4096  # units of one call of the long sequence at least (the input's first rows)
MIN_LONG = 16  # calls of the long sequence at least
LONG_OFFSET = 6  # seed[0] offset of the long sequence (0-5 are the other checks')
STREAMS = {"main": "main call", "seed_other": "seed-check call", "long": "long-sequence call"}


class LongRange(Family):
    name = "long_range"
    names = ("repeats", "drift")
    observes = frozenset({"main", "seed_other", "long"})

    def __init__(self, run):
        super().__init__(run)
        self.rows: dict = {}  # stream -> {call index: packed rows (rows, bytes)}
        self.row_units: dict = {}  # stream -> units per row
        self.packed = 0
        self.counts: list = []  # (kept, units) of each long-sequence call
        self.long_calls = 0
        self.long_units = 0

    def statistical(self):
        return ["repeats"] + (["drift"] if self.cfg.drift is not None else [])

    def observe(self, call) -> None:
        if not call.fresh or call.rate != self.cfg.rate:
            return
        m = call.mask
        rows = m.shape[0] if m.ndim >= 2 else 1
        if call.purpose == "long":
            self.counts.append((call.kept, m.size))
        if self.packed + m.size // 8 + rows > MAX_PACKED:
            return
        packed = np.packbits(m.reshape(rows, -1), axis=1)
        self.rows.setdefault(call.purpose, {})[call.index] = packed
        self.row_units[call.purpose] = m.size // rows
        self.packed += packed.nbytes

    # -- the long sequence ------------------------------------------------------------------------
    def after_main(self) -> None:
        cfg, run = self.cfg, self.run
        if cfg.drift is None:
            return
        x, x_np, ns = self.long_input()
        self.long_units = math.prod(ns or x_np.shape)
        needed = long_calls(cfg.keep, cfg.drift, self.long_units, run.alpha_seq, cfg.beta)
        self.long_calls = min(needed, cfg.max_calls)
        if needed > cfg.max_calls:
            run.findings.append(
                Finding(
                    "drift_design",
                    f"the long sequence needs {needed:,} calls of {self.long_units:,} units to detect a drift of "
                    f"{cfg.drift:g}; max_calls ({cfg.max_calls:,}) stops it at {cfg.max_calls:,}, which detects "
                    f"{detectable_drift(cfg.keep, self.long_units, cfg.max_calls, run.alpha_seq, cfg.beta):.3g}",
                    needed,
                )
            )
        for i in range(self.long_calls):
            run.call("long", cfg.rate, run.seed_pair(i, offset=LONG_OFFSET), ns, x=x, x_np=x_np, index=i, fresh=True)

    def long_input(self):
        """The input's first rows, at least LONG_UNITS units (all of it when it is smaller)."""
        cfg, run = self.cfg, self.run
        per_row = math.prod(cfg.shape[1:])
        unit_row = math.prod(run.unit_shape[1:]) if len(run.unit_shape) > 1 else 1
        rows = max(1, min(cfg.shape[0], math.ceil(LONG_UNITS / max(1, unit_row if cfg.noise_shape else per_row))))
        if rows == cfg.shape[0]:
            return run.x, run.x_np, cfg.noise_shape
        ns = None
        if cfg.noise_shape is not None:
            ns = (rows if cfg.noise_shape[0] == cfg.shape[0] else 1,) + tuple(cfg.noise_shape[1:])
        x_np = run.x_np[:rows]
        return run.backend.native(x_np), x_np, ns

    # -- the verdicts ---------------------------------------------------------------------------
    def conclude(self):
        out = [self.repeats()]
        if self.cfg.drift is not None:
            out.append(self.drift())
        return out

    def keeps(self) -> list[float]:
        cfg = self.cfg
        found = [float(keep_of(cfg.rate)) for _, keep_of in cfg.keep_models] or [cfg.keep]
        return [k for k in found + [cfg.keep] if 0 < k < 1] or [cfg.keep]

    def pair_bound(self) -> float:
        """E[repeated windows] of a correct implementation at most: 1e-30, or less, so that one
        repeat is below the smallest share of the budget this entry can get (alpha / m)."""
        return min(PAIR_BOUND, (self.run.alpha_seq or self.cfg.alpha) * 1e-3)

    def repeats(self) -> Check:
        cfg = self.cfg
        c = max(k * k + (1 - k) * (1 - k) for k in self.keeps())
        groups: dict = {}  # units per row -> [stream, ...]: rows of equal length are compared
        for s in self.rows:
            groups.setdefault(self.row_units[s], []).append(s)
        total_pairs, bound, rows_seen, units_seen, found, across = 0, 0.0, 0, 0, [], Counter()
        for units, streams in groups.items():
            ids = row_ids(self.rows, streams)
            rows = sum(len(v) for v in ids.values())
            rows_seen += rows
            units_seen += rows * units
            g = window_rows(rows, units, c, self.pair_bound() / len(groups))
            res = count_repeats(window_ids(ids, g), g)
            if res is None:
                continue
            windows, pairs, nearest, cross = res
            bound += math.comb(windows, 2) * math.exp(g * units * math.log(c))
            total_pairs += pairs
            found += [(n, s, d, g, units) for (s, d), n in nearest.items()]
            across.update(cross)
        if not rows_seen:
            return Check("repeats", None, "statistical", detail="no rows stored")
        p = 1.0 if total_pairs == 0 else min(1.0, bound / total_pairs)
        values = {"pairs": total_pairs, "rows": rows_seen, "bound": bound}
        observed = f"no repeat among {rows_seen:,} rows"
        if total_pairs and not found:  # only windows of two streams are equal: seeds that collide
            (a, b), n = max(across.items(), key=lambda t: t[1])
            words = f"{n:,} rows of the {STREAMS.get(a, a)}s equal rows of the {STREAMS.get(b, b)}s (other seeds)"
            values.update(streams=[a, b], words=words)
            observed = f"{total_pairs:,} repeated windows: {words}"
        elif total_pairs:
            n, s, d, g, units = max(found, key=lambda t: (t[0], -t[2]))
            words, extra = describe(self.rows[s], s, d, cfg.stateful)
            values.update(extra, stream=s, displacement_rows=d, words=words, window_rows=g)
            observed = f"{total_pairs:,} repeated windows: {words}"
        return Check(
            "repeats",
            True,
            "statistical",
            p,
            None,
            units_seen,
            values=values,
            observed=observed,
            expected=f"no repeat (a correct implementation repeats a window with chance <= {self.pair_bound():.2g})",
            detail="every row of every fresh call at the rate, packed and compared exactly at every distance "
            "(within and across calls); p = E / repeats (Markov)",
            reproduce=cfg.reproduce(),
        )

    def drift(self) -> Check:
        cfg = self.cfg
        if len(self.counts) < 2:
            return Check("drift", None, "statistical", detail="fewer than 2 calls in the long sequence")
        kept = np.array([k for k, _ in self.counts], dtype=np.float64)
        units = np.array([n for _, n in self.counts], dtype=np.float64)
        p, t = split_pvalue(kept, units)
        before = kept[:t].sum() / units[:t].sum()
        after = kept[t:].sum() / units[t:].sum()
        return Check(
            "drift",
            True,
            "statistical",
            p,
            None,
            int(units.sum()),
            values={"split": int(t), "before": before, "after": after, "calls": len(kept), "drift": cfg.drift},
            observed=f"kept {before:.6g} in long calls 0-{t - 1}, {after:.6g} in calls {t}-{len(kept) - 1}",
            expected=f"one keep probability over {len(kept)} calls of {int(units[0]):,} units (detects a change "
            f"of {cfg.drift:g} after any call in the middle half)",
            detail="change-point scan over every split of the long sequence: the kept count before it, given the "
            "total, is hypergeometric (Chernoff bound, Hoeffding), Bonferroni over the splits",
            reproduce=cfg.reproduce(),
        )


def row_ids(rows: dict, streams) -> dict:
    """stream -> an id per row (calls in index order), equal exactly when the rows' bits are,
    over every stream of the group."""
    order = [(s, i) for s in streams for i in sorted(rows[s])]
    stacked = np.ascontiguousarray(np.concatenate([rows[s][i] for s, i in order]))
    flat = stacked.view(np.dtype((np.void, stacked.shape[1]))).ravel()
    inverse = np.unique(flat, return_inverse=True)[1].ravel()
    out, at = {}, 0
    for s in streams:
        n = sum(r.shape[0] for r in rows[s].values())
        out[s] = inverse[at : at + n]
        at += n
    return out


def window_rows(rows: int, units: int, c: float, eps: float) -> int:
    """The fewest consecutive rows g with (rows choose 2) c^(g units) <= eps."""
    pairs = max(1, math.comb(max(rows, 2), 2))
    return max(1, math.ceil((math.log(eps) - math.log(pairs)) / (units * math.log(c))))


def window_ids(ids: dict, g: int) -> dict:
    """stream -> an id per window of g consecutive rows, equal exactly when the windows' rows are
    (across streams too): ids of longer windows from pairs of shorter ones, by doubling."""

    def join(a: dict, b: dict, shift: int) -> dict:
        # the window starting at i: a's window at i followed by b's at i + shift
        base = 1 + max(int(v.max()) for v in b.values())  # ids < base: the pair's code is exact
        pairs = {s: a[s][: len(b[s]) - shift] * base + b[s][shift:] for s in a}
        flat = np.concatenate(list(pairs.values()))
        inverse = np.unique(flat, return_inverse=True)[1].ravel()
        out, at = {}, 0
        for s, v in pairs.items():
            out[s], at = inverse[at : at + len(v)].astype(np.int64), at + len(v)
        return out

    ids = {s: v.astype(np.int64) for s, v in ids.items() if len(v) >= g}
    if not ids:
        return {}
    result, length, cur, cur_length = None, 0, ids, 1
    while g:
        if g & 1:
            result = cur if result is None else join(result, cur, length)
            length += cur_length
        g >>= 1
        if g:
            cur = join(cur, cur, cur_length)
            cur_length *= 2
    return result


def count_repeats(wids: dict, g: int):
    """(windows, pairs of equal windows that do not overlap, Counter of (stream, distance to the
    next equal window of the same stream), Counter of (stream, other stream) for equal windows of
    two streams); None when there is no window."""
    if not wids:
        return None
    wid = np.concatenate(list(wids.values()))
    st = np.concatenate([np.full(len(v), k) for k, v in enumerate(wids.values())])
    ps = np.concatenate([np.arange(len(v)) for v in wids.values()])
    n = len(wid)
    order = np.lexsort((ps, st, wid))
    wid, st, ps = wid[order], st[order], ps[order]
    sizes = np.unique(wid, return_counts=True)[1].astype(np.int64)
    pairs = int(np.sum(sizes * (sizes - 1) // 2))
    nearest, across = Counter(), Counter()
    if pairs:
        span = int(ps.max()) + g + 1
        key = (wid * len(wids) + st) * span + ps
        overlap = np.searchsorted(key, key + g, side="left") - np.arange(1, n + 1)
        pairs -= int(overlap.sum())
        same = (wid[1:] == wid[:-1]) & (st[1:] == st[:-1])
        names = list(wids)
        for k, d in zip(st[1:][same], (ps[1:] - ps[:-1])[same], strict=True):
            nearest[(names[k], int(d))] += 1
        other = (wid[1:] == wid[:-1]) & (st[1:] != st[:-1])  # sorted by stream: the lower one first
        for a, b in zip(st[:-1][other], st[1:][other], strict=True):
            across[(names[a], names[b])] += 1
    return n, pairs, nearest, across


def describe(calls: dict, stream: str, d: int, stateful: bool) -> tuple[str, dict]:
    """The repeats of a stream in words: whole masks that come back (the period in calls: the
    commonest distance from a call to the next with the same mask), else rows d apart."""
    order = sorted(calls)
    what = STREAMS.get(stream, stream)
    # the stateful contract's first main call comes before the other checks' calls: main calls
    # 1, 2, ... are consecutive calls of fn, so the period is read from those
    timed = order[1:] if stateful and stream == "main" else order
    masks = np.stack([calls[i].ravel() for i in timed]) if len({calls[i].shape for i in timed}) == 1 else None
    if masks is not None and len(timed) > 1:
        ids = np.unique(masks.view(np.dtype((np.void, masks.shape[1]))).ravel(), return_inverse=True)[1].ravel()
        last, gaps, first_pair = {}, Counter(), None
        for j, m in enumerate(ids):
            if m in last:
                gaps[j - last[m]] += 1
                first_pair = first_pair or (timed[last[m]], timed[j])
            last[m] = j
        if gaps:
            k, n = max(gaps.items(), key=lambda t: (t[1], -t[0]))
            seed = "" if stateful else f", seed[1] + {k}"
            if k == 1 and n == len(timed) - 1:
                return f"the same mask on every {what} ({len(timed)} calls)", {"period_calls": 1}
            if n == len(timed) - k:  # every call from the (k + 1)-th on: a cycle, as far as the calls go
                return (
                    f"the masks cycle with period {k} {what}s: {n} of {len(timed)} have the mask of the one {k} "
                    f"before{seed}",
                    {"period_calls": k},
                )
            if n >= 2:
                return (
                    f"masks come back {k} {what}s later: {n} of {len(timed)} have the mask of the one {k} before"
                    f"{seed} (not every call: no fixed period)",
                    {"period_calls": k},
                )
            # one repeat at each distance seen: a chance collision in a small space of masks
            a, b = first_pair
            total = sum(gaps.values())
            seeds = "" if stateful or stream != "main" else f" (seed[1] = {a} and {b})"
            return (
                f"{what}s {a} and {b}{seeds} drew the same mask"
                + (f", and {total - 1} more pair(s) at other distances" if total > 1 else "")
                + f", among {len(timed)} {what}s and no fixed period: as when the masks (or the seeds, after hashing) "
                "come from a small space and collide by chance",
                {"repeat_calls": [int(a), int(b)]},
            )
    stacked = np.concatenate([calls[i] for i in order])
    r0 = calls[order[0]].shape[0]  # rows per call
    same = np.all(stacked[d:] == stacked[:-d], axis=1)
    where = "within a call" if d < r0 else f"across calls ({d // r0} calls and {d % r0} rows later)"
    return (
        f"rows repeat {d} rows apart, {where}: {int(same.sum()):,} of {len(same):,} rows of the {what}s equal "
        f"the row {d} later",
        {},
    )


def long_calls(keep: float, drift: float, units: int, level: float, beta: float) -> int:
    """Calls of ``units`` units that detect a change of the keep probability by ``drift`` after
    any call in the middle half, at ``level`` (two-sided, Bonferroni over the splits) with miss
    chance ``beta``: the Chernoff threshold of the first quarter against the normal spread of the
    alternative."""
    pq = max(k * (1 - k) for k in (keep, min(1.0, keep + drift), max(0.0, keep - drift)))
    zb = float(-ndtri(beta))
    calls = MIN_LONG
    for _ in range(60):
        bonf = math.log(2 * (calls - 1) / level)
        need = pq * (zb * math.sqrt(16 / 3) + (4 / 3) * math.sqrt(8 * bonf)) ** 2 / (units * drift * drift)
        new = max(MIN_LONG, math.ceil(need))
        if new <= calls:
            break
        calls = new
    return calls


def detectable_drift(keep: float, units: int, calls: int, level: float, beta: float) -> float:
    """The change long_calls() sizes for, at a given number of calls (its inverse)."""
    pq = keep * (1 - keep)
    zb = float(-ndtri(beta))
    bonf = math.log(2 * max(1, calls - 1) / level)
    return math.sqrt(pq / (units * calls)) * (zb * math.sqrt(16 / 3) + (4 / 3) * math.sqrt(8 * bonf))


def _kl(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """KL(Bernoulli(a) || Bernoulli(b)), 0 log 0 = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = np.where(a > 0, a * np.log(a / b), 0.0)
        t2 = np.where(a < 1, (1 - a) * np.log((1 - a) / (1 - b)), 0.0)
    return np.maximum(t1 + t2, 0.0)


def split_pvalue(kept: np.ndarray, units: np.ndarray) -> tuple[float, int]:
    """(p-value, split) of the most extreme split of the calls: the kept count of calls [0, t)
    given the total is hypergeometric; Hoeffding: its tails are at most the binomial Chernoff
    bounds; the smaller of the bounds for [0, t) and [t, C); two-sided; Bonferroni over C - 1."""
    total_k, total_n = kept.sum(), units.sum()
    pi = total_k / total_n
    if pi in (0.0, 1.0):
        return 1.0, 1
    ck, cn = np.cumsum(kept)[:-1], np.cumsum(units)[:-1]
    first = cn * _kl(ck / cn, np.full_like(ck, pi))
    rest = (total_n - cn) * _kl((total_k - ck) / (total_n - cn), np.full_like(ck, pi))
    exponent = np.maximum(first, rest)
    t = int(np.argmax(exponent))
    p = min(1.0, len(ck) * 2 * math.exp(-float(exponent[t])))
    return p, t + 1
