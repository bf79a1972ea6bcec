"""count_dispersion: kept counts vary from call to call, row to row and block to block exactly
as much as independent draws make them vary, no less and no more.

Detects a mask that keeps a fixed number of units (exactly round(keep x n) per row, per call,
or per block of units inside a row: a random permutation, an argsort of uniforms, a top-k) and
counts that vary too much (a keep probability drawn afresh per row, per call or per block).
Both keep the right fraction on average: the keep-fraction test, a test of the mean, is not
built to see them.
Only this check catches: ``corpus.fixed_count_per_row`` (exactly round(keep x n) units kept in
every row, at positions an argsort of uniforms picks: every unit is kept with probability keep,
every position and row alike).
Test: under a correct implementation the units of the main calls are i.i.d. Bernoulli(p), so
given the total kept in a group of units, the count in one half of it is hypergeometric,
whatever p is (none of the keep models is assumed).  Each component splits its groups in two
down a binary tree (the calls: the main calls' totals, dyadic pairs, then the groups left unpaired
merged into unequal halves;
the rows: each call's rows in dyadic pairs; the blocks: each row's aligned blocks of b units,
b the smallest power of two >= 64 that gives at most 1024 comparisons a call, in pairs up to half
the row), and the splits of one tree are independent given its root total.  Each split's
deviation |a - s/2| (a the first half's count, s the pair's) is turned into an exactly uniform
u by the randomized probability integral transform (seeded by the run's seed), the
hypergeometric probabilities computed from the pmf at the centre (betaln) and the ratio
recurrence, a small tail summed from the tail outward;
Fisher's -2 sum log u is then chi-square with 2n degrees of freedom exactly (n splits).  Both
tails: too large means counts too variable, too small counts too even.  Weighted Bonferroni over
the components (calls 1/3, rows 1/3, blocks 1/3 split over its block sizes; the weights of a
component the shape has not go to the others): exact at any size, in the run's Holm family.
Power (normal theory for the alternative): Fisher's statistic has 98% of the Pitman efficacy of
sum z^2 against a change of variance; at
the default size (5 calls of 64 x 4096) it detects with probability >= 1 - 1e-3 at the smallest
Holm level a variance ratio (observed / binomial) of the row counts below 0.48 or above 2.0, of
the block counts (b = 256) below 0.77 or above 1.28, and of the call totals below 1e-5 or above
520.  A fixed count lands every split of its component on its centre: Fisher's statistic is then
at most 2 sum r0 (r0 the centre's probability) whatever the randomization, a certain catch (per
call at 5 calls: p <= ~2e-9).  The probabilities are computed in float64 (relative error ~1e-9 at
a million units: a negligible distortion of u).  Tested in tests/test_dispersion.py.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

from ...report import Check
from . import Family
from ._common import bitcounts

SPLITS_PER_CALL = 1024  # block comparisons of one call at most (the block size follows)
MIN_BLOCK = 64  # units of the smallest block (smaller blocks: neighbour_independence sees -1/(b - 1))
TAIL = 1e-6  # below it a split's tail probability is summed from the tail, not as 1 - the rest
SEED_TAG = 0xD15  # the randomized transform's stream: (run seed, SEED_TAG)


class CountDispersion(Family):
    name = "count_dispersion"
    names = ("count_dispersion",)

    def __init__(self, run):
        super().__init__(run)
        shape = run.unit_shape
        self.rows = shape[0] if len(shape) > 1 else 1
        self.length = run.units // self.rows  # units of a row
        self.block = max(MIN_BLOCK, 1 << max(0, math.ceil(math.log2(max(1, run.units) / SPLITS_PER_CALL))))
        self.blocks = self.length // self.block  # aligned blocks of a row (the rest of the row is left out)
        self.totals: list[int] = []
        self.row_counts: list[np.ndarray] = []
        self.block_counts: list[np.ndarray] = []
        self.skipped = 0

    def statistical(self):
        return ["count_dispersion"]

    def components(self) -> list[str]:
        """The components this shape has (decided before any draw: the weights depend on it only)."""
        return ["calls"] + (["rows"] if self.rows > 1 else []) + (["blocks"] if self.blocks >= 2 else [])

    def observe(self, call) -> None:
        if call.inconsistent:  # not draws of units (noise_shape_consistency fails it)
            self.skipped += 1
            return
        self.totals.append(call.kept)
        if self.rows == 1 and self.blocks < 2:
            return
        counts8 = bitcounts(np.packbits(call.mask.reshape(self.rows, self.length), axis=1))
        if self.rows > 1:
            self.row_counts.append(counts8.sum(axis=1, dtype=np.int64))
        if self.blocks >= 2:
            c = counts8[:, : self.blocks * (self.block // 8)].astype(np.uint16 if self.block < 1 << 16 else np.uint32)
            while c.shape[1] > self.blocks:  # adjacent bytes summed in pairs until one column a block
                c = c[:, 0::2] + c[:, 1::2]
            self.block_counts.append(c)

    def conclude(self):
        name = self.name
        calls = len(self.totals)
        if calls < 2:
            return [Check(name, None, "statistical", detail=f"{calls} main call(s) with whole units: no split to test")]
        rng = np.random.default_rng([self.cfg.seed, SEED_TAG])
        totals = np.array(self.totals, dtype=np.int64)[None, :]
        groups = [("calls", self.run.units, levels_of(totals))]  # (component, first level's half, levels)
        if self.rows > 1:
            groups.append(("rows", self.length, levels_of(np.array(self.row_counts, dtype=np.int64))))
        if self.blocks >= 2:
            levels = levels_of(np.concatenate(self.block_counts).astype(np.int64))
            groups += [("blocks", self.block << i, [lv]) for i, lv in enumerate(levels)]
        stats_ = equal_splits([(n << i, lv) for _, n, lvs in groups for i, lv in enumerate(lvs)], rng)
        parts, at = {}, 0
        for comp, n, lvs in groups:
            st = _merge(stats_[at : at + len(lvs)], n)
            at += len(lvs)
            if comp == "calls":
                _merge_into(st, unequal_merges(totals[0], self.run.units, rng))
            parts.setdefault(comp, []).append(_finish(st))
        return [self.check(parts, calls)]

    def check(self, parts: dict, calls: int) -> Check:
        share = 1 / len(parts)
        tested = []  # (p / weight, component, statistic)
        for comp, stats_ in parts.items():
            for st in stats_:
                tested.append((st["p"] / (share / len(stats_)), comp, st))
        adjusted, comp, worst = min(tested, key=lambda t: t[0])
        p = min(1.0, adjusted)
        what = _WHAT[comp] + (f" of {worst['n_half']:,} units" if comp == "blocks" else "")
        observed = (
            f"{comp}: variance ratio {worst['ratio']:.3g} over {worst['splits']:,} {what}"
            if worst["splits"]
            else f"{comp}: no comparison with kept and dropped units"
        )
        summary = "; ".join(
            f"{c} {min(s['ratio'] for s in sts):.3g}"
            + (f"-{max(s['ratio'] for s in sts):.3g}" if len(sts) > 1 else "")
            + f" ({sum(s['splits'] for s in sts):,} splits)"
            for c, sts in parts.items()
        )
        words = ""
        if worst["splits"]:
            how = "less" if worst["side"] == "low" else "more"
            words = (
                f"kept counts vary {how} than independent draws allow: {_WORDS[comp]}"
                + (f" of {worst['n_half']:,} units" if comp == "blocks" else "")
                + f" has variance ratio {worst['ratio']:.3g} of the binomial's"
            )
        values = {
            "component": comp,
            "ratio": worst["ratio"],
            "splits": worst["splits"],
            "fisher": worst["fisher"],
            "df": 2 * worst["splits"],
            "words": words,
            **{f"{c}_ratio": [s["ratio"] for s in sts] for c, sts in parts.items()},
            **{f"{c}_p": [s["p"] for s in sts] for c, sts in parts.items()},
        }
        skipped = f"; {self.skipped} call(s) with units of mixed fate left out" if self.skipped else ""
        return Check(
            self.name,
            True,
            "statistical",
            p,
            None,
            calls * self.run.units,
            values=values,
            observed=observed,
            expected="variance ratio 1 (binomial counts; exact given the totals, whatever the keep probability)",
            detail=f"variance ratios: {summary}; Fisher's test on the randomized exact hypergeometric p-values of "
            f"the splits, two-sided, weighted Bonferroni over {len(tested)} statistics{skipped}",
            reproduce=self.cfg.reproduce(),
        )


_WHAT = {
    "calls": "splits of the main calls' totals",
    "rows": "splits of rows within a call",
    "blocks": "splits of blocks",
}
_WORDS = {"calls": "the total of a call", "rows": "the count of a row", "blocks": "the count of a block"}


def pair_levels(counts: np.ndarray):
    """Dyadic pairs along the last axis: cells (2i, 2i + 1), then those pairs' sums in pairs, and
    so on.  Returns the levels, each (first, both): the first cell's count and the pair's, and
    the cells left unpaired (level, counts) with the top last: together they cover every cell."""
    levels, unpaired = [], []
    level = 0
    while counts.shape[1] >= 2:
        half = counts.shape[1] // 2
        if counts.shape[1] % 2:
            unpaired.append((level, counts[:, -1]))
        first = counts[:, 0 : 2 * half : 2]
        both = first + counts[:, 1 : 2 * half : 2]
        levels.append((first, both))
        counts = both
        level += 1
    unpaired.append((level, counts[:, 0]))
    return levels, unpaired


def levels_of(counts: np.ndarray):
    return pair_levels(counts)[0]


def unequal_merges(totals: np.ndarray, units: int, rng) -> dict:
    """The calls left unpaired by the dyadic pairs, merged from the smallest group up (unequal
    halves), so that every call is in one binary tree of calls - 1 splits."""
    unpaired = pair_levels(totals[None, :])[1]
    (lvl, acc), rest = unpaired[0], unpaired[1:]
    acc_cells, acc = 1 << lvl, int(acc[0])
    rows = []
    for lvl, count in rest:
        cells, count = 1 << lvl, int(count[0])
        rows.append((acc_cells * units, cells * units, acc + count, acc))
        acc_cells, acc = acc_cells + cells, acc + count
    n1, n2, s, a = (np.array([r[i] for r in rows], dtype=np.int64) for i in range(4))
    keep = (s > 0) & (s < n1 + n2)
    n1, n2, s, a = n1[keep], n2[keep], s[keep], a[keep]
    stat = _empty()
    if s.size:
        u, w = unequal_uniforms(n1, n2, s, a, rng.random(s.size))
        m = (n1 + n2).astype(np.float64)
        var = s * (m - s) * n1 * n2 / (m * m * (m - 1))
        stat.update(fisher=float(_fisher(u, w).sum()), splits=int(s.size))
        stat.update(dev2=float(((a - s * n1 / m) ** 2).sum()), var=float(var.sum()))
    return stat


def _empty() -> dict:
    return {"fisher": 0.0, "splits": 0, "dev2": 0.0, "var": 0.0}


def _merge(stats_: list, n_half: int) -> dict:
    out = {**_empty(), "n_half": n_half}
    _merge_into(out, *stats_)
    return out


def _merge_into(out: dict, *stats_) -> None:
    for st in stats_:
        for k in ("fisher", "splits", "dev2", "var"):
            out[k] += st[k]


def _fisher(u, w):
    """-2 log u, from the more accurate of u and 1 - u."""
    with np.errstate(divide="ignore"):
        return np.where(u <= 0.5, -2 * np.log(np.maximum(u, 1e-300)), -2 * np.log1p(-np.minimum(w, 0.5)))


def equal_splits(levels: list, rng) -> list[dict]:
    """Fisher's statistic of each level's equal splits: levels = [(n, (first, both))], halves of
    n units.  One computation for all of them (symmetric_uniforms), one uniform v per split."""
    n_all, s_all, a_all, sizes = [], [], [], []
    for n, (first, both) in levels:
        s, a = both.ravel(), first.ravel()
        keep = (s > 0) & (s < 2 * n)  # a split with every unit kept, or none, has one outcome
        s, a = s[keep], a[keep]
        n_all.append(np.full(s.size, n, dtype=np.int64))
        s_all.append(s)
        a_all.append(a)
        sizes.append(s.size)
    n, s, a = (np.concatenate(x) for x in (n_all, s_all, a_all))
    out = []
    if not s.size:
        return [_empty() for _ in levels]
    u, w = symmetric_uniforms(n, s, a, rng.random(s.size))
    f = _fisher(u, w)
    dev2, var = (a - s / 2) ** 2, s * (2 * n - s) / (4 * (2 * n - 1.0))
    edges = np.concatenate([[0], np.cumsum(sizes)])
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        out.append(
            {
                "fisher": float(f[lo:hi].sum()),
                "splits": int(hi - lo),
                "dev2": float(dev2[lo:hi].sum()),
                "var": float(var[lo:hi].sum()),
            }
        )
    return out


def _finish(stat: dict) -> dict:
    df, f = 2 * stat["splits"], stat["fisher"]
    if not df:
        return {**stat, "p": 1.0, "ratio": float("nan"), "side": "high"}
    upper, lower = float(special.chdtrc(df, f)), float(special.chdtr(df, f))
    return {
        **stat,
        "p": min(1.0, 2 * min(upper, lower)),
        "ratio": stat["dev2"] / stat["var"],
        "side": "low" if lower < upper else "high",
    }


def _lchoose(n, k):
    # log C(n, k) through betaln, which keeps its digits at millions (gammaln's difference does not)
    return -np.log1p(n) - special.betaln(n - k + 1.0, k + 1.0)


def symmetric_uniforms(n: np.ndarray, s: np.ndarray, a: np.ndarray, v: np.ndarray):
    """(u, 1 - u) for each split of 2n units into halves of n, s kept, a in the first half:
    u = P(D > d) + v P(D = d) with D = |2A - s|, A hypergeometric, d the observed |2a - s|, so
    u is uniform on (0, 1) exactly under independence (v uniform).  The distribution is
    symmetric about s / 2: its rings j = 0, 1, ... (A = ceil(s/2) + j or its mirror) are summed
    outward from the centre, up to the ring observed, for each distinct (n, s)."""
    odd = s & 1
    j = (np.abs(2 * a - s) - odd) >> 1
    # distinct (n, s): sort by both, keep the first of each run (few when the halves are small)
    order = np.lexsort((s, n))
    ns, ss = n[order], s[order]
    first = np.ones(s.size, dtype=bool)
    first[1:] = (ns[1:] != ns[:-1]) | (ss[1:] != ss[:-1])
    key_of = np.empty(s.size, dtype=np.int64)
    key_of[order] = np.cumsum(first) - 1
    kn, ks = ns[first].astype(np.float64), ss[first].astype(np.float64)
    # rings to sum for each (n, s): up to the farthest observed
    length = np.maximum.reduceat(j[order], np.flatnonzero(first)) + 1
    starts = np.cumsum(length) - length
    seg = np.repeat(np.arange(kn.size), length)
    k = np.floor((ks + 1) / 2)[seg] + (np.arange(seg.size) - starts[seg])  # A at each ring
    sn, nn = ks[seg], kn[seg]
    with np.errstate(divide="ignore"):
        step = np.log(np.maximum((sn - k) * (nn - k), 0.0)) - np.log((k + 1) * (nn - sn + k + 1))
    step[starts + length - 1] = 0.0  # the step past a key's last ring is never taken (and may be -inf)
    climb = np.cumsum(step) - step  # sum of the steps before each ring, across keys
    centre = np.floor((ks + 1) / 2)
    log_ring = (
        climb - climb[starts][seg] + (_lchoose(kn, centre) + _lchoose(kn, ks - centre) - _lchoose(2 * kn, ks))[seg]
    )
    ring = np.exp(log_ring) * 2  # P(A = ceil(s/2) + j) and its mirror
    ring[starts] *= np.where(ss[first] & 1, 1.0, 0.5)  # one centre for an even s, two for an odd one
    cum = np.cumsum(ring)
    base = cum[starts] - ring[starts]
    at_index = starts[key_of] + j
    at = ring[at_index]
    through = cum[at_index] - base[key_of]
    beyond = 1.0 - through
    edge = (s + 1) // 2 + j >= np.minimum(n, s)  # the last ring of the support: nothing beyond
    beyond[edge] = 0.0
    far = (beyond < TAIL) & ~edge  # 1 - (the rest) has lost its digits there: sum the tail itself
    if far.any():
        sf, nf = s[far].astype(np.float64), n[far].astype(np.float64)
        beyond[far] = 2 * hypergeom_tail(np.floor((sf + 1) / 2) + j[far] + 1, 2 * nf, sf, nf, up=True)
    u = beyond + v * at
    return u, (through - at) + (1 - v) * at


def unequal_uniforms(n1, n2, s, a, v):
    """(u, 1 - u) for splits into halves of n1 and n2 units: the randomized one-sided transform
    U made two-sided, u = 2 min(U, 1 - U), uniform exactly.  The smaller tail of A at a is
    summed (hypergeom_tail), the other side is its complement."""
    m, s, a, n1 = (np.asarray(x, dtype=np.float64) for x in (n1 + n2, s, a, n1))
    at = np.exp(_hypergeom_logpmf(a, m, s, n1))
    low = a <= s * n1 / m
    lower, upper = np.zeros(a.shape), np.zeros(a.shape)
    if low.any():
        lower[low] = hypergeom_tail(a[low] - 1, m[low], s[low], n1[low], up=False)
    if not low.all():
        upper[~low] = hypergeom_tail(a[~low] + 1, m[~low], s[~low], n1[~low], up=True)
    lower[~low] = 1.0 - upper[~low] - at[~low]
    upper[low] = 1.0 - lower[low] - at[low]
    u_low, u_high = lower + v * at, upper + (1 - v) * at
    return 2 * np.minimum(u_low, u_high), np.abs(u_high - u_low)


def _hypergeom_logpmf(k, m, s, n1):
    """log P(A = k), A the kept units among n1 drawn from m units of which s are kept."""
    low = np.maximum(0, s + n1 - m)
    inside = (k >= low) & (k <= np.minimum(s, n1))
    kk = np.where(inside, k, low)  # a valid argument everywhere (no warning), replaced below
    return np.where(inside, _lchoose(s, kk) + _lchoose(m - s, n1 - kk) - _lchoose(m, n1), -np.inf)


def hypergeom_tail(k0, m, s, n1, up: bool) -> np.ndarray:
    """P(A >= k0) (up) or P(A <= k0), summed from k0 outward by the ratio recurrence in chunks
    until the rest is below 1e-18 of the sum: past the mode the ratios only fall (the pmf is
    log-concave), so the rest is at most a geometric series, which is added."""
    k0, m, s, n1 = np.broadcast_arrays(*(np.atleast_1d(np.asarray(x, dtype=np.float64)) for x in (k0, m, s, n1)))
    total = np.zeros(k0.shape)
    start = k0.copy()
    todo = np.ones(k0.shape, dtype=bool)
    sigma = np.sqrt(s * (m - s) * n1 * (m - n1) / (m * m * np.maximum(m - 1, 1)))
    step = 1.0 if up else -1.0
    while todo.any():
        idx = np.flatnonzero(todo)
        length = int(min(1 << 16, 12 * sigma[idx].max() + 32))
        k = start[idx, None] + step * np.arange(length)[None, :]
        sk, mk, nk = s[idx, None], m[idx, None], n1[idx, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            if up:
                ratio = np.maximum((sk - k) * (nk - k), 0.0) / ((k + 1) * (mk - sk - nk + k + 1))
            else:
                ratio = np.maximum(k * (mk - sk - nk + k), 0.0) / ((sk - k + 1) * (nk - k + 1))
            log_terms = _hypergeom_logpmf(k[:, :1], mk, sk, nk) + np.concatenate(
                [np.zeros((idx.size, 1)), np.cumsum(np.log(ratio[:, :-1]), axis=1)], axis=1
            )
        terms = np.exp(log_terms)
        terms[np.isnan(terms)] = 0.0  # past the support
        total[idx] += terms.sum(axis=1)
        last, rho = terms[:, -1], ratio[:, -1]
        rest = np.where(rho < 1, last * rho / np.maximum(1 - rho, 1e-300), np.inf)
        done = (rest <= 1e-18 * total[idx]) | (last == 0)
        total[idx[done]] += np.where(last[done] > 0, rest[done], 0.0)
        todo[idx[done]] = False
        start[idx] += step * length
    return total
