"""Every number the battery reports, recomputed from fn's own calls with scipy.

A recording numpy dropout keeps each call's seed, rate, noise shape and output; the test then
redoes each statistical check from those outputs (scipy's ``fisher_exact``, ``binomtest``,
``chi2_contingency``, ``chi2``; an independent Holm) and compares the p-value, the sample count,
the Holm level and the texts with the report.  Four library pieces are reused, each tested on its
own: ``value_groups`` (the bins of |x|, tests/test_battery_checks.py), ``trend_test``
(tests/test_structure.py), ``min_num_samples_for_rate_test`` and ``SequentialRateTest``
(tests/test_design.py, tests/test_sequential.py).  The seed plan the runner documents is asserted
too: every fresh draw has its own seed, so no draw is counted twice as evidence.

This is the battery's oracle below its verdicts: a check whose table, pairing, Bonferroni factor
or budget share is off still passes a correct implementation, but its numbers no longer match.
The configs' seeds are fixed (not the base seed), so every assertion is deterministic.  The
recomputations hold for any seed; three assertions hold for these seeds and would for almost any
other: a p-value below 1 for each Bonferroni factor (measured here), a redraw above rate 0.5
that breaks nesting (no violation among 65,536 positions: probability 0.895^65536 < 1e-3100), a hidden
state that changes the mask.  No false-fail rate applies.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats
from test_battery_checks import pooled_histogram

import dropout_stats as ds
from dropout_stats._floats import FORMATS
from dropout_stats.battery.checks.value_independence import value_groups
from dropout_stats.structure import trend_test

ALPHA = 1e-9
REL = 1e-6  # the same p-value computed two ways (terms summed in another order, another chi2 routine)


class Recorder:
    """A correct numpy dropout that records every call: (seed, rate, noise shape, x, kept mask)."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, rate, seed, noise_shape=None):
        u = np.random.default_rng(list(seed)).random(noise_shape or x.shape)
        keep = np.broadcast_to(u >= rate, x.shape)
        y = np.where(keep, x * x.dtype.type(1 / (1 - rate)), x.dtype.type(0)).astype(x.dtype)
        self.calls.append(
            {"seed": tuple(int(s) for s in seed), "rate": rate, "ns": noise_shape, "x": x.copy(), "kept": y != 0}
        )
        return y

    def by_offset(self, base, offset, rate=None):
        """The calls with seed (base + offset, i), but the far seeds (a bit 30 flipped: seed_far)."""
        return [
            c
            for c in self.calls
            if c["seed"][0] == base + offset and c["seed"][1] < 1 << 30 and (rate is None or c["rate"] == rate)
        ]


def _fisher(a, b):
    """Scipy's two-sided Fisher p-value of the pooled 2 x 2 table of two lists of masks."""
    both = sum(int(np.count_nonzero(u & v)) for u, v in zip(a, b, strict=True))
    na = sum(int(np.count_nonzero(u)) for u in a)
    nb = sum(int(np.count_nonzero(v)) for v in b)
    n = sum(u.size for u in a)
    return stats.fisher_exact([[both, na - both], [nb - both, n - na - nb + both]]).pvalue, n


def _units(c):
    """The kept mask of a call, per unit of its noise shape (an element when there is none)."""
    kept = c["kept"]
    if c["ns"] is None:
        return kept
    axes = tuple(i for i, (d, s) in enumerate(zip(c["ns"], kept.shape, strict=True)) if d == 1 and s != 1)
    return kept.any(axis=axes, keepdims=True)


def _chi2(k, n):
    k, n = np.asarray(k, np.int64), np.asarray(n, np.int64)
    return stats.chi2_contingency(np.stack([k, n - k]), correction=False).pvalue


def _run(rec, **kw):
    # the Recorder draws one uniform per unit (it declares the threshold mechanism); numpy has no
    # reference stream, so its keep is any documented correct one (keep_fraction tests each)
    kw = {"rate": 0.3, "backend": "numpy", "false_fail_rate": ALPHA, "mechanism": "threshold", **kw}
    return ds.verify(rec, **kw)


CONFIGS = [  # verify's arguments
    {"seed": 7},
    {"seed": 3, "shape": (9, 1001)},  # odd lengths: the pairings drop an end
    {"seed": 5, "shape": (6, 80, 70)},  # a short axis in the middle, a long one last
    {"seed": 11, "shape": (16, 4, 4, 32), "noise_shape": (16, 1, 1, 32)},
    {"seed": 2, "shape": (1, 8192)},  # one row: no row pairs, no share of the budget for them
    {"seed": 12, "shape": (8192,)},  # one axis: no axis entries beside blocks and strides
    {"seed": 13, "shape": (2, 4096)},  # two rows: one row pairing only, (1, 2) does not exist
    {"seed": 14, "shape": (2048, 1)},  # one column: no neighbours
    {"seed": 21, "shape": (2,)},  # two draws a call: cut short by max_calls, two bins of |x|
    {"seed": 23, "shape": (64, 65)},  # an odd last axis whose even part equals the row count
]


@functools.cache
def _recorded(i):
    rec = Recorder()
    return rec, _run(rec, **CONFIGS[i]), CONFIGS[i]


@pytest.fixture(params=range(len(CONFIGS)), ids=lambda i: str(CONFIGS[i]))
def recorded(request):
    return _recorded(request.param)


def test_every_fresh_draw_has_its_own_seed(recorded):
    """Seeds (s + offset, i): main 0, seed_other 1, probe 2, seed_repeat 3 (twice, on purpose),
    threshold 4 (one seed across the rates), seed_far (s + 3, 0) with bit 30 of either component
    flipped, and with bit 0 of that component too; nothing else repeats a seed."""
    rec, r, kw = recorded
    s = kw["seed"]
    seen = {}
    for c in rec.calls:
        seen.setdefault((c["seed"], c["rate"]), []).append(c)
    repeated = {k: len(v) for k, v in seen.items() if len(v) > 1}
    probed = r.config["noise_shape"] is None and any(c.name == "noise_shape_units" for c in r.checks)
    assert repeated == {((s + 3, 0), 0.3): 2}, repeated
    far = {((s + 3) ^ (1 << 30), 0), (s + 3, 1 << 30), ((s + 3) ^ (1 << 30) ^ 1, 0), (s + 3, (1 << 30) ^ 1)}
    assert far <= {c["seed"] for c in rec.calls}
    offsets = {c["seed"][0] - s for c in rec.calls if c["seed"] not in far}
    assert offsets == {0, 1, 3, 4} | ({2} if probed else set())
    # the first call is the plainest one, fn(x, rate, seed=(s, 0))
    assert rec.calls[0]["seed"] == (s, 0) and rec.calls[0]["kept"].shape == tuple(r.config["shape"])


def test_seed_checks_are_the_recorded_masks(recorded):
    rec, r, kw = recorded
    s = kw["seed"]
    main = [_units(c) for c in rec.by_offset(s, 0)]
    others = [_units(c) for c in rec.by_offset(s, 1)]
    stored = main[: len(others) + 1]  # one partner per stored mask but the last
    p = [_fisher(stored[:-1], stored[1:]), _fisher(stored[:-1], others), _fisher(stored[1:], others)]
    c = r.check("seed_independence")
    assert c.pvalue == pytest.approx(min(1.0, 3 * min(q for q, _ in p)), rel=REL, abs=0)
    assert c.samples == sum(n for _, n in p)
    worst = int(np.argmin([q for q, _ in p]))
    a, b = [(stored[:-1], stored[1:]), (stored[:-1], others), (stored[1:], others)][worst]
    agree = sum(int(np.count_nonzero(u == v)) for u, v in zip(a, b, strict=True)) / p[worst][1]
    label = ["seed[1] + 1", "seed[0] + 1", "(seed[0] + 1, i) against (seed[0], i + 1)"][worst]
    assert c.values == pytest.approx({"agreement": agree, "expected": 0.7**2 + 0.3**2}, rel=1e-12, abs=0)
    assert c.observed == f"agreement {agree:.6g} ({label})"
    assert c.expected == f"{0.7**2 + 0.3**2:.6g} = p^2 + q^2 (independent masks)"
    repeat = rec.by_offset(s, 3)
    d = r.check("seed_determinism")
    assert d.passed and d.samples == 2 * repeat[0]["kept"].size
    assert np.array_equal(repeat[0]["kept"], repeat[1]["kept"])


def test_threshold_checks_are_the_recorded_masks(recorded):
    rec, r, kw = recorded
    sweep = sorted(rec.by_offset(kw["seed"], 4), key=lambda c: c["rate"])
    assert [c["rate"] for c in sweep] == [0.15, 0.3, 0.3 + 0.7 / 2]
    ps, violations, total, parts = [], 0, 0, []
    for lo, hi in zip(sweep, sweep[1:], strict=False):
        a, b = _units(lo), _units(hi)
        violations += int(np.count_nonzero(b & ~a))
        share = float(Fraction(1.0 - lo["rate"]) - Fraction(1.0 - hi["rate"]))
        flipped = int(np.count_nonzero(a & ~b))
        ps.append(stats.binomtest(flipped, a.size, share).pvalue)
        total += a.size
        parts.append(f"{lo['rate']:.4g}->{hi['rate']:.4g}: {flipped}/{a.size} flipped, expected share {share:.6g}")
    nesting, flips = r.check("threshold_nesting"), r.check("threshold_flips")
    assert nesting.values["violations"] == violations == 0 and nesting.samples == total
    assert nesting.passed is True and nesting.detail == ""
    assert flips.pvalue == pytest.approx(min(1.0, 2 * min(ps)), rel=REL, abs=0) and flips.samples == total
    assert flips.detail == "exact binomial test per rate pair (Bonferroni inside): " + "; ".join(parts)
    assert flips.observed == "2 rate pairs"
    rates = [c["rate"] for c in sweep]
    assert nesting.reproduce.endswith(f"; rates {rates}, seed {list(sweep[0]['seed'])}")


def _pairs(masks, axis, offset):
    """The masks' disjoint pairs along ``axis`` starting at ``offset``: two lists of halves."""
    firsts, seconds = [], []
    for m in masks:
        m = np.moveaxis(m, axis, 0)
        length = (m.shape[0] - offset) // 2 * 2
        firsts += [m[offset + j] for j in range(0, length, 2)]
        seconds += [m[offset + j + 1] for j in range(0, length, 2)]
    return firsts, seconds


def test_pair_checks_are_the_recorded_masks(recorded):
    rec, r, kw = recorded
    main = [_units(c) for c in rec.by_offset(kw["seed"], 0)]
    ndim = main[0].ndim
    for name, axis in (("row_independence", 0), ("neighbour_independence", ndim - 1)):
        tested = [_fisher(*_pairs(main, axis, o)) for o in (0, 1) if main[0].shape[axis] - o >= 2]
        if not tested or (name == "row_independence" and ndim == 1):  # no pairs: no entry, no share
            assert name not in [c.name for c in r.checks]
            continue
        c = r.check(name)
        assert c.pvalue == pytest.approx(min(1.0, len(tested) * min(p for p, _ in tested)), rel=REL, abs=0)
        assert c.samples == sum(n for _, n in tested)
        # the entry's numbers are the worse pairing's table (the smaller p-value)
        first, second = _pairs(main, axis, int(np.argmin([p for p, _ in tested])))
        both = sum(int(np.count_nonzero(u & v)) for u, v in zip(first, second, strict=True))
        na, nb = (sum(int(np.count_nonzero(u)) for u in half) for half in (first, second))
        n = sum(u.size for u in first)
        assert c.values == pytest.approx(
            {"agreement": (both + (n - na - nb + both)) / n, "kept_given_partner_kept": both / na, "kept": nb / n},
            rel=1e-12,
            abs=0,
        )
        assert c.expected == f"P(kept) = {nb / n:.6g} (independent)"
        pairing = "(0,1), (2,3)" if int(np.argmin([p for p, _ in tested])) == 0 else "(1,2), (3,4)"
        assert c.detail == (
            f"Fisher exact test on {n:,} pairs along axis {axis} ({pairing}, ...); keep rate of the "
            f"first {na / n:.6g}; the worse of {len(tested)} pairings (Bonferroni)"
        )


def _bins(index, length):
    """min(16, length) contiguous bins of range(length), bin j starting at floor(j * length / bins)."""
    g = min(16, length)
    return np.searchsorted([j * length // g for j in range(g)], index, side="right") - 1


def test_homogeneity_checks_are_the_recorded_masks(recorded):
    rec, r, kw = recorded
    main = [_units(c) for c in rec.by_offset(kw["seed"], 0)]
    calls, per = len(main), sum(m.astype(np.int64) for m in main)
    flat = per.ravel()
    groups = {
        "homogeneity_blocks": _bins(np.arange(flat.size), flat.size),
        "homogeneity_strided": np.arange(flat.size) % min(16, flat.size),
    }
    what = {
        "homogeneity_blocks": "contiguous blocks of positions",
        "homogeneity_strided": f"positions mod {min(16, flat.size)}",
    }
    for axis, length in enumerate(per.shape):
        if length > 1 and per.ndim > 1:
            index = np.indices(per.shape)[axis].ravel()
            groups[f"homogeneity_axis{axis}"] = index if length <= 64 else _bins(index, length)
            what[f"homogeneity_axis{axis}"] = f"{'indices' if length <= 64 else 'bins'} along axis {axis}"
    names = [c.name for c in r.checks if c.name.startswith("homogeneity")]
    assert sorted(names) == sorted(groups)
    for name, g in groups.items():
        k = np.bincount(g, weights=flat).astype(np.int64)
        n = np.bincount(g) * calls
        c = r.check(name)
        assert c.pvalue == pytest.approx(_chi2(k, n), rel=REL, abs=0), name
        assert c.samples == n.sum() and c.values["df"] == k.size - 1, name
        stat = stats.chi2_contingency(np.stack([k, n - k]), correction=False).statistic
        assert c.values["chi2"] == pytest.approx(stat, rel=1e-9, abs=0), name
        assert c.observed == f"chi2 {c.values['chi2']:.4g} on {k.size - 1} df", name
        assert c.expected == f"keep rate equal across {k.size} {what[name]}", name
        pooled = k.sum() / n.sum()
        worst = int(np.argmax(np.abs(k / n - pooled)))
        assert c.detail == f"most extreme group {worst}: {k[worst] / n[worst]:.6g} vs pooled {pooled:.6g}", name


def test_value_independence_is_the_recorded_masks(recorded):
    rec, r, kw = recorded
    if kw.get("noise_shape") is not None:
        # one draw per unit: a unit's x is not one value
        assert "value_independence" not in [c.name for c in r.checks]
        return
    main = rec.by_offset(kw["seed"], 0)
    x = main[0]["x"].ravel()
    per = sum(c["kept"].ravel().astype(np.int64) for c in main)
    n_all = per.size * len(main)
    neg = x < 0
    k_neg, k_pos = int(per[neg].sum()), int(per[~neg].sum())
    n_neg, n_pos = int(neg.sum()) * len(main), int((~neg).sum()) * len(main)
    p_sign = stats.fisher_exact([[k_neg, n_neg - k_neg], [k_pos, n_pos - k_pos]]).pvalue
    groups, _ = value_groups(main[0]["x"], FORMATS[str(x.dtype)])
    bins = groups.ravel() >> 1
    kb = np.bincount(bins, weights=per, minlength=8).astype(np.int64)
    nb = np.bincount(bins, minlength=8) * len(main)
    p_trend = trend_test(kb[nb > 0], nb[nb > 0]).pvalue  # the trend test itself: tests/test_structure.py
    c = r.check("value_independence")
    assert c.pvalue == pytest.approx(min(1.0, 2 * min(p_sign, p_trend)), rel=REL, abs=0) and c.samples == n_all
    z = trend_test(kb[nb > 0], nb[nb > 0]).statistic
    assert np.count_nonzero(nb) == min(8, x.size)  # the docstring's 8 equal bins of |x|; 2 values: 2 bins
    assert c.observed == (
        f"keep {k_neg / n_neg:.6g} where x < 0, {k_pos / n_pos:.6g} where x > 0; "
        f"trend z = {z:.3g} across {np.count_nonzero(nb)} bins of |x|"
    )


def test_noise_shape_units_are_the_probe_units(recorded):
    rec, r, kw = recorded
    if "noise_shape_units" not in [c.name for c in r.checks]:  # no probe: (1, n) and 1-D shapes
        assert (len(kw["shape"]) == 1 or kw["shape"][0] == 1) and not rec.by_offset(kw["seed"], 2)
        return
    c = r.check("noise_shape_units")
    if kw.get("noise_shape") is not None:
        assert c.passed is None and c.pvalue is None
        return
    probe = rec.by_offset(kw["seed"], 2)
    units = [_units(p) for p in probe]
    kept, n = sum(int(np.count_nonzero(u)) for u in units), sum(u.size for u in units)
    assert (c.values["kept"], c.values["n"], c.samples) == (kept, n, n)
    assert c.pvalue == pytest.approx(stats.binomtest(kept, n, 0.7).pvalue, rel=REL, abs=0)
    shape, noise = list(probe[0]["x"].shape), list(probe[0]["ns"])
    calls = f"{len(probe)} call{'s' if len(probe) > 1 else ''}"
    assert c.detail == f"x {shape}, noise_shape {noise}: one draw per unit, {calls}"
    assert c.observed == f"{kept}/{n} units kept = {kept / n:.6g}"
    assert c.values["fraction"] == kept / n and c.values["expected"] == 0.7
    # the probe draws at least 65,536 units, in whole calls: as few calls as reach that (at most
    # max_calls: two units a call would need 32,768)
    assert len(probe) == min(math.ceil(65_536 / math.prod(noise)), kw.get("max_calls", 20_000))
    consistency = r.check("noise_shape_consistency")
    assert consistency.samples == n and consistency.values["inconsistent"] == 0 and consistency.passed
    assert consistency.detail == "" and consistency.observed == f"0 of {n:,} units with mixed fate"


def test_keep_fraction_counts_a_prefix_of_the_fresh_draws(recorded):
    """The sequential test reads the fresh draws at the configured rate in call order and stops:
    its count is the kept units of the first j of them, for some j."""
    rec, r, kw = recorded
    seen, prefix = set(), [(0, 0)]
    for c in rec.calls:
        if c["rate"] != 0.3 or c["seed"] in seen:
            continue
        seen.add(c["seed"])
        u = _units(c)
        prefix.append((prefix[-1][0] + int(np.count_nonzero(u)), prefix[-1][1] + u.size))
    c = r.check("keep_fraction")
    assert (c.values["kept"], c.values["n"]) in prefix[1:]
    assert c.samples == c.values["n"]
    kept, n = c.values["kept"], c.values["n"]
    assert c.values["fraction"] == kept / n and c.observed == f"{kept}/{n} = {kept / n:.6g}"
    # the first documented model, an exact Bernoulli(1 - rate), is the one reported when it fits
    assert c.expected.startswith("one of ") and c.values["expected"] == 0.7
    # its interval is Clopper-Pearson at the test's own level; its detail names the fixed-n design
    ci = stats.binomtest(c.values["kept"], c.values["n"]).proportion_ci(1 - c.level)
    assert c.interval == pytest.approx((ci.low, ci.high), rel=1e-9, abs=0)
    fixed = ds.min_num_samples_for_rate_test(
        0.7, r.config["discrepancy"], false_fail_rate=c.level, false_pass_rate=r.config["false_pass_rate"]
    )
    short = [f for f in r.findings if f.name == "sample_size"]
    weaker = ""
    if short:  # cut short by max_calls: the detail says what the draws used can detect
        d = ds.min_discrepancy_detectable(
            0.7, c.values["n"], false_fail_rate=c.level, false_pass_rate=r.config["false_pass_rate"]
        )
        weaker = f"; cut short by max_calls, the {c.values['n']:,} draws used detect only +-{d:.3g}"
    assert c.detail.endswith(
        f"with false-pass <= {r.config['false_pass_rate']:g} (fixed-n would need {fixed:,})" + weaker
    )
    assert bool(short) == (kw.get("shape") == (2,))  # the one config too small for the design


def test_holm_levels_are_recomputed_from_the_reported_pvalues(recorded):
    """m planned statistical entries: keep_fraction at alpha / m, Holm over the others with the
    rest; an entry without a p-value takes no level."""
    _, r, _ = recorded
    stat = [c for c in r.checks if c.kind == "statistical" and c.pvalue is not None]
    m = len(stat)
    assert r.check("keep_fraction").level == pytest.approx(ALPHA / m, rel=1e-12, abs=0)
    holm = sorted((c for c in stat if c.name != "keep_fraction"), key=lambda c: c.pvalue)
    rest = ALPHA - ALPHA / m
    want = [rest / (len(holm) - rank) for rank in range(len(holm))]
    for p in {c.pvalue for c in holm}:  # tied p-values share their ranks' levels in any order
        ranks = [i for i, c in enumerate(holm) if c.pvalue == p]
        got = sorted(c.level for c in holm if c.pvalue == p)
        assert got == pytest.approx(sorted(want[i] for i in ranks), rel=1e-12, abs=0), p
    assert all(c.level is None for c in r.checks if c.pvalue is None)


def test_the_configs_show_every_bonferroni_factor():
    """A factor shows only where the smallest p-value times it stays below 1 (a p-value clipped
    at 1 hides it): for each check that multiplies, some config's reported p-value is below 1."""
    factors = [
        "seed_independence",
        "row_independence",
        "neighbour_independence",
        "threshold_flips",
        "value_independence",
    ]
    reported = {
        name: [
            r.check(name).pvalue
            for _, r, _ in map(_recorded, range(len(CONFIGS)))
            if any(c.name == name for c in r.checks)
        ]
        for name in factors
    }
    assert {name: min(p) < 1 for name, p in reported.items()} == dict.fromkeys(factors, True), reported


# -- the reports of broken implementations, recomputed ----------------------------------------


class Stateful(Recorder):
    """Hidden state: the n-th call adds n to its seed, so the same seed twice gives two masks."""

    def __call__(self, x, rate, seed, noise_shape=None):
        return super().__call__(x, rate, (seed[0], seed[1] + 7919 * len(self.calls)), noise_shape)


class Redraws(Recorder):
    """A fresh uniform for rates above 0.5 (another seed): right at 0.3, not nested above."""

    def __call__(self, x, rate, seed, noise_shape=None):
        return super().__call__(x, rate, (seed[0] + 1000 * (rate > 0.5), seed[1]), noise_shape)


class Overscaled(Recorder):
    """Kept values one part in 1000 too large at every rate."""

    def __call__(self, x, rate, seed, noise_shape=None):
        y = super().__call__(x, rate, seed, noise_shape)
        return (y.astype(np.float64) * 1.001).astype(x.dtype)


def test_seed_determinism_names_the_seed_it_called_twice():
    rec = Stateful()
    r = _run(rec, seed=4)
    d = r.check("seed_determinism")
    twice = rec.by_offset(4, 3)
    assert d.passed is False and d.samples == 2 * twice[0]["kept"].size
    assert len(twice) == 2 and twice[0]["kept"].shape == twice[1]["kept"].shape  # the repeat: (s + 3, 0) twice
    assert d.detail == "two calls with seed [7, 0] differ"
    assert f"fn(x[:{twice[0]['kept'].shape[0]}], 0.3, seed=[7, 0]) twice" in d.reproduce


def test_threshold_nesting_counts_the_recorded_violations():
    rec = Redraws()
    r = _run(rec, seed=6)
    sweep = sorted((c for c in rec.calls if c["seed"][1] == 0 and c["seed"][0] in (10, 1010)), key=lambda c: c["rate"])
    violations = sum(int(np.count_nonzero(hi["kept"] & ~lo["kept"])) for lo, hi in zip(sweep, sweep[1:], strict=False))
    c = r.check("threshold_nesting")
    assert c.passed is False and c.values["violations"] == violations > 0
    assert c.detail == "the mask is not a threshold of one uniform draw per position"
    assert c.observed == f"{violations} positions kept at a higher rate but dropped at a lower one"


def test_scale_failures_at_several_rates_are_all_named():
    """Every rate whose calls no formula matches is in the one failing entry."""
    rec = Overscaled()
    r = _run(rec, seed=8, exact_scale=True)
    c = r.check("scale")
    rates = sorted({call["rate"] for call in rec.calls}, key=lambda q: (q != 0.3, q))  # the rate asked for first
    assert c.passed is False and len(rates) == 3
    first, *rest = c.detail.split("; also ")
    assert first.startswith(f"at rate {rates[0]:g}, ") and len(rest) == 1
    assert [f"at rate {rate:g}" in rest[0] for rate in rates[1:]] == [True, True], rest


def _mean_bias(rate, shape=None):
    rec = Recorder()
    r = _run(rec, rate=rate, dtype="float16", seed=9, **({"shape": shape} if shape else {}))
    return rec, r, [f for f in r.findings if f.name == "mean_bias"]


# the measured ratio takes the main calls' outputs up to 1,000,000 elements, whole calls: the
# first ceil(1e6 / size).  Sizes where that boundary is met exactly: 500,000 (two calls end at
# 1e6: a third is not taken) and 333,333 (three end at 999,999: a fourth is); two elements (many
# small sums: a sum that did not start at 0 shows)
@pytest.mark.parametrize("shape", [None, (500_000,), (333_333,), (2,)])
def test_mean_bias_is_the_product_of_keep_and_scale(shape):
    """float16's fl(1/(1-rate)) makes E[y]/E[x] = keep * factor; reported from 1e-6 on."""
    rate = 0.1956  # keep * factor - 1 = 1.17e-6 (searched: between 1e-6 and 2e-6)
    rec, r, found = _mean_bias(rate, shape)
    factor = Fraction(float(np.float16(1 / (1 - rate))))
    bias = float(Fraction(1.0 - rate) * factor - 1)
    assert 1e-6 <= bias < 2e-6 and len(found) == 1
    assert found[0].value == pytest.approx(bias, rel=1e-9, abs=0)
    design = float(Fraction(1.0 - rate) * factor)
    assert found[0].detail.startswith(
        f"float16 at rate {rate}: with this keep probability and this scale factor "
        f"E[y]/E[x] = {design:.8g} before each value's rounding, biased by "
        f"{design - 1:+.3g} relative ("
    )
    assert f"kept values scaled by {float(factor):.8g} instead of 1/(1-rate) = {1 / (1 - rate):.8g}" in found[0].detail
    assert "keep " not in found[0].detail.split("(", 1)[1]  # the keep probability is 1 - rate exactly
    main = [c for c in rec.by_offset(9, 0) if c["rate"] == rate]
    x = main[0]["x"].astype(np.float64)
    used = main[: math.ceil(1_000_000 / x.size)]
    assert len(used) < len(main) or x.size == 2, "the boundary is not reached: more main calls needed"
    ys = [np.where(c["kept"], x * float(np.float16(1 / (1 - rate))), 0).astype(np.float16) for c in used]
    measured = sum(float(np.abs(y.astype(np.float64)).sum()) for y in ys) / (len(used) * np.abs(x).sum())
    assert found[0].measured == f"sum|y|/sum|x| = {measured:.6g} over {len(used) * x.size:,} elements of fn's outputs"


def test_mean_bias_of_a_divide_is_keep_over_the_rounded_divisor():
    """x / fl(1 - rate) in float16 at rate 0.3: E[y]/E[x] = (1 - rate) / fl16(0.7), the scale
    named as 1 / divisor."""

    class Divides(Recorder):
        def __call__(self, x, rate, seed, noise_shape=None):
            super().__call__(x, rate, seed, noise_shape)  # records the mask
            kept = self.calls[-1]["kept"]
            return np.where(kept, x / x.dtype.type(1 - rate), x.dtype.type(0)).astype(x.dtype)

    r = _run(Divides(), rate=0.3, dtype="float16", seed=9)
    divisor = Fraction(float(np.float16(1 - 0.3)))
    found = [f for f in r.findings if f.name == "mean_bias"]
    assert [f.value for f in r.findings if f.name == "scale_formula"] == ["divide"] and len(found) == 1
    assert found[0].value == pytest.approx(float(Fraction(1.0 - 0.3) / divisor - 1), rel=1e-9, abs=0)
    assert f"kept values scaled by {float(1 / divisor):.8g} instead of 1/(1-rate) = {1 / 0.7:.8g}" in found[0].detail


def test_mean_bias_below_a_millionth_is_not_reported():
    rate = 0.1937  # keep * factor - 1 = 9.8e-7
    bias = float(Fraction(1.0 - rate) * Fraction(float(np.float16(1 / (1 - rate)))) - 1)
    assert 0 < bias < 1e-6 and _mean_bias(rate)[2] == []


def test_a_design_completed_by_the_last_allowed_call_is_not_cut_short():
    """One call of exactly the sequential design's n_max draws, max_calls at its minimum: the run
    ends at max_calls, but the design is complete, so the detail claims no weaker detection."""
    from dropout_stats.sequential import SequentialRateTest

    # one keep model (1 - rate), whose design this test computes
    probe = _run(Recorder(), shape=(100_000,), seed=1, max_calls=5, strict_nominal=True)
    level = probe.check("keep_fraction").level  # alpha / m for a 1-D shape's plan
    n_max = SequentialRateTest(
        0.7, probe.config["discrepancy"], false_fail_rate=level, false_pass_rate=probe.config["false_pass_rate"]
    ).n_max
    r = _run(Recorder(), shape=(n_max,), seed=1, max_calls=5, strict_nominal=True)
    c = r.check("keep_fraction")
    assert c.level == level and c.values["n"] == n_max, (c.level, level, c.values)
    assert "cut short" not in c.detail and not [f for f in r.findings if f.name == "sample_size"]


def test_the_interval_of_a_tiny_budget_is_at_one_minus_1e_15():
    """Below 1e-15 the interval's confidence stays at 1 - 1e-15 (1 - 1e-30 is 1.0 in floats)."""
    r = _run(Recorder(), seed=2, false_fail_rate=1e-14)
    c = r.check("keep_fraction")
    assert c.level < 1e-15
    ci = stats.binomtest(c.values["kept"], c.values["n"]).proportion_ci(1 - 1e-15)
    assert c.interval == pytest.approx((ci.low, ci.high), rel=1e-9, abs=0)
    # and a share above 1e-15 (the recorded configs) is taken as it is: see the keep-fraction test


def test_call_independence_is_the_recorded_histogram(recorded):
    """Kept counts per position over the main calls against Binomial(calls, p-hat): binomial cells
    pooled left to right until each expects >= 1000 positions (a short last one joins the one
    before), Pearson's chi-square on cells - 2 degrees of freedom, from scipy."""
    rec, r, kw = recorded
    main = [_units(c) for c in rec.by_offset(kw["seed"], 0)]
    counts = sum(m.astype(np.int64) for m in main).ravel()
    c = r.check("call_independence")
    if counts.size < 3000:
        assert c.passed is None and c.pvalue is None and f"{counts.size} positions: too few" in c.detail
        return
    calls = len(main)
    want, df, o, e, stat = pooled_histogram(counts, calls)
    assert c.pvalue == pytest.approx(want, rel=1e-9, abs=0)
    assert (c.samples, c.values["df"], c.values["calls"]) == (counts.size * calls, df, calls)
    worst = int(np.argmax(np.abs(o - e) / np.sqrt(e)))
    assert c.observed == (
        f"chi2 {stat:.4g} on {df} df; largest cell {o[worst]:.0f} positions vs {e[worst]:.1f} expected"
    )
    assert c.expected == f"kept counts per position ~ Binomial({calls}, {counts.sum() / (counts.size * calls):.6g})"
    assert c.detail == f"histogram of {counts.size:,} positions' kept counts over {calls} calls, {len(o)} cells"


def test_scale_counts_every_recorded_call(recorded):
    """Every call's kept values are checked at that call's rate: all of them, from every purpose."""
    rec, r, kw = recorded
    c = r.check("scale")
    kept = sum(int(np.count_nonzero(call["kept"])) for call in rec.calls)
    rates = ", ".join(f"{rate:g}" for rate in sorted({call["rate"] for call in rec.calls}))
    factor = float(np.float32(1 / (1 - 0.3)))
    assert c.passed and c.samples == kept
    assert c.observed == f"every kept value = x * {factor!r} (fl(1/(1-rate)))"
    assert c.detail == f"{kept:,} kept values of {len(rec.calls)} calls at rates {rates}; formula 'multiply'"


def test_a_scale_failure_counts_the_calls_and_values_it_gathered():
    """At each failing rate: how many of its calls failed, and the kept values of whole calls in
    call order until at least 200,000 are gathered for the closest formula's count."""
    rec = Overscaled()
    r = _run(rec, seed=8, exact_scale=True)
    c = r.check("scale")
    at = {rate: [call for call in rec.calls if call["rate"] == rate] for rate in {call["rate"] for call in rec.calls}}
    # the rate asked for comes first; the sweep's rates follow, named as such
    assert c.detail.startswith(f"at rate 0.3, {len(at[0.3])} of {len(at[0.3])} calls: no formula matches")
    gathered = 0
    for call in at[0.3]:
        if gathered >= 200_000:
            break
        gathered += int(np.count_nonzero(call["kept"]))
    assert c.observed == f"{gathered:,}/{gathered:,} differ from the closest formula (multiply) at rate 0.3"
    low = min(at)
    n = sum(int(np.count_nonzero(call["kept"])) for call in at[low])
    assert f"{n:,}/{n:,} differ from the closest formula (multiply) at rate {low:g} (the rate sweep's" in c.detail


def test_a_float64_scale_failure_compares_every_formula_on_the_same_values():
    """float64's correctly rounded quotient needs exact fractions, so a float64 failure compares
    every formula on the first 20,000 kept values gathered (not the exact one on fewer: its
    counts would be smaller for that reason alone)."""
    rec = Overscaled()
    r = _run(rec, seed=8, dtype="float64", exact_scale=True)
    c = r.check("scale")
    assert c.passed is False
    first, *rest = c.detail.split("; also ")
    assert "closest " in first and ": 20,000 of 20,000 differ, largest distance " in first
    assert all(part.startswith("20,000/20,000 differ from the closest formula") for part in rest[0].split("; ")), rest


@pytest.mark.parametrize("axes", [8, 9])
def test_a_many_axis_shape_reports_its_axes_in_order(axes):
    """Each axis longer than 1 gets its homogeneity entry, in axis order, all together (a ninth
    axis's entry was once sorted to the end of the report)."""
    r = _run(Recorder(), seed=3, shape=(2,) * (axes - 1) + (512,))
    names = [c.name for c in r.checks]
    first = names.index("homogeneity_blocks")
    assert names[first : first + axes + 2] == [
        "homogeneity_blocks",
        "homogeneity_strided",
        *[f"homogeneity_axis{a}" for a in range(axes)],
    ]
    assert not names[first + axes + 2].startswith("homogeneity")


def test_a_scale_failure_at_one_rate_names_that_rate_alone():
    """Kept values off at the configured rate only (the sweep's other rates are right): one
    failing rate, so the entry is that rate's, with nothing appended."""

    class OverscaledAtTheRate(Recorder):
        def __call__(self, x, rate, seed, noise_shape=None):
            y = super().__call__(x, rate, seed, noise_shape)
            return (y.astype(np.float64) * (1.001 if rate == 0.3 else 1.0)).astype(x.dtype)

    c = _run(OverscaledAtTheRate(), seed=8).check("scale")
    assert c.passed is False and c.detail.startswith("at rate 0.3, ") and "; also " not in c.detail


def _ordered(v):
    """float32 values as integers in their order (adjacent floats differ by 1): sign-magnitude bits."""
    i = v.astype(np.float32).view(np.int32).astype(np.int64)
    return np.where(i < 0, -(i & 0x7FFFFFFF), i)


def test_a_scale_failure_reports_the_closest_formula_its_distance_and_the_ratios():
    """The failing entry's numbers from the recorded values: at each failing rate, the kept
    values of its calls in call order until at least 200,000 (whole calls), against x times
    fl(1/(1-rate)); the largest distance counted in float32 steps; y/x's range in float64."""
    rec = Overscaled()
    r = _run(rec, seed=8, exact_scale=True)
    c = r.check("scale")
    rates = sorted({call["rate"] for call in rec.calls}, key=lambda q: (q != 0.3, q))  # the rate asked for first
    parts = []
    for rate in rates:
        xs, ys, gathered = [], [], 0
        for call in (call for call in rec.calls if call["rate"] == rate):
            if gathered >= 200_000:
                break
            kept = call["kept"]
            xs.append(call["x"][kept])
            ys.append(((call["x"][kept] * np.float32(1 / (1 - rate))).astype(np.float64) * 1.001).astype(np.float32))
            gathered += xs[-1].size
        x, y = np.concatenate(xs), np.concatenate(ys)
        want = x * np.float32(1 / (1 - rate))
        ulp = int(np.abs(_ordered(want) - _ordered(y)).max())
        differ = int(np.count_nonzero(want != y))
        ratio = y.astype(np.float64) / x.astype(np.float64)
        parts.append((rate, differ, x.size, ulp, ratio.min(), ratio.max()))
    rate, differ, n, ulp, lo, hi = parts[0]
    calls = sum(call["rate"] == rate for call in rec.calls)
    assert rate == 0.3
    assert c.detail.split("; also ")[0] == (
        f"at rate 0.3, {calls} of {calls} calls: no formula matches every kept value; closest formula 'multiply': "
        f"{differ:,} of {n:,} differ, largest distance {ulp} ULP; y/x ranges over [{lo:.9g}, {hi:.9g}] where "
        f"1/(1-rate) = {1 / (1 - rate):.9g}"
    )
    assert c.observed == f"{differ:,}/{n:,} differ from the closest formula (multiply) at rate {rate:g}"
    assert c.detail.split("; also ")[1] == "; ".join(
        f"{d:,}/{m:,} differ from the closest formula (multiply) at rate {q:g} (the rate sweep's, used to test nesting)"
        for q, d, m, *_ in parts[1:]
    )
    assert c.samples == sum(int(np.count_nonzero(call["kept"])) for call in rec.calls)
    assert c.expected == "x*fl(1/(1-rate)), x/(1-fl(rate)) or round(x/(1-rate))"
    assert c.reproduce.endswith(f"rate {rate:g}") and 0.001 * 2**23 < ulp <= 0.001 * 2**24  # 1.001 in float32 steps


class KeepsAllBut(Recorder):
    """Every position kept but the first m, each kept value 1.001 too large: kept counts that
    are the same on every call of a shape, so the gathering's boundary is met exactly."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def __call__(self, x, rate, seed, noise_shape=None):
        y = (x.astype(np.float64) / (1 - rate) * 1.001).astype(x.dtype)
        y.reshape(-1)[: self.m] = 0
        self.calls.append(
            {"seed": tuple(int(s) for s in seed), "rate": rate, "ns": noise_shape, "x": x.copy(), "kept": y != 0}
        )
        return y


@pytest.mark.parametrize("m", [0, 1])
def test_a_scale_failure_gathers_whole_calls_until_200000_values(m):
    """200,000 kept values per call (m = 0): the first call completes the gathering, the second is
    not taken; 199,999 (m = 1): one short, so the second call is taken."""
    rec = KeepsAllBut(m)
    c = _run(rec, seed=8, shape=(200_000,), exact_scale=True).check("scale")
    at = [int(np.count_nonzero(call["kept"])) for call in rec.calls if call["rate"] == 0.3]
    assert at[0] == 200_000 - m and len(at) > 1
    n = at[0] + (at[1] if m else 0)
    assert c.observed == f"{n:,}/{n:,} differ from the closest formula (multiply) at rate 0.3", c.observed


class IgnoresNoiseShape(Recorder):
    """One draw per element whatever the noise shape (recorded with the noise shape it was asked for)."""

    def __call__(self, x, rate, seed, noise_shape=None):
        y = super().__call__(x, rate, seed)
        self.calls[-1]["ns"] = noise_shape
        return y


def _mixed(c):
    """(units with kept and dropped elements, units) of a call with a noise shape."""
    axes = tuple(i for i, (d, s) in enumerate(zip(c["ns"], c["kept"].shape, strict=True)) if d == 1 and s != 1)
    mixed = c["kept"].any(axis=axes) & ~c["kept"].all(axis=axes)
    return int(np.count_nonzero(mixed)), mixed.size


@pytest.mark.parametrize(
    "kw", [{"seed": 11, "shape": (16, 4, 4, 32), "noise_shape": (16, 1, 1, 32)}, {"seed": 7}], ids=["explicit", "probe"]
)
def test_an_ignored_noise_shape_counts_every_unit_with_mixed_fate(kw):
    """With an explicit noise shape, every call's units (main, seed, threshold calls: all of them
    have it); without one, the probe's units.  Each unit whose elements were kept and dropped apart
    is counted once."""
    rec = IgnoresNoiseShape()
    r = _run(rec, **kw)
    c = r.check("noise_shape_consistency")
    calls = [call for call in rec.calls if call["ns"] is not None]
    assert calls and (kw.get("noise_shape") is not None or {call["seed"][0] - 7 for call in calls} == {2})
    inconsistent, units = (sum(v) for v in zip(*map(_mixed, calls), strict=True))
    noise = list(calls[0]["ns"])
    assert c.passed is False and c.values == {"inconsistent": inconsistent, "units": units} and c.samples == units
    assert c.observed == f"{inconsistent} of {units:,} units with mixed fate" and inconsistent > units // 2
    assert c.detail == (
        f"noise_shape {noise} ignored or misapplied: {inconsistent} units have kept and dropped elements"
    )
    assert c.reproduce.endswith(f"noise_shape={noise}")
    if kw.get("noise_shape") is not None:  # no call had consistent units: the keep fraction has no draws
        k = r.check("keep_fraction")
        assert (k.passed, k.pvalue, k.samples) == (None, None, 0) and r.passed is False
        # no more main calls than the seed check's partners ask for (not max_calls: none would count)
        assert len(rec.by_offset(11, 0)) == len(rec.by_offset(11, 1)) + 1 < 100
        assert k.detail == (
            "no draws: every call had units with kept and dropped elements (noise_shape [16, 1, 1, "
            "32] ignored, see noise_shape_consistency)"
        )


# -- alpha dropout's affine check (the stateful contract), recomputed ----------------------------

_AP = -1.6732632423543772848170429916717 * 1.0507009873554804934193349852946  # -SELU alpha * scale


class AlphaRecorder:
    """A numpy alpha dropout, fn(x, rate, noise_shape=None): kept a x + b with two roundings
    (multiply, then add, as Keras), dropped a alpha' + b; ``offset`` added to the kept values
    (0 when right: corpus.alpha_wrong_offset adds 0.01).  Records each call's x, mask and y."""

    def __init__(self, offset=0.0, seed=0, all_but=None):
        self.calls, self.offset, self.rng = [], offset, np.random.default_rng(seed)
        self.all_but = all_but  # keep every position but the first all_but (a count fixed per call)

    @staticmethod
    def constants(rate, dtype):
        a = ((1 - rate) * (1 + rate * _AP**2)) ** -0.5
        return dtype.type(a), dtype.type(-a * _AP * rate)

    def __call__(self, x, rate, noise_shape=None):
        x = np.asarray(x)
        a, b = self.constants(rate, x.dtype)
        keep = np.broadcast_to(self.rng.random(noise_shape or x.shape) >= rate, x.shape)
        if self.all_but is not None:
            keep = np.arange(x.size).reshape(x.shape) >= self.all_but
        y = np.where(keep, a * x + b + x.dtype.type(self.offset), a * x.dtype.type(_AP) + b).astype(x.dtype)
        self.calls.append({"x": x.copy(), "kept": keep.copy(), "rate": rate, "y": y})
        return y


def _gathered(rec, limit=200_000):
    """The kept x and y of whole calls in call order until at least ``limit`` are gathered."""
    xs, ys, n = [], [], 0
    for c in rec.calls:
        if n >= limit:
            break
        xs.append(c["x"][c["kept"]])
        ys.append(c["y"][c["kept"]])
        n += xs[-1].size
    return np.concatenate(xs), np.concatenate(ys)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_alpha_dropout_values_are_checked_on_the_first_200000_kept(dtype):
    """Every kept value a x + b of the calls gathered (float64: the first 20,000 of them), the
    formula named with the constants rounded to the dtype."""
    rec = AlphaRecorder(seed=1)
    r = ds.verify_alpha_dropout(rec, rate=0.2, dtype=dtype, backend="numpy", false_fail_rate=ALPHA)
    c = r.check("scale")
    xs = _gathered(rec)[0][: 20_000 if dtype == "float64" else None]
    a, b = rec.constants(0.2, np.dtype(dtype))
    assert c.passed and c.samples == xs.size and c.detail == f"{xs.size:,} kept values"
    assert c.observed == "every kept value = a*x + b (two roundings)"
    assert c.expected.startswith(f"kept: a*x + b with a = {float(a)!r}, b = {float(b)!r}; dropped: ")
    assert [f.detail for f in r.findings if f.name == "affine_formula"] == [
        f"{dtype}: kept values are a*x + b with two roundings (multiply, then add)"
    ]


def test_alpha_dropout_with_a_wrong_offset_reports_the_closest_formula():
    """Kept values 0.01 too large: the closest of the two roundings and the fused multiply-add
    by the largest distance in float32 steps, then by the count (the first tried on a tie)."""
    rec = AlphaRecorder(offset=0.01, seed=2)
    c = ds.verify_alpha_dropout(rec, rate=0.2, backend="numpy", false_fail_rate=ALPHA).check("scale")
    a, b = rec.constants(0.2, np.dtype("float32"))
    xs, y = _gathered(rec)
    results = []
    for label, want in (
        ("two roundings", a * xs + b),
        ("fused", (xs.astype(np.float64) * float(a) + float(b)).astype(np.float32)),
    ):
        results.append((int(np.abs(_ordered(want) - _ordered(y)).max()), int(np.count_nonzero(want != y)), label))
    ulp, mismatch, label = min(results, key=lambda t: t[:2])
    assert c.passed is False and c.samples == xs.size
    assert c.observed == f"{mismatch:,} of {xs.size:,} kept values differ from a*x + b ({label})"
    assert c.detail == (
        f"neither two roundings nor a fused multiply-add matches; closest ({label}) is off by up to {ulp} ULP"
    )
    assert c.expected == f"kept: a*x + b with a = {float(a)!r}, b = {float(b)!r}"
    assert results[0][:2] != results[1][:2], results  # the order between them is seen


@pytest.mark.parametrize("m", [0, 1])
def test_alpha_dropout_gathers_whole_calls_until_200000_values(m):
    """200,000 kept values per call (m = 0): the first call completes the gathering; 199,999
    (m = 1): one short, so the second call is taken too."""
    rec = AlphaRecorder(all_but=m)
    c = ds.verify_alpha_dropout(rec, rate=0.2, shape=(200_000,), backend="numpy", false_fail_rate=ALPHA).check("scale")
    assert len(rec.calls) > 1 and c.passed
    assert c.samples == (200_000 if m == 0 else 2 * 199_999)


_QUOTIENTS: dict = {}


def _exact_quotients(x, rate):
    """x / (1 - rate) correctly rounded, every value by exact fractions (cached per input)."""
    key = (rate, x.tobytes())
    if key not in _QUOTIENTS:
        d = 1 - Fraction(rate)
        _QUOTIENTS[key] = np.array([float(Fraction(float(v)) / d) for v in x.ravel()]).reshape(x.shape)
    return _QUOTIENTS[key]


class ExactButOne(Recorder):
    """float64 kept values x / (1 - rate) correctly rounded (no numpy formula gives them all), but
    the kept value number ``wrong`` of each call (counted in C order, among its kept ones) one ULP
    high."""

    def __init__(self, wrong):
        super().__init__()
        self.wrong = wrong

    def __call__(self, x, rate, seed, noise_shape=None):
        super().__call__(x, rate, seed, noise_shape)
        kept = np.flatnonzero(self.calls[-1]["kept"])
        y = np.where(self.calls[-1]["kept"], _exact_quotients(x, rate), 0.0)
        if self.wrong < kept.size:
            y.flat[kept[self.wrong]] = np.nextafter(y.flat[kept[self.wrong]], np.inf)
        return y


@pytest.mark.parametrize("wrong,passes", [(20_000, True), (19_999, False), (0, False)])
def test_float64_kept_values_are_compared_exactly_on_the_first_20000(wrong, passes):
    """float64's correctly rounded quotient is compared on each call's first 20,000 kept values
    (exact fractions are slow): a value off at index 20,000 is not seen, at 19,999 or 0 it is."""
    rec = ExactButOne(wrong)
    c = _run(rec, seed=8, shape=(40_000,), dtype="float64", exact_scale=True).check("scale")
    assert max(int(np.count_nonzero(call["kept"])) for call in rec.calls) > 20_000
    assert c.passed is passes, c.observed
    if passes:
        assert c.observed == "every kept value = x / (1 - rate) correctly rounded"
    else:
        assert c.observed.startswith("1/20,000 differ from the closest formula (exact) at rate ")


class MixesSeed(Recorder):
    """seed[0] + seed[1] as one number: (s + 1, i) draws (s, i + 1)'s mask."""

    def __call__(self, x, rate, seed, noise_shape=None):
        y = super().__call__(x, rate, (seed[0] + seed[1], 0), noise_shape)
        self.calls[-1]["seed"] = tuple(int(v) for v in seed)  # the seed asked for
        return y


def test_seeds_mixed_into_one_number_fail_on_the_third_comparison():
    """corpus.mixes_seed in numpy: (s + 1, i) and (s, i + 1) draw one mask, so the third table
    holds identical masks (agreement 1), the other two independent ones; the entry reports that
    comparison, its Fisher p-value times 3, recomputed with scipy."""
    rec = MixesSeed()
    r = _run(rec, seed=7)
    main = [_units(c) for c in rec.by_offset(7, 0)]
    others = [_units(c) for c in rec.by_offset(7, 1)]
    stored = main[: len(others) + 1]
    p = [_fisher(stored[:-1], stored[1:]), _fisher(stored[:-1], others), _fisher(stored[1:], others)]
    c = r.check("seed_independence")
    assert c.passed is False and p[2][0] < 1e-300 and min(p[0][0], p[1][0]) > 1e-6
    assert c.pvalue == pytest.approx(min(1.0, 3 * p[2][0]), rel=REL, abs=0)
    assert c.values["agreement"] == 1.0 and c.samples == sum(n for _, n in p)
    assert c.observed == "agreement 1 ((seed[0] + 1, i) against (seed[0], i + 1))"
    assert c.detail.endswith("smallest p at (seed[0] + 1, i) against (seed[0], i + 1)")


class HiddenState(Recorder):
    """Each call's mask also depends on how many calls came before (the seed asked for is recorded)."""

    def __call__(self, x, rate, seed, noise_shape=None):
        y = super().__call__(x, rate, (seed[0], seed[1] + 7919 * len(self.calls)), noise_shape)
        self.calls[-1]["seed"] = tuple(int(v) for v in seed)
        return y


def test_the_first_of_the_two_same_seed_calls_is_the_fresh_draw():
    """seed_determinism calls fn twice with (s + 3, 0): the first is a fresh draw for the keep
    fraction, the second is not (a hidden state makes their masks differ, so which one is
    counted shows)."""
    rec = HiddenState()
    r = _run(rec, seed=5)
    twice = rec.by_offset(5, 3)
    assert len(twice) == 2 and not np.array_equal(twice[0]["kept"], twice[1]["kept"])
    seen, prefix = set(), [(0, 0)]
    for call in rec.calls:
        if call["rate"] == 0.3 and call["seed"] not in seen:  # the first call of each seed
            seen.add(call["seed"])
            prefix.append((prefix[-1][0] + int(np.count_nonzero(call["kept"])), prefix[-1][1] + call["kept"].size))
    k = r.check("keep_fraction")
    repeat_at = rec.calls.index(twice[0])
    used = [n for _, n in prefix].index(k.values["n"])
    assert (k.values["kept"], k.values["n"]) == prefix[used] and used > sum(
        1 for call in rec.calls[:repeat_at] if call["rate"] == 0.3
    )  # the repeat is within what was counted
    assert r.check("seed_determinism").passed is False


@pytest.mark.parametrize("seed", [1, 4])  # x positive at seed 1, negative at seed 4
def test_one_position_leaves_the_structure_checks_nothing_to_compare(seed):
    """Shape (1,): one group for every homogeneity grouping, one value of x (one sign, one
    magnitude), one position for the histogram: each entry not applicable, with its reason."""
    rec = Recorder()
    r = _run(rec, seed=seed, shape=(1,), max_calls=2000)
    assert (rec.calls[0]["x"][0] < 0) == (seed == 4)
    got = {c.name: (c.passed, c.pvalue, c.detail) for c in r.checks}
    assert got["homogeneity_blocks"] == (None, None, "fewer than 2 contiguous blocks of positions")
    assert got["homogeneity_strided"] == (None, None, "fewer than 2 positions mod 1")
    assert got["value_independence"] == (None, None, "x has one sign and one magnitude: nothing to compare")
    assert got["call_independence"][:2] == (None, None) and r.check("keep_fraction").passed


def test_value_independence_of_positive_inputs_is_the_trend_alone():
    """Alpha dropout's inputs are positive: no sign comparison, so the trend across bins of |x|
    is the entry's p-value, without a Bonferroni factor."""
    rec = AlphaRecorder(seed=3)
    r = ds.verify_alpha_dropout(rec, rate=0.2, backend="numpy", false_fail_rate=ALPHA)
    main = [c for c in rec.calls if c["kept"].shape == tuple(r.config["shape"])]
    x = main[0]["x"]
    assert (x > 0).all() and all(np.array_equal(c["x"], x) for c in main)
    per = sum(c["kept"].ravel().astype(np.int64) for c in main)
    bins = value_groups(x, FORMATS["float32"])[0].ravel() >> 1
    kb = np.bincount(bins, weights=per, minlength=8).astype(np.int64)
    nb = np.bincount(bins, minlength=8) * len(main)
    t = trend_test(kb[nb > 0], nb[nb > 0])
    c = r.check("value_independence")
    assert c.pvalue == pytest.approx(t.pvalue, rel=REL, abs=0) and c.samples == per.size * len(main)
    assert c.observed == f"trend z = {t.statistic:.3g} across {np.count_nonzero(nb)} bins of |x|"


def test_a_stateful_fn_ignoring_the_noise_shape_is_called_min_calls_times():
    """Stateful, with an explicit noise shape it ignores: no family but the keep fraction asks for
    main calls, and it stops asking after MIN_CALLS (5) without one usable draw."""
    calls = []

    def ignores(x, rate, noise_shape=None):
        calls.append(noise_shape)
        u = np.random.default_rng(len(calls)).random(x.shape)
        return np.where(u >= rate, x * x.dtype.type(1 / (1 - rate)), x.dtype.type(0)).astype(x.dtype)

    r = _run(ignores, stateful=True, shape=(16, 4, 4, 32), noise_shape=(16, 1, 1, 32))
    assert len(calls) == 5 and set(calls) == {(16, 1, 1, 32)}
    assert r.check("keep_fraction").passed is None and r.check("noise_shape_consistency").passed is False


@pytest.mark.parametrize("positions", [2999, 3000, 4000])
def test_call_independence_is_planned_from_3000_positions(positions):
    """Three cells of 1,000 expected positions need 3,000 positions: below, the entry is not
    planned (no share of the budget); from 3,000 it is, and the histogram itself then decides: at
    3,000 too few cells (the kept counts over the main calls fill two), at 4,000 three cells, one
    degree of freedom, the p-value scipy's."""
    rec = Recorder()
    r = _run(rec, seed=4, shape=(positions,))
    c = r.check("call_independence")
    calls = len(rec.by_offset(4, 0))
    if positions < 3000:
        assert (c.passed, c.pvalue) == (None, None)
        assert c.detail == f"{positions} positions: too few for a histogram of their kept counts (>= 3000 needed)"
    elif positions == 3000:
        assert (c.passed, c.pvalue) == (None, None)
        assert c.detail == f"{positions} positions x {calls} calls: too few for a histogram test"
    else:
        counts = sum(call["kept"].astype(np.int64) for call in rec.by_offset(4, 0))
        want, df, *_ = pooled_histogram(counts, calls)
        assert c.pvalue == pytest.approx(want, rel=1e-9, abs=0) and df == c.values["df"] == 1


@pytest.mark.parametrize("keep", [True, False], ids=["keeps_all", "drops_all"])
def test_call_independence_of_an_fn_that_keeps_or_drops_everything(keep):
    """p-hat of 1 or 0: no binomial histogram to compare with, said as such."""

    def constant(x, rate, seed, noise_shape=None):
        return (x / (1 - rate)).astype(x.dtype) if keep else np.zeros_like(x)

    c = _run(constant, seed=4, shape=(4000,)).check("call_independence")
    assert (c.passed, c.pvalue, c.detail) == (None, None, "every draw kept, or every draw dropped")


@pytest.mark.parametrize("rate", [1 - 2**-53, 2**-53])
def test_a_sweep_rate_that_keeps_all_or_nothing_leaves_one_rate_pair(rate):
    """At rate 1 - 2^-53 the sweep's top rate (1 + rate) / 2 rounds to 1.0 and keeps nothing; at
    rate 2^-53 the bottom one, rate / 2, keeps everything (1 - 2^-54 rounds to 1.0).  That rate is
    left out, and the two left make one pair, planned and tested (a discrepancy of 0.01 makes the
    keep fraction's design feasible so close to 0 or 1)."""
    rec = Recorder()
    r = _run(rec, seed=4, shape=(4096,), rate=rate, discrepancy=0.01, max_calls=50)
    sweep = sorted(rec.by_offset(4, 4), key=lambda c: c["rate"])
    assert [c["rate"] for c in sweep] == ([rate / 2, rate] if rate > 0.5 else [rate, (1 + rate) / 2])
    lo, hi = sweep
    flipped = int(np.count_nonzero(lo["kept"] & ~hi["kept"]))
    share = float(Fraction(1.0 - lo["rate"]) - Fraction(1.0 - hi["rate"]))
    flips = r.check("threshold_flips")
    assert flips.pvalue == pytest.approx(stats.binomtest(flipped, 4096, share).pvalue, rel=REL, abs=0)
    assert flips.observed == "1 rate pair" and flips.level is not None and r.check("threshold_nesting").passed
    # the pair is planned: thirteen entries share the budget (keep_fraction, threshold_flips,
    # seed_independence and seed_correlation, neighbour_independence, two homogeneity, value and
    # call independence, count_dispersion, repeats, auto- and cross-correlation), so the keep
    # fraction's share is alpha / 13
    planned = [
        "keep_fraction",
        "threshold_flips",
        "seed_independence",
        "seed_correlation",
        "neighbour_independence",
        "homogeneity_blocks",
        "homogeneity_strided",
        "value_independence",
        "call_independence",
        "count_dispersion",
        "repeats",
        "autocorrelation",
        "cross_correlation",
    ]
    assert [c.name for c in r.checks if c.name in planned] == planned
    assert r.check("keep_fraction").level == pytest.approx(ALPHA / len(planned), rel=1e-12, abs=0)


def _main_calls_expected(rec, r, s):
    """The main calls the documented stopping rule makes: after each main call, another one is
    made while the keep fraction's sequential test is undecided, or its fresh draws so far are
    fewer than min_n (the draws that see a 4x larger discrepancy, at the test's level), or fewer
    than MIN_CALLS (5) main calls were made, or (stateless) fewer than the seed check's stored
    masks (seed_other's calls + 1)."""
    k = r.check("keep_fraction")
    delta, beta = r.config["discrepancy"], r.config["false_pass_rate"]
    keep = r.check("keep_fraction").values["expected"]
    min_n = ds.min_num_samples_for_rate_test(
        keep, min(4 * delta, 0.5 * max(keep, 1 - keep)), false_fail_rate=k.level, false_pass_rate=beta
    )
    store = len(rec.by_offset(s, 1)) + 1
    seen, drawn, after = set(), 0, []
    for c in rec.calls:
        if c["rate"] == r.config["rate"] and c["seed"] not in seen:
            seen.add(c["seed"])
            drawn += _units(c).size
            if c["seed"][0] == s:  # a main call
                after.append(drawn)
    for m in range(1, len(after) + 1):
        if m >= 5 and m >= store and after[m - 1] >= min_n and after[m - 1] >= k.values["n"]:
            return m, min_n
    # the rule never met: only max_calls may have ended the run
    return (len(after) if len(after) == r.config.get("max_calls", 20_000) else None), min_n


def test_the_main_calls_stop_where_the_documented_rule_says(recorded):
    rec, r, kw = recorded
    want, _ = _main_calls_expected(rec, r, kw["seed"])
    assert len(rec.by_offset(kw["seed"], 0)) == want


class KeepsHalf(Recorder):
    """Keeps half of the draws whatever the rate: the sequential test fails within a few calls."""

    def __call__(self, x, rate, seed, noise_shape=None):
        y = super().__call__(x, 0.5, seed, noise_shape)
        self.calls[-1]["rate"] = rate  # the rate asked for
        return y


def test_a_run_decided_early_still_draws_min_n_for_the_structure_checks():
    """The keep fraction fails after a few thousand draws; the main calls go on until min_n
    draws (135,000 here, far more than the 64 stored masks of 512 units give), then stop."""
    rec = KeepsHalf()
    r = _run(rec, seed=6, shape=(512,))
    want, min_n = _main_calls_expected(rec, r, 6)
    k = r.check("keep_fraction")
    assert k.passed is False and k.values["n"] < 2 * 64 * 512 < min_n
    assert len(rec.by_offset(6, 0)) == want > 64


def test_min_n_sees_an_effect_of_at_most_half_the_larger_side():
    """A discrepancy of 0.2 asks min_n to see 4 x 0.2 = 0.8, beyond keep 0.7 itself: the effect is
    capped at half of max(keep, 1 - keep) = 0.35.  Stateful, two draws a call: no stored masks to
    wait for, so min_n alone sets the main calls."""
    calls = []

    def two(x, rate, noise_shape=None):
        u = np.random.default_rng(len(calls)).random(x.shape)
        calls.append(u >= rate)
        return np.where(calls[-1], x * x.dtype.type(1 / (1 - rate)), x.dtype.type(0)).astype(x.dtype)

    r = _run(two, stateful=True, shape=(2,), discrepancy=0.2)
    k = r.check("keep_fraction")
    min_n = ds.min_num_samples_for_rate_test(
        0.7, 0.35, false_fail_rate=k.level, false_pass_rate=r.config["false_pass_rate"]
    )
    want = max(5, math.ceil(min_n / 2), math.ceil(k.values["n"] / 2))
    assert len(calls) == want and math.ceil(min_n / 2) == want > 5, (len(calls), min_n, k.values)


def test_a_probe_of_two_calls_says_calls():
    """Shape (128, 2, 2, 256): the probe's noise shape (128, 1, 1, 256) holds 32,768 units, so
    65,536 take two calls, and the detail says so in the plural."""
    rec = Recorder()
    c = _run(rec, seed=5, shape=(128, 2, 2, 256)).check("noise_shape_units")
    assert len(rec.by_offset(5, 2)) == 2
    assert c.detail == "x [128, 2, 2, 256], noise_shape [128, 1, 1, 256]: one draw per unit, 2 calls"
