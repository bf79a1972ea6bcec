"""verify_dropblock's tallies over the main calls and the checks they conclude in.

``Tally.add`` reads one call's output (dropped = exactly 0, the input has no zeros) and keeps
what the checks need: per-position and per-map dropped counts, the positions no allowed block
explains, whether declared-shared masks are identical, 2 x 2 tables of independent pairs, and
the worst kept value against the declared normalization.  ``Tally.checks`` turns them into
``Check`` entries; the statistical ones get their levels from verify_dropblock (Holm).

The normalization bound (``count``, ``count_per_sample``).  The contract value is
t = x * numel / (eps + count), count the kept positions of the tensor (of the sample).  A
correct implementation reaches it with at most six roundings, each to nearest in x's dtype or
wider (relative error at most u = 2^-p, p the dtype's significant bits): the count stored in the
dtype (torchvision's bfloat16 sum: exact below 2^p, rounded above), eps added, the quotient
numel / count as one division or as a reciprocal times numel (torch's ``int / tensor``: two), the
scale cast to x's dtype (timm computes it in float32), and the product with x.  So
(1 + u)^-6 <= y / t <= (1 - u)^-6: about 6u (float32 3.6e-7, bfloat16 2.4%, float16 0.3%).
torchvision's float32 ``fl32(numel * fl32(1/count))`` is within 2u and its bfloat16 values
within 0.63% (measured); a count over the wrong set (per sample for the whole tensor), 1 - rate
or the expected fraction in place of the count, or no normalization lie outside it in float32
wherever they differ by more than 4e-7.  ``rate``: within ``precision.scale_bound`` of x / (1 - rate);
``none``: y == x exactly.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from .._exact import fisher_two_sided_pvalue
from .._floats import FORMATS
from ..report import Check
from .dropblock_geometry import Geometry, bennett_pvalue, union_violations

ROUNDINGS = 6  # see the module docstring


def wide_type(dtype: str):
    """The format the bound is computed in: float64 (its own error, 1e-16, far below the bound) for
    formats of at most 24 bits, long double for float64."""
    return np.longdouble if dtype == "float64" else np.float64


def count_bound(dtype: str):
    """(low, high) for y / t under count normalization, widened by the wide format's own rounding."""
    wide = wide_type(dtype)
    u = wide(2.0 ** -(FORMATS[dtype].mantissa_bits + 1))
    slack = 8 * np.finfo(wide).eps
    return (1 + u) ** -ROUNDINGS - slack, (1 - u) ** -ROUNDINGS + slack


class Tally:
    """What the main calls showed, accumulated call by call."""

    def __init__(self, geom, decl, shape, dtype, x, rate):
        self.geom, self.decl, self.shape, self.dtype, self.rate = geom, decl, tuple(shape), dtype, rate
        self.x = np.asarray(x, dtype=np.float64)
        self.u = 2.0 ** -(FORMATS[dtype].mantissa_bits + 1)
        self.wide = wide_type(dtype)  # y / x in float64: its own error (1e-16) far below u
        self.bound = count_bound(dtype)
        self.lattice = geom.lattice()
        self.spans = geom.span_pairs()
        self.per_position = np.zeros(geom.spatial, np.int64)
        self.total = 0
        self.maps = 0
        self.calls = 0
        self.violations = 0
        self.violation_at = None
        self.not_shared = {"channels": 0, "samples": 0}
        self.tables = {}
        self.previous = None
        self.bad_values = 0
        self.kept_values = 0
        self.worst = (0.0, None)  # (error in u, (call, index, y, expected))

    def units(self, dropped):
        """The independent maps of one call, as declared: (sample, channel) maps, one per sample
        (channels shared), one per channel (one mask for the batch), or one."""
        n = dropped.shape[0] if self.decl.per_sample else 1
        c = 1 if self.decl.shared_across_channels else dropped.shape[1]
        return dropped[:n, :c].reshape((n * c,) + self.geom.spatial)

    def table(self, name, a, b):
        t = self.tables.setdefault(name, np.zeros(4, np.int64))
        t += [np.count_nonzero(a & b), np.count_nonzero(a & ~b), np.count_nonzero(~a & b), np.count_nonzero(~a & ~b)]

    def add(self, y):
        y = np.asarray(y, dtype=np.float64)
        dropped = y == 0
        units = self.units(dropped)
        self.per_position += units.sum(axis=0)
        self.total += int(units.sum())
        self.maps += units.shape[0]
        bad = union_violations(units, self.geom.kernel, self.decl.centres)
        if bad.any():
            self.violations += int(bad.sum())
            if self.violation_at is None:
                where = np.argwhere(bad)[0]
                self.violation_at = (self.calls, int(where[0]), tuple(int(v) for v in where[1:]))
        self._shared(dropped)
        self._pairs(dropped, units)
        self._values(y, dropped)
        self.calls += 1

    def _shared(self, dropped):
        if self.decl.shared_across_channels and dropped.shape[1] > 1:
            self.not_shared["channels"] += int(np.any(dropped != dropped[:, :1]))
        if not self.decl.per_sample and dropped.shape[0] > 1:
            self.not_shared["samples"] += int(np.any(dropped != dropped[:1]))

    def _pairs(self, dropped, units):
        lat = self.lattice
        n, c = dropped.shape[:2]
        chans = slice(0, 1) if self.decl.shared_across_channels else slice(None)
        if self.decl.per_sample and n >= 2:
            m = n - n % 2
            self.table(
                "sample_independence", dropped[(slice(0, m, 2), chans) + lat], dropped[(slice(1, m, 2), chans) + lat]
            )
        if not self.decl.shared_across_channels and c >= 2:
            rows = slice(None) if self.decl.per_sample else slice(0, 1)
            m = c - c % 2
            self.table(
                "channel_independence", dropped[(rows, slice(0, m, 2)) + lat], dropped[(rows, slice(1, m, 2)) + lat]
            )
        here = units[(slice(None),) + lat]
        if self.calls % 2 == 0:
            self.previous = here
        else:
            self.table("call_independence", self.previous, here)
        for axis, pair in enumerate(self.spans):
            if pair is not None:
                self.table(f"span_{axis}", units[(slice(None),) + pair[0]], units[(slice(None),) + pair[1]])

    def scales(self, kept, eps):
        """The contract's scale per sample (count normalizations): numel / (eps + count), the count
        of the tensor (every sample the same) or of each sample."""
        per = kept.reshape(kept.shape[0], -1)
        counts = per.sum(axis=1).astype(self.wide)
        if self.decl.normalization == "count":
            return np.full(per.shape[0], self.wide(kept.size) / (self.wide(eps) + counts.sum()))
        return self.wide(per.shape[1]) / (self.wide(eps) + counts)

    def eps_range(self):
        """eps as added to the count of the whole tensor: eps itself, or eps times the copies of a
        mask counted before it is broadcast over declared-shared channels or samples (timm counts
        its (N, 1, H, W) mask: numel / (count / C + eps) = numel / (count + C eps))."""
        n, c = self.shape[:2]
        copies = (c if self.decl.shared_across_channels else 1) * (n if not self.decl.per_sample else 1)
        if self.decl.normalization == "count_per_sample":
            copies = c if self.decl.shared_across_channels else 1
        return self.decl.eps, self.decl.eps * copies

    def _limits(self, kept):
        """(lowest, highest) kept y / x per sample that the declared normalization allows."""
        n = kept.shape[0]
        norm = self.decl.normalization
        if norm in ("count", "count_per_sample"):
            small, large = self.eps_range()
            low, high = self.bound
            return self.scales(kept, large) * low, self.scales(kept, small) * high
        if norm == "rate":
            from ..precision import scale_bound

            b = scale_bound(self.rate, self.dtype)
            low, high = (self.wide(v) for v in b.limits())
            slack = 8 * np.finfo(self.wide).eps
            scales = [1 / (1 - self.wide(r)) for r in b.rates]
            return np.full(n, min(scales) * (low - slack)), np.full(n, max(scales) * (high + slack))
        return np.ones(n, self.wide), np.ones(n, self.wide)

    def _values(self, y, dropped):
        """Every kept y / x within the limits of its sample (x is in [0.5, 2]: no subnormals)."""
        kept = ~dropped
        if not kept.any():
            return
        lo, hi = self._limits(kept)
        ratio = np.where(kept, y.astype(self.wide) / self.x.astype(self.wide), 1)
        shape = (-1,) + (1,) * (kept.ndim - 1)
        lo, hi = lo.reshape(shape), hi.reshape(shape)
        bad = kept & ((ratio < lo) | (ratio > hi))
        self.kept_values += int(np.count_nonzero(kept))
        self.bad_values += int(np.count_nonzero(bad))
        centre = np.sqrt(lo * hi)
        err = np.where(kept, np.abs(ratio / centre - 1), 0)
        i = int(np.argmax(err))
        e = float(err.flat[i]) / self.u
        if e > self.worst[0]:
            want = float((self.x * np.broadcast_to(centre, kept.shape)).flat[i])
            self.worst = (e, (self.calls, i, float(y.flat[i]), want))

    # -- conclusions ----------------------------------------------------------------------
    def models(self):
        """The geometries a correct implementation may have: gamma as declared, and gamma rounded
        to x's dtype (torchvision draws its centres with bernoulli_(gamma) on a tensor of x's dtype).
        Each is tested at the full level and the check passes when one passes: the true one fails
        with probability <= level, so the false-fail rate holds."""
        from .._floats import round_to

        g = self.geom
        rounded = float(round_to(g.gamma, self.dtype))
        out = [("gamma as declared", g)]
        if abs(rounded - g.gamma) > 1e-6 * g.gamma and 0 < rounded < 1:  # 16-bit dtypes
            out.append(
                (f"gamma rounded to {self.dtype} ({rounded:.6g})", Geometry(g.spatial, g.kernel, g.centres, rounded))
            )
        return out

    def fraction_check(self, reproduce) -> Check:
        top, n = self.geom.positions, self.maps * self.geom.positions
        tried = []
        for label, g in self.models():
            mean, var = g.mean(), g.variance()
            tried.append((bennett_pvalue(self.total, self.maps, mean, var, top), label, mean / top, var))
        p, label, exact, var = max(tried, key=lambda t: t[0])
        f = self.total / n
        se = math.sqrt(var / self.maps) / top
        which = "" if len(tried) == 1 else f"; {label}, the better of {len(tried)} correct gammas"
        return Check(
            "drop_fraction",
            None,
            "statistical",
            p,
            samples=n,
            observed=f"{self.total}/{n} = {f:.6g} dropped (standard error {se:.2g})",
            expected=f"{exact:.6g}: 1 - (1 - gamma)^c(p) averaged over the map ({self.geom.describe()}){which}",
            values={"dropped": self.total, "n": n, "fraction": f, "expected": exact, "maps": self.maps},
            detail="the dropped fraction is not the declared geometry's (Bennett's bound on the sum of "
            f"{self.maps:,} independent maps' counts)",
            reproduce=reproduce,
        )

    def _position_pvalues(self, p_exp):
        k, n = self.per_position, self.maps
        inner = (p_exp > 0) & (p_exp < 1)
        lower = stats.binom.cdf(k, n, np.clip(p_exp, 1e-300, 1))
        upper = stats.binom.sf(k - 1, n, np.clip(p_exp, 1e-300, 1))
        pv = np.where(inner, np.minimum(1.0, 2 * np.minimum(lower, upper)), 1.0)
        pv = np.where(~inner & (k != np.round(p_exp * n)), 0.0, pv)  # P(dropped) 0 or 1: exactly
        m = max(1, int(np.count_nonzero(inner)))
        return min(1.0, m * float(pv.min())), pv, m

    def positions_check(self, reproduce) -> Check:
        tried = [(self._position_pvalues(g.p), g) for _, g in self.models()]
        (p, pv, m), g = max(tried, key=lambda t: t[0][0])
        k, n = self.per_position, self.maps
        where = np.unravel_index(int(np.argmin(pv)), pv.shape)
        pos = tuple(int(v) for v in where)
        p_exp = g.p
        return Check(
            "drop_positions",
            None,
            "statistical",
            p,
            samples=int(n * k.size),
            observed=f"farthest position {list(pos)}: {int(k[where])}/{n} = {k[where] / n:.4g} dropped",
            expected=f"{float(p_exp[where]):.4g} there (1 - (1 - gamma)^{int(g.cover[where])})",
            values={"position": list(pos), "dropped": int(k[where]), "n": n, "expected": float(p_exp[where])},
            detail=f"a position's drop rate is not the declared geometry's (exact binomial tests at {m} "
            "positions, Bonferroni): a block anchored or clipped otherwise, or centres allowed elsewhere",
            reproduce=reproduce,
        )

    def values_check(self, reproduce) -> Check:
        norm = self.decl.normalization
        expected = {
            "count": f"x * numel / (eps + kept count of the tensor), eps {self.decl.eps:g}, within "
            f"(1 -+ u)^-{ROUNDINGS}",
            "count_per_sample": f"x * numel / (eps + kept count), per sample, eps {self.decl.eps:g}, within "
            f"(1 -+ u)^-{ROUNDINGS}",
            "rate": "x / (1 - rate) within the rounding bound",
            "none": "x, unchanged",
        }[norm]
        if self.kept_values == 0:
            return Check("normalization", None, detail="no kept values to check: every call dropped everything")
        err, at = self.worst
        ok = self.bad_values == 0
        first = f"; worst: call {at[0]}, {at[2]!r} where {at[3]:.9g} ({err:.3g} u)" if at else ""
        return Check(
            "normalization",
            ok,
            samples=self.kept_values,
            observed=(
                f"every kept value as declared, within {err:.3g} u"
                if ok
                else f"{self.bad_values:,} of {self.kept_values:,} kept values off the declared normalization{first}"
            ),
            expected=expected,
            values={"bad": self.bad_values, "kept": self.kept_values, "worst_u": err},
            detail="" if ok else f"kept values are not normalized as declared ({norm!r})",
            reproduce=reproduce,
        )


def union_check(tally, reproduce) -> Check:
    block = "x".join(str(k) for k in tally.geom.kernel)
    where = "allowed centres (the whole block inside the map)" if tally.decl.centres == "valid" else "any centre"
    ok = tally.violations == 0
    at = tally.violation_at
    return Check(
        "block_union",
        ok,
        samples=tally.maps * tally.geom.positions,
        observed="every dropped position lies in a dropped block"
        if ok
        else f"{tally.violations:,} dropped positions in no dropped {block} block (first: call {at[0]}, map "
        f"{at[1]}, position {list(at[2])})",
        expected=f"dropped regions are unions of {block} blocks at {where}, anchored at the centre, clipped "
        "at the border"
        if tally.decl.centres == "all"
        else f"dropped regions are unions of whole {block} blocks at {where}",
        values={"violations": tally.violations},
        detail=""
        if ok
        else "dropped regions are not unions of the declared blocks (per-element drops, a smaller or "
        "shifted block, blocks crossing the border)",
        reproduce=reproduce,
    )


def shared_checks(tally, reproduce) -> list:
    out = []
    for key, name, declared, what in (
        ("channels", "channels_shared", tally.decl.shared_across_channels, "the channels of a sample"),
        ("samples", "samples_shared", not tally.decl.per_sample, "the samples of a call"),
    ):
        if not declared:
            continue
        bad = tally.not_shared[key]
        out.append(
            Check(
                name,
                bad == 0,
                samples=tally.calls,
                observed="identical in every call" if bad == 0 else f"differ in {bad} of {tally.calls} calls",
                expected=f"one mask for {what} (declared)",
                values={"calls_differing": bad},
                detail="" if bad == 0 else f"{what} draw different masks, declared shared",
                reproduce=reproduce,
            )
        )
    return out


def independence_checks(tally, reproduce) -> list:
    out = []
    words = {
        "sample_independence": "samples 2i and 2i+1",
        "channel_independence": "channels 2j and 2j+1",
        "call_independence": "calls 2t and 2t+1",
    }
    for name, what in words.items():
        t = tally.tables.get(name)
        if t is None:
            out.append(Check(name, None, detail=f"not applicable: no pairs of {what.split()[0]} to compare"))
            continue
        out.append(
            _fisher(
                name,
                t,
                f"{what}, at {tally.lattice[0].size} positions of the highest drop rate one block apart",
                reproduce,
            )
        )
    spans = [(a, tally.tables[f"span_{a}"]) for a, pair in enumerate(tally.spans) if pair is not None]
    if not spans:
        out.append(Check("span_independence", None, detail="no two positions one block apart: the map is one block"))
        return out
    checks = [
        _fisher("span_independence", t, f"positions {list(tally.spans[a][0])} and {list(tally.spans[a][1])}", reproduce)
        for a, t in spans
    ]
    worst = min(checks, key=lambda c: c.pvalue)
    worst.pvalue = min(1.0, len(checks) * worst.pvalue)
    worst.detail = (
        "positions one block apart share no centre, yet their drops are correlated: blocks larger "
        "than declared, or centres drawn together"
    )
    out.append(worst)
    return out


def _fisher(name, t, what, reproduce) -> Check:
    n11, n10, n01, n00 = (int(v) for v in t)
    n = n11 + n10 + n01 + n00
    p = fisher_two_sided_pvalue([[n11, n10], [n01, n00]])
    agree = (n11 + n00) / n if n else 0.0
    first = n11 + n10
    cond = n11 / first if first else float("nan")
    return Check(
        name,
        None,
        "statistical",
        p,
        samples=n,
        observed=f"P(dropped | partner dropped) = {cond:.4g}, agreement {agree:.4g} ({what})",
        expected="independent masks (Fisher's exact test)",
        values={"table": [n11, n10, n01, n00], "agreement": agree},
        detail=f"masks of {what.split(',')[0]} are not independent",
        reproduce=reproduce,
    )
