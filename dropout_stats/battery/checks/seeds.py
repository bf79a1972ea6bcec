"""seed_determinism, seed_independence and seed_correlation: the seed decides the mask, all of it.

Detects a seed component ignored (every call with the same seed[0] draws one mask), the two
components mixed into one number ((s + 1, i) collides with (s, i + 1)), hidden state (the same
seed gives another output on the second call), a seed that moves the mask instead of redrawing
it (seed (s + 1, i) draws the mask of (s, i) shifted by one position, by k positions, by a row),
the high bits of a component ignored (a seed cut to 16 bits: seeds 2**16 apart collide), and its low
bits lost far from 0 (a seed cast to float32: 2**30 + 2 and 2**30 + 3 collide).
Only these catch: ``corpus.mixes_seed`` (seed[0] + seed[1] as one number: (s + 1, i) draws
(s, i + 1)'s mask; each call alone is a good mask); only seed_correlation catches a mask shifted
or rows rotated per seed[0] step, and seed[0] cut to 16 bits (tests/test_seed_shift.py).
Tests: seed_determinism is exact (two calls with seed (s + 3, 0) on the input's first rows,
compared bit for bit).
seed_independence is Fisher's exact test on the 2 x 2 tables of masks from neighbouring seeds
((s, i) against (s, i + 1), (s + 1, i), and (s + 1, i) against (s, i + 1)), Bonferroni over the
three, in the run's Holm family.
seed_correlation compares, on the flattened masks, B[u + d] with A[u] at every displacement d:
the same pairs of neighbouring seeds at every d != 0, and the determinism call's mask with two
calls on its input whose seed has a high bit of one component flipped (``runner.far_seed_pair``:
bit 30, or where the backend's seed form puts it), those two with each other, and each with a call
whose seed also has bit 0 of that component flipped (lost by a seed passed through float32), at
every d.
One displacement's pairs use each unit once, so for independent masks of i.i.d. units its count
of both-kept pairs is hypergeometric given the table's margins, whatever the keep probability;
Hoeffding's Chernoff bound for sampling without replacement, over the table's four cells, bounds
its two-sided p-value (provably conservative), and Bonferroni over every displacement of every
comparison makes the smallest valid wherever it was found, in the run's Holm family.  Which d:
for masks of up to 4,096 units every table is counted at once by FFT; larger masks are folded
modulo 4,096 and 2,187 (coprime: the two residues name d) and two small folded
cross-correlations point to d, whose table is then counted exactly.  Detects a shifted copy of
the whole mask at any displacement (64 noise standard deviations out in the fold), of a share
f >= ~0.1 of it, and at the displacement found a correlation rho over m pairs once
rho * sqrt(m) clears ~8.5 (up to 12; level 1e-7, 2e6 displacements).  Stateless contract only.
Tested in tests/test_verify.py and tests/test_seed_shift.py.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import fft as sfft
from scipy.special import rel_entr

from ...report import Check
from . import Family
from ._common import accumulate_table, fisher

DIRECT = 1 << 12  # masks up to this many units: every displacement's table counted by FFT
FOLDS = (1 << 12, 3**7)  # coprime moduli for larger masks: the two residues name the displacement
CANDIDATES = 1  # displacements counted exactly per comparison (folded masks)
FAR = ((0, False), (1, False), (0, True), (1, True))  # the far calls: (component, bit 0 flipped too)


class Seeds(Family):
    name = "seeds"
    names = ("seed_determinism", "seed_independence", "seed_correlation")
    observes = frozenset({"seed_repeat", "seed_other", "seed_far"})

    def __init__(self, run):
        super().__init__(run)
        self.repeats, self.others, self.far = [], [], []
        self.correlated = None  # seed_correlation, computed on the worker while the main calls go on

    def applies(self) -> bool:
        return not self.cfg.stateful

    @property
    def correlates(self) -> bool:
        return self.run.units >= 2  # one unit has no displacement but 0, and far seeds add one table

    def statistical(self):
        return ["seed_independence"] + (["seed_correlation"] if self.correlates else [])

    def before_main(self) -> None:
        run, cfg = self.run, self.cfg
        # (s, i) vs (s, i + 1); (s, i) vs (s + 1, i); (s + 1, i) vs (s, i + 1): catches a seed
        # component ignored, or the two components mixed into one number
        for i in range(min(run.store_limit, cfg.max_calls) - 1):
            run.call("seed_other", cfg.rate, run.seed_pair(i, offset=1), cfg.noise_shape, index=i, fresh=True)
        # determinism on a small input: the same seed twice
        x, x_np, ns = run.small_input()
        for i in range(2):
            run.call("seed_repeat", cfg.rate, run.seed_pair(0, offset=3), ns, x=x, x_np=x_np, index=i, fresh=i == 0)
        if self.correlates:  # the high bit of each component flipped (and with it bit 0), on the
            # determinism call's input
            for i, (comp, low) in enumerate(FAR):
                pair = run.far_seed_pair(comp, offset=3, low=low)[0]
                run.call("seed_far", cfg.rate, pair, ns, x=x, x_np=x_np, index=i, fresh=True)

    def more(self) -> bool:
        return self.run.main_calls < self.run.store_limit  # every seed_other call gets its partners

    def stored(self, masks) -> None:
        # every mask seed_correlation reads exists (the seed calls came before the main sequence)
        if self.correlates:
            self.run.later(lambda: setattr(self, "correlated", self.correlation(masks)))

    def observe(self, call) -> None:
        {"seed_repeat": self.repeats, "seed_other": self.others, "seed_far": self.far}[call.purpose].append(call)

    def conclude(self):
        checks = [self.determinism(), self.independence()]
        if self.correlates:
            checks.append(self.correlated or self.correlation(self.run.stored_masks))
        return checks

    def determinism(self) -> Check:
        cfg, run = self.cfg, self.run
        y0, y0b = (c.y for c in self.repeats)
        uint = run.fmt.uint
        same = np.array_equal(y0.view(uint), y0b.view(uint))
        return Check(
            "seed_determinism",
            same,
            samples=2 * y0.size,
            observed="identical" if same else "different outputs",
            expected="the same seed gives the same output",
            detail="" if same else f"two calls with seed {list(run.seed_pair(0, offset=3))} differ",
            reproduce=cfg.reproduce(
                f"fn(x[:{y0.shape[0]}], {cfg.rate}, seed={list(run.seed_pair(0, offset=3))}) twice"
            ),
        )

    def independence(self) -> Check:
        cfg = self.cfg
        stored = self.run.stored_masks
        tables = [np.zeros(4, dtype=np.int64) for _ in range(3)]
        for i in range(len(stored) - 1):
            accumulate_table(tables[0], stored[i], stored[i + 1])
        for i, c in enumerate(self.others[: len(stored) - 1]):
            accumulate_table(tables[1], stored[i], c.mask)
            accumulate_table(tables[2], stored[i + 1], c.mask)
        results = [fisher(t) for t in tables]
        labels = ["seed[1] + 1", "seed[0] + 1", "(seed[0] + 1, i) against (seed[0], i + 1)"]
        worst = int(np.argmin([r[0] for r in results]))
        p = min(1.0, min(r[0] for r in results) * 3)  # Bonferroni over the three comparisons
        return Check(
            "seed_independence",
            True,
            "statistical",
            p,
            None,
            int(sum(t[3] for t in tables)),
            values={"agreement": results[worst][1], "expected": cfg.keep**2 + (1 - cfg.keep) ** 2},
            observed=f"agreement {results[worst][1]:.6g} ({labels[worst]})",
            expected=f"{cfg.keep**2 + (1 - cfg.keep) ** 2:.6g} = p^2 + q^2 (independent masks)",
            detail=f"Fisher exact on the 2x2 tables of masks from neighbouring seeds; smallest p at {labels[worst]}",
            reproduce=cfg.reproduce(),
        )

    def comparisons(self, stored) -> list:
        """(seed of A, seed of B, what differs, [(A, B) masks], displacement 0 left out, row length,
        the words for B = A).  Within one comparison every mask appears once, so each
        displacement's pairs are i.i.d. under independence."""
        run, s = self.run, self.cfg.seed
        stored, others = [m.reshape(-1) for m in stored], [c.mask.reshape(-1) for c in self.others]
        row = math.prod(run.unit_shape[1:])
        adjacent = [
            (
                "seed[1] + 1",
                f"({s}, i)",
                f"({s}, i + 1)",
                [(stored[i], stored[i + 1]) for i in range(0, len(stored) - 1, 2)],
            ),
            ("seed[0] + 1", f"({s}, i)", f"({s + 1}, i)", list(zip(stored, others, strict=False))),
            (
                "seed[0] + 1 against seed[1] + 1",
                f"({s}, i + 1)",
                f"({s + 1}, i)",
                list(zip(stored[1:], others, strict=False)),
            ),
        ]
        out = [(sa, sb, what, pairs, True, row, "") for what, sa, sb, pairs in adjacent if pairs]
        if len(self.far) == len(FAR):
            base, f0, f1, g0, g1 = (c.mask.reshape(-1) for c in (self.repeats[0], *self.far))
            (p0, b0, w0), (p1, b1, w1), (q0, _, _), (q1, _, _) = (
                run.far_seed_pair(comp, offset=3, low=low) for comp, low in FAR
            )
            sb, row = str(run.seed_pair(0, offset=3)), math.prod(self.far[0].mask.shape[1:])
            ignored = "{} is ignored (as by a seed cut to {} bits or fewer)"
            lost = "bit 0 of seed[{}] is lost once {} is set (as when the seed passes through float32)"
            out += [
                (str(p0), str(q0), f"bit 0 of seed[0], {w0} set", [(f0, g0)], False, row, lost.format(0, w0)),
                (str(p1), str(q1), f"bit 0 of seed[1], {w1} set", [(f1, g1)], False, row, lost.format(1, w1)),
                (sb, str(p0), w0, [(base, f0)], False, row, ignored.format(w0, b0)),
                (sb, str(p1), w1, [(base, f1)], False, row, ignored.format(w1, b1)),
                (
                    str(p1),
                    str(p0),
                    f"{w0} against {w1}",
                    [(f1, f0)],
                    False,
                    row,
                    f"flipping {w0} or {w1} gives one seed (as when the components are mixed into one number)",
                ),
            ]
        return out

    def correlation(self, stored) -> Check:
        """seed_correlation from the stored main masks and the seed calls' masks."""
        cfg = self.cfg
        comps = self.comparisons(stored)
        tested = sum(2 * c[3][0][0].size - 1 - c[4] for c in comps)
        if tested == 0:
            return Check("seed_correlation", None, "statistical", detail="masks of one unit: no displacement to test")
        best, spectra = None, {}  # each mask's folded spectra, computed once
        for comp in comps:
            found = scan(comp[3], exclude_zero=comp[4], spectra=spectra)
            if found is not None and (best is None or found[0] < best[0][0]):
                best = (found, comp)
        samples = sum(2 * a.size for c in comps for a, _ in c[3])
        if best is None:
            return Check("seed_correlation", True, "statistical", 1.0, None, samples, detail="no pairs to compare")
        (p_one, d, k, a, b, m), (sa, sb, what, _, _, row, same) = best
        agree = (m - a - b + 2 * k) / m
        expect = (a * b + (m - a) * (m - b)) / (m * m)
        finding = describe(sa, sb, what, d, (agree, expect, m), row, same)
        return Check(
            "seed_correlation",
            True,
            "statistical",
            min(1.0, tested * p_one),
            None,
            samples,
            values={
                "displacement": d,
                "agreement": agree,
                "expected": expect,
                "pairs": m,
                "seeds": [sa, sb],
                "differs": what,
                "tested": tested,
                "finding": finding,
            },
            observed=f"displacement {d:+d}, {sb} against {sa}: agreement {agree:.6g} over {m:,} pairs",
            expected=f"{expect:.6g} at every displacement (independent masks; {tested:,} displacements tested)",
            detail="masks of seeds one component apart (displacements != 0) and a high bit apart (every "
            "displacement), flattened; the most extreme displacement's 2x2 table, Hoeffding's bound on its "
            f"hypergeometric tail, Bonferroni over the displacements; most extreme: {what}",
            reproduce=cfg.reproduce(),
        )


def scan(pairs, *, exclude_zero: bool, spectra: dict | None = None):
    """(one-displacement p-value bound, d, both kept, kept in A, kept in B, pairs) at the most
    extreme displacement d of the pooled pairs of flattened bool masks, or None."""
    flat = pairs
    n = flat[0][0].size
    if n <= DIRECT:
        d, k, a, b, m = direct_tables(flat)
    else:
        d = np.array(folded_candidates(flat, exclude_zero, {} if spectra is None else spectra), dtype=np.int64)
        k, a, b, m = (np.array(v, dtype=np.int64) for v in zip(*(table(flat, int(v)) for v in d), strict=True))
    keep = d != 0 if exclude_zero else np.ones(d.size, dtype=bool)
    if not keep.any():
        return None
    d, k, a, b, m = d[keep], k[keep], a[keep], b[keep], m[keep]
    p = two_sided_bound(k, a, b, m)
    i = int(np.argmin(p))
    return float(p[i]), int(d[i]), int(k[i]), int(a[i]), int(b[i]), int(m[i])


def table(flat, d: int) -> tuple[int, int, int, int]:
    """(both kept, kept in A, kept in B, pairs) of B[u + d] against A[u], summed over the pairs."""
    k = a = b = m = 0
    for x, y in flat:
        n = x.size
        xs, ys = (x[: n - d], y[d:]) if d >= 0 else (x[-d:], y[: n + d])
        k += int(np.count_nonzero(xs & ys))
        a += int(np.count_nonzero(xs))
        b += int(np.count_nonzero(ys))
        m += xs.size
    return k, a, b, m


def direct_tables(flat):
    """Every displacement's table at once: both-kept counts by FFT, margins from cumulative sums."""
    n = flat[0][0].size
    size = sfft.next_fast_len(2 * n - 1, real=True)
    xs = np.stack([x for x, _ in flat]).astype(np.float64)
    ys = np.stack([y for _, y in flat]).astype(np.float64)
    cross = sfft.irfft((np.conj(sfft.rfft(xs, size)) * sfft.rfft(ys, size)).sum(axis=0), size)
    d = np.arange(-(n - 1), n, dtype=np.int64)
    k = np.rint(cross[d % size]).astype(np.int64)  # exact: counts below 2**52, FFT error far below 1/2
    ca = np.concatenate([[0], np.cumsum(xs.sum(axis=0), dtype=np.int64)])
    cb = np.concatenate([[0], np.cumsum(ys.sum(axis=0), dtype=np.int64)])
    pos = d >= 0
    a = ca[np.where(pos, n - d, n)] - ca[np.where(pos, 0, -d)]
    b = np.where(pos, cb[n] - cb[np.where(pos, d, 0)], cb[np.where(pos, n, n + d)])
    return d, k, a, b, len(flat) * (n - np.abs(d))


def folded_candidates(flat, exclude_zero: bool, spectra: dict) -> list[int]:
    """The displacements the folded cross-correlations point to.  Folding A and B modulo L sums
    every pair (u, v) with v - u = t (mod L) into lag t: a shifted copy of a share f of n units
    stands out by about f * sqrt(L) noise standard deviations.  Displacement 0's own sum is taken
    out when the comparison leaves it to seed_independence.  ``spectra`` caches each mask's."""
    n = flat[0][0].size
    scores = []
    for j, size in enumerate(FOLDS):
        cross = 0
        for x, y in flat:
            cross = cross + np.conj(folded_spectrum(x, j, spectra)) * folded_spectrum(y, j, spectra)
        lag = sfft.irfft(cross, size)
        if exclude_zero:  # sum over u of (x - mean x)(y - mean y), from counts
            lag[0] -= sum(np.count_nonzero(x & y) - kept(x, spectra) * kept(y, spectra) / n for x, y in flat)
        scores.append(np.abs(lag))
    l1, l2 = FOLDS
    t1 = int(np.argmax(scores[0]))
    d = np.concatenate([np.arange(t1, n, l1), np.arange(t1 - l1, -n, -l1)])
    d = d[d != 0] if exclude_zero else d
    order = np.argsort(-scores[1][d % l2], kind="stable")
    return [int(v) for v in d[order[:CANDIDATES]]]


def kept(x: np.ndarray, spectra: dict) -> int:
    """count_nonzero(x), cached with the spectra."""
    key = (id(x), "kept")
    if key not in spectra:
        spectra[key] = (int(np.count_nonzero(x)), x)
    return spectra[key][0]


def folded_spectrum(x: np.ndarray, j: int, spectra: dict) -> np.ndarray:
    """rfft of sum of (x - mean x) over the positions of each residue modulo FOLDS[j] (cached)."""
    key = (id(x), j)
    if key not in spectra:
        size, n = FOLDS[j], x.size
        full = n // size
        counts = np.zeros(size, dtype=np.int64)
        if full:  # uint16 sums are exact below 2**16 rows and twice as fast as int32's
            acc = np.uint16 if full < 1 << 16 else np.int64
            counts += x[: full * size].view(np.uint8).reshape(full, size).sum(axis=0, dtype=acc)
        counts[: n - full * size] += x[full * size :]
        residues = np.full(size, full, dtype=np.int64)
        residues[: n - full * size] += 1
        centred = (counts - residues * (kept(x, spectra) / n)).astype(np.float32)  # only ranks lags
        spectra[key] = (sfft.rfft(centred), x)  # x kept: its id stays its own
    return spectra[key][0]


def two_sided_bound(k, a, b, m):
    """Two-sided p-value bound of k both-kept pairs among m when a of A's and b of B's units are
    kept: k is hypergeometric (b draws from m holding a kept), and Hoeffding's theorem bounds its
    moment generating function by the binomial's, so the observed side's tail is at most
    exp(-b D(k/b || a/m)).  Any cell of the table is such a count (a - k: m - b draws from m
    holding a), and each gives a valid bound on the same tail; the smallest is taken (the cell of
    fewest draws is the tightest: tests/test_seed_shift.py measures it against the exact tail).
    Twice it, at most 1."""
    k, a, b, m = (np.asarray(v, dtype=np.float64) for v in (k, a, b, m))
    with np.errstate(divide="ignore", invalid="ignore"):
        one = np.minimum.reduce(
            [
                _chernoff(k, b, a / m),
                _chernoff(k, a, b / m),
                _chernoff(a - k, m - b, a / m),
                _chernoff(b - k, m - a, b / m),
            ]
        )
    degenerate = (a == 0) | (b == 0) | (a == m) | (b == m)
    return np.where(degenerate, 1.0, np.minimum(1.0, 2 * one))


def _chernoff(k, draws, p):
    """exp(-draws * KL(k / draws || p)): the Chernoff bound on the tail of k beyond draws * p."""
    x = np.where(draws > 0, k / np.maximum(draws, 1), p)
    return np.exp(-draws * (rel_entr(x, p) + rel_entr(1 - x, 1 - p)))  # finite: 0 < p < 1 here


def describe(sa: str, sb: str, what: str, d: int, seen, row: int, same: str) -> str:
    """What the most extreme table shows (seen: agreement, its expectation, pairs), in words a
    reader can check against the masks."""
    agree, expect, m = seen
    if d == 0:
        shift = ""
    else:
        unit = "position" if abs(d) == 1 else "positions"
        shift = f" shifted {'forward' if d > 0 else 'back'} by {abs(d):,} {unit} in C order"
        if row > 1 and d % row == 0:
            rows = abs(d) // row
            shift += f" ({rows} row{'s' if rows > 1 else ''} of {row:,})"
    where = f"agreement {agree:.6g} over {m:,} pairs, {expect:.6g} expected"
    if agree == 1.0:
        if d == 0:
            return f"seeds {sa} and {sb} draw the same mask: {same} ({where})"
        return f"seed {sb} draws the mask of seed {sa}{shift} ({what}; {where})"
    if agree >= 0.99:
        return f"seed {sb} draws nearly the mask of seed {sa}{shift} ({what}; {where})"
    return f"the masks of seeds {sa} and {sb} ({what}) are correlated at displacement {d:+d} ({where})"
