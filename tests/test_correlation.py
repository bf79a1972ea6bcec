"""The correlation family (autocorrelation, cross_correlation) on hand-made masks, no framework.

Its sums against brute-force loops, its tail bound against the Bernstein form it sharpens, its
false-fail rate measured at a loose level, and its power on defects whose miss chance is
computed here: a defect that makes m pairs identical contributes at least m * min(p, q)^2 to
the sum at its displacement (every term c^2 >= min(p, q)^2), whatever the draws, so the test
misses only if the remaining independent pairs pull the sum below the rejection threshold, a
chance bounded by the same Freedman bound the check uses (miss_bound).  The power tests use
defects with tens of thousands of identical pairs (z >= 100 where the threshold is near 8).
"""

from __future__ import annotations

import itertools
import math
import types

import numpy as np
import pytest
from scipy import stats
from scipy.stats import binom

from dropout_stats.battery.checks.correlation import (
    ETA,
    Correlation,
    bennett_tail,
    kept_count_bound,
    lag_pvalue,
    linear_displacements,
    linear_sum,
    pieces,
)

P = 0.8
LEVEL = 1e-12  # the p-value the power tests require (far below any Holm level of a run)


def check(masks, p=P, stateful=False, unit_shape=None):
    run = types.SimpleNamespace(
        unit_shape=unit_shape or masks[0].shape,
        stored_masks=masks,
        units=masks[0].size,
        cfg=types.SimpleNamespace(keep=p, stateful=stateful, reproduce=lambda *a: ""),
    )
    fam = Correlation.__new__(Correlation)
    fam.run, fam.cfg = run, run.cfg
    auto, cross = fam.conclude()
    return auto, cross


def miss_bound(identical_pairs: int, other_pairs: int, masks, tested: int, p=P) -> float:
    """P(the check misses): the identical pairs give S >= identical * min(p, q)^2; the test
    rejects at LEVEL once S reaches s_level; it misses only if the other pairs' sum is below
    s_level - floor, whose chance Freedman's bound gives (with v for those pairs)."""
    q = 1 - p
    floor = identical_pairs * min(p, q) ** 2
    v_all = kept_count_bound(masks, p)
    s_level = next(s for s in range(1, 10**7, 10) if lag_pvalue(s, v_all, p, tested) <= LEVEL)
    gap = floor - s_level
    assert gap > 0, "the defect is too weak for a computed bound"
    v_other = min(v_all, p * q * max(p, q) ** 2 * other_pairs)
    return bennett_tail(gap, v_other, p * q) + ETA


def test_linear_sum_against_a_loop():
    rng = np.random.default_rng(0)
    a, b = (rng.random((5, 7)) < 0.6 for _ in range(2))
    c = [m - 0.6 for m in (a, b)]
    for d in [(0, 1), (2, -3), (-4, 6), (1, 0), (0, 0)]:
        want_within = sum(
            c[0][i, j] * c[0][i + d[0], j + d[1]]
            for i in range(5)
            for j in range(7)
            if 0 <= i + d[0] < 5 and 0 <= j + d[1] < 7
        )
        want_cross = sum(
            c[0][i, j] * c[1][i + d[0], j + d[1]]
            for i in range(5)
            for j in range(7)
            if 0 <= i + d[0] < 5 and 0 <= j + d[1] < 7
        )
        got_within, _ = linear_sum([a], list(d), 0.6, True)
        got_cross, n = linear_sum([a, b], list(d), 0.6, False)
        assert got_within == pytest.approx(want_within, abs=1e-9)
        assert got_cross == pytest.approx(want_cross, abs=1e-9)
        assert n == (5 - abs(d[0])) * (7 - abs(d[1]))


def test_pieces_are_every_unwrapped_displacement_of_a_torus_cell():
    assert sorted(map(tuple, pieces((2, 0, 3), (5, 4, 6)))) == [(-3, 0, -3), (-3, 0, 3), (2, 0, -3), (2, 0, 3)]
    # every linear displacement lands in exactly one cell, so the Bonferroni count is the number
    # of non-zero displacements (halved within a call: d and -d are the same pairs)
    shape = (3, 4)
    cells = [(i, j) for i in range(3) for j in range(4)]
    every = {tuple(d) for cell in cells for d in pieces(cell, shape)} - {(0, 0)}
    assert len(every) == (2 * 3 - 1) * (2 * 4 - 1) - 1 == linear_displacements(shape, within=False) - 1
    assert linear_displacements(shape, within=True) == len(every) // 2


def test_bennett_bound_is_the_chernoff_bound_of_the_poisson():
    """With increments <= 1 and variance v, Bennett's bound is the Chernoff bound of a centred
    Poisson(v): above its exact tail, and within the Chernoff bound's usual polynomial factor
    (sqrt(2 pi s) here) of it.  The exact tail is scipy's; a bound off by a constant factor in
    the exponent leaves this window."""
    for v, s in [(4, 6), (30, 20), (100, 40), (1000, 150), (5000, 400)]:
        exact = stats.poisson.sf(v + s - 1, v)  # P(Poisson(v) - v >= s)
        bound = bennett_tail(s, v, 1.0)
        assert exact <= bound <= exact * 3 * math.sqrt(2 * math.pi * s), (v, s, exact, bound)


def test_bennett_bound_is_at_most_bernstein():
    for s, v, m in [(10, 100, 1), (300, 6710, 0.64), (5000, 6710, 0.16), (1, 1, 1)]:
        assert bennett_tail(s, v, m) <= math.exp(-s * s / (2 * (v + m * s / 3))) + 1e-300


def test_kept_count_bound_has_tail_eta():
    for p in (0.8, 0.3):
        masks = [np.zeros(1000, bool)]
        v = kept_count_bound(masks, p)
        q = 1 - p
        k = (v / (p * q) - 1000 * p * p) / (q * q - p * p)  # invert v = pq (N p^2 + K (q^2 - p^2))
        tail = binom.sf(round(k), 1000, p) if q > p else binom.cdf(round(k) - 1, 1000, p)
        assert tail <= ETA


@pytest.mark.statistical(false_fail_rate=1e-9)
def test_false_fail_rate_at_a_loose_level(seed):
    """300 pairs of null masks at level 0.05: rejections are Binomial(300, <= 0.05) per entry, so
    more than binom.isf(5e-10, 300, 0.05) of them happens with probability <= 1e-9 over both."""
    rng = np.random.default_rng(seed)
    bound = binom.isf(5e-10, 300, 0.05)
    rejected = np.zeros(2, int)
    for _ in range(300):
        auto, cross = check([rng.random((16, 64)) < P for _ in range(2)])
        rejected += [auto.pvalue <= 0.05, cross.pvalue <= 0.05]
    assert (rejected <= bound).all(), rejected


@pytest.mark.parametrize("period", [2, 3, 64, 1000, 2048, 3000, 65536])
def test_a_mask_repeating_with_any_period_fails_autocorrelation(period, seed):
    rng = np.random.default_rng(seed)
    masks = [np.resize(rng.random(period) < P, 1 << 18).reshape(64, 4096) for _ in range(2)]
    auto, _ = check(masks)
    assert auto.pvalue <= LEVEL, auto
    d0, d1 = divmod(period, 4096)
    if auto.observed.startswith(f"displacement [{d0}, {d1}]"):
        # the piece reported holds (64 - d0) * (4096 - d1) identical pairs per mask: its miss
        # chance, computed, is far below the 1e-12 the suite's budget would need to count it
        identical = 2 * (64 - d0) * (4096 - d1)
        assert (
            miss_bound(identical, 2 * (1 << 18) - identical, masks, linear_displacements((64, 4096), True) - 2) < 1e-12
        )


def test_rows_some_distance_apart_fail_and_the_pair_checks_lags_are_left_to_them(seed):
    rng = np.random.default_rng(seed)
    m = rng.random((64, 4096)) < P
    m[5:] = m[:-5]  # every row equals the one five above: displacement (5, 0)
    auto, _ = check([m, rng.random((64, 4096)) < P])
    assert auto.pvalue <= LEVEL and auto.observed.startswith(("displacement [5, 0]", "displacement [-5, 0]")), auto
    # neighbours (0, 1) and rows (1, 0) belong to the pair checks: identical neighbour pairs are
    # not flagged at (0, 1) (the check leaves that lag out).  Not asserted: that no other lag
    # flags them, since the copies make the other lags' terms pairwise equal, so the check's null
    # (independent terms) does not hold there and its level is not this test's false-fail rate
    pairs = np.repeat(rng.random((64, 2048)) < P, 2, axis=1)
    auto, _ = check([pairs, rng.random((64, 4096)) < P])
    assert not auto.observed.startswith(("displacement [0, 1]", "displacement [0, -1]")), auto


@pytest.mark.parametrize("shift", [1, -3, 4096, 4097, -4097, 70000])  # 4097: (1, 1)
def test_the_next_call_shifted_fails_cross_correlation(shift, seed):
    rng = np.random.default_rng(seed)
    stream = rng.random((1 << 18) + 160000) < P
    start = 80000
    masks = [
        stream[start : start + (1 << 18)].reshape(64, 4096),
        stream[start + shift : start + shift + (1 << 18)].reshape(64, 4096),
    ]
    _, cross = check(masks)
    assert cross.pvalue <= LEVEL, cross


def test_shift_zero_belongs_to_seed_independence_unless_stateful(seed):
    rng = np.random.default_rng(seed)
    m = rng.random((16, 256)) < P
    _, stateless = check([m, m.copy()])
    _, stateful = check([m, m.copy()], stateful=True)
    assert stateless.pvalue > LEVEL and stateful.pvalue <= LEVEL
    assert stateful.observed.startswith("displacement [0, 0]")


def test_broadcast_axes_are_dropped_and_a_1d_mask_works(seed):
    rng = np.random.default_rng(seed)
    m = rng.random((32, 1, 1, 64)) < P
    auto, cross = check([m, rng.random((32, 1, 1, 64)) < P])
    assert "mask [32, 64]" in auto.detail
    one = np.resize(rng.random(7) < P, 4096)
    auto, _ = check([one, rng.random(4096) < P])
    assert auto.pvalue <= LEVEL


# -- the family's arithmetic against independent computations (exact; no verdict is random) ---


def _chernoff(s, v, m):
    """Bennett's bound computed as what it is, the optimised Chernoff bound
    inf_l exp(-l s + (v / m^2)(e^(l m) - 1 - l m)), by scipy's scalar minimiser."""
    from scipy import optimize

    f = lambda lam: -lam * s + (v / (m * m)) * math.expm1(lam * m) - (v / (m * m)) * lam * m  # noqa: E731
    r = optimize.minimize_scalar(f, bounds=(0, 50 / m), method="bounded", options={"xatol": 1e-12})
    return math.exp(min(0.0, r.fun))


@pytest.mark.parametrize(
    "s,v,p,tested",
    [
        (40.0, 500.0, 0.8, 1),
        (40.0, 500.0, 0.8, 7),
        (-40.0, 500.0, 0.8, 7),
        (25.0, 900.0, 0.3, 100),
        (3.0, 500.0, 0.8, 5),
        (400.0, 500.0, 0.6, 3),
    ],
)
def test_lag_pvalue_is_bonferroni_over_both_bennett_tails_plus_eta(s, v, p, tested):
    """Two-sided: increments lie in [-pq, max(p, q)^2], so the upper tail has range max(p, q)^2
    and the lower pq; Bonferroni multiplies by the lags tested; ETA is added; capped at 1."""
    q = 1 - p
    want = min(1.0, tested * (_chernoff(abs(s), v, max(p, q) ** 2) + _chernoff(abs(s), v, p * q)) + ETA)
    got = lag_pvalue(s, v, p, tested)
    # rel 1e-6: the minimiser's xatol (1e-12) leaves the exponent far more exact than that, and
    # every mutation of the bound changes the p-value by a factor or more
    assert got == pytest.approx(want, rel=1e-6, abs=1e-300) and ETA <= got <= 1.0


def test_kept_count_bound_is_the_exact_eta_quantile_of_the_kept_count():
    """v = pq (N p^2 + K (q^2 - p^2)) at K's quantile on the side that makes sum c^2 larger:
    the smallest k with P(K > k) <= ETA when q >= p, the smallest k with P(K <= k) >= ETA when
    q < p; found here by scanning scipy's cdf, over masks of different sizes (N is their sum)."""
    masks = [np.zeros(600, bool), np.zeros((20, 20), bool)]
    n = 1000
    ks = np.arange(n + 1)
    for p in (0.8, 0.3, 0.5):
        q = 1 - p
        if q >= p:
            k = int(ks[binom.sf(ks, n, p) <= ETA][0])
        else:
            k = int(ks[binom.cdf(ks, n, p) >= ETA][0])
        assert kept_count_bound(masks, p) == pytest.approx(p * q * (n * p * p + k * (q * q - p * p)), rel=1e-12, abs=0)


def _family(unit_shape, units=None):
    fam = Correlation.__new__(Correlation)
    fam.run = types.SimpleNamespace(unit_shape=unit_shape, units=units or math.prod(unit_shape))
    return fam


def test_applies_from_four_units():
    assert not _family((3,)).applies() and _family((4,)).applies()


@pytest.mark.parametrize(
    "unit_shape,want",
    [
        ((8,), {(1,)}),  # neighbours only
        ((4, 8), {(0, 1), (1, 0)}),  # neighbours and rows
        ((4, 1), {(1,)}),  # a column: its first axis is both
        ((1, 8), {(1,)}),  # a row: neighbours; no second row
        ((4, 1, 8), {(0, 1), (1, 0)}),  # broadcast axes dropped from the displacement
        ((1, 8, 1), set()),  # neither the first nor the last axis is longer than 1
        ((2, 3, 5), {(0, 0, 1), (1, 0, 0)}),
        ((4, 2), {(0, 1), (1, 0)}),  # a last axis of length 2 has neighbours too
    ],
)
def test_excluded_are_the_pair_checks_displacements_with_their_negatives(unit_shape, want):
    """One step along the last axis (neighbours) and along the first (rows), when those axes are
    longer than 1, in the coordinates of the axes longer than 1, each with its negative."""
    assert _family(unit_shape).excluded() == want | {tuple(-v for v in d) for d in want}


def _brute_tested(shape, within, skip):
    """Displacements with at least one pair, counted by enumeration: non-zero and up to sign
    within a call; every one (0 included) between calls; minus the skipped ones."""
    ds = set(itertools.product(*[range(-(s - 1), s) for s in shape]))
    if within:
        ds = {d for d in ds if any(d) and d > tuple(-v for v in d)}  # one of each {d, -d}
        return len(ds) - len({d for d in skip if d > tuple(-v for v in d)})
    return len(ds - skip)


@pytest.mark.parametrize("stateful", [False, True])
def test_tested_counts_and_samples_against_enumeration(stateful):
    rng = np.random.default_rng(5)
    masks = [rng.random((5, 6)) < P for _ in range(3)]
    auto, cross = check(masks, stateful=stateful)
    fam = _family((5, 6))
    assert auto.values["tested"] == _brute_tested((5, 6), True, fam.excluded()) == (9 * 11 - 1) // 2 - 2
    assert type(auto.values["tested"]) is int and "(47 tested)" in auto.expected  # a count, printed as one
    assert cross.values["tested"] == _brute_tested((5, 6), False, set() if stateful else {(0, 0)})
    assert (auto.samples, cross.samples) == (3 * 30, 2 * 30)


def test_one_stored_call_has_no_cross_correlation():
    auto, cross = check([np.random.default_rng(6).random((8, 8)) < P])
    assert auto.passed is True and cross.passed is None and "one stored call" in cross.detail


def test_the_chosen_displacement_reports_its_exact_sum_pairs_and_pvalue():
    """Rows equal three apart: the check reports displacement +-(3, 0); its correlation, pair
    count and p-value against a loop over the pairs and the bound's own pieces."""
    rng = np.random.default_rng(7)
    m = np.tile(rng.random((3, 64)) < P, (14, 1))[:40]  # row i + 3 is row i
    other = rng.random((40, 64)) < P
    auto, _ = check([m, other])
    d = auto.values["displacement"]
    assert abs(d[0]) == 3 and d[1] == 0, auto
    c = [x - P for x in (m, other)]
    s = sum(float((ci[:37] * ci[3:]).sum()) for ci in c)
    pq = P * (1 - P)
    assert auto.values["pairs"] == 2 * 37 * 64
    # the printed correlation is the pairs' sample (phi) correlation, always in [-1, 1]
    a = np.concatenate([m[:37].ravel(), other[:37].ravel()]).astype(float)
    b = np.concatenate([m[3:].ravel(), other[3:].ravel()]).astype(float)
    assert auto.values["correlation"] == pytest.approx(np.corrcoef(a, b)[0, 1], rel=1e-9, abs=0)
    v = min(kept_count_bound([m, other], P), pq * P * P * 2 * 37 * 64)
    assert auto.pvalue == pytest.approx(lag_pvalue(s, v, P, auto.values["tested"]), rel=1e-9, abs=0)
    assert f"over {2 * 37 * 64:,} pairs" in auto.observed and "(z = " in auto.observed


def _torus_maxima(masks, within, skip, p):
    """The displacement cells with the largest |sum of c c'| on the torus (ties all listed: the
    sums lie on a lattice), by a loop over every cell, lag 0 within a call and skipped lags aside;
    within a call d and -d are one cell, so mirrors are added."""
    shape = masks[0].shape
    c = [m - p for m in masks]
    partners = [(a, a) for a in c] if within else list(zip(c, c[1:], strict=False))
    skipped = {tuple(v % s for v, s in zip(k, shape, strict=True)) for k in skip}
    values = {}
    for d in itertools.product(*[range(s) for s in shape]):
        if (within and not any(d)) or d in skipped:
            continue
        values[d] = abs(
            sum(float((a * np.roll(b, [-x for x in d], axis=tuple(range(len(shape))))).sum()) for a, b in partners)
        )
    top = max(values.values())
    cells = {d for d, v in values.items() if v > top - 1e-6}
    return cells | {tuple(-v % s for v, s in zip(d, shape, strict=True)) for d in cells} if within else cells


@pytest.mark.parametrize("stateful", [False, True])
def test_the_tested_displacement_is_the_torus_maximum_by_a_loop(stateful):
    """The FFT's choice against a loop over every cell: the chosen linear displacement wraps to
    a cell whose |correlation| is the largest."""
    rng = np.random.default_rng(13)
    shape, p = (6, 8), 0.71  # keep 0.71: fewer ties on the sums' lattice than at 0.8
    masks = [rng.random(shape) < p for _ in range(3)]
    auto, cross = check(masks, p=p, stateful=stateful)
    wrap = lambda d: tuple(v % s for v, s in zip(d, shape, strict=True))  # noqa: E731
    within = _torus_maxima(masks, True, _family(shape).excluded(), p)
    between = _torus_maxima(masks, False, set() if stateful else {(0, 0)}, p)
    assert wrap(auto.values["displacement"]) in within, (auto.values, within)
    assert wrap(cross.values["displacement"]) in between, (cross.values, between)
    assert len(within) <= 2 and len(between) <= 2  # one or two cells of 48: little room to hide in


def test_axes_of_length_two_are_kept():
    rng = np.random.default_rng(14)
    auto, _ = check([rng.random((2, 32)) < P for _ in range(2)])
    assert "mask [2, 32]" in auto.detail


def test_lag_zero_is_set_aside_when_no_pair_check_excludes_anything():
    """A unit shape (1, 16, 1): no lag is the pair checks', and lag 0 (the variance) must still
    not be the displacement tested."""
    rng = np.random.default_rng(15)
    masks = [rng.random(16) < P for _ in range(2)]
    auto, _ = check(masks, unit_shape=(1, 16, 1))
    assert auto.values["displacement"] != [0] and "no pairs" not in auto.detail, auto


def test_eta_is_the_rate_the_module_declares():
    """The docstring's promise (sum c^2 exceeds its bound with probability <= 1e-50) is ETA."""
    import dropout_stats.battery.checks.correlation as module

    assert "probability <= 1e-50" in module.__doc__ and ETA == 1e-50


def test_a_far_displacement_between_later_calls_uses_the_pair_count_bound():
    """Four calls of 256 units, keep 0.3: the second half of calls 2 and 3 repeats the first half
    of the call before (displacement 128, 128 pairs each), calls 0 and 1 independent.  The check
    must find it from every consecutive pair of calls (not the first alone) and bound the
    variance of its 384 pairs by every increment at its largest, pq * max(p, q)^2 * 384, which is
    below the kept-count bound of the three earlier calls (and above that of one call alone)."""
    p, q = 0.3, 0.7
    rng = np.random.default_rng(21)
    masks = [rng.random(256) < p for _ in range(4)]
    for i in (2, 3):
        masks[i][128:] = masks[i - 1][:128]
    _, cross = check(masks, p=p)
    assert cross.values["displacement"] == [128] and cross.values["pairs"] == 3 * 128, cross
    c = [m - p for m in masks]
    s = sum(float((a[:128] * b[128:]).sum()) for a, b in zip(c, c[1:], strict=False))
    largest = max((1 - p) ** 2, p**2)  # c is 1 - p when kept, -p when dropped
    by_pairs, by_count = p * q * largest * 3 * 128, kept_count_bound(masks[:3], p)
    assert kept_count_bound(masks[:1], p) < by_pairs < by_count  # the pair bound is the one in force
    tested = cross.values["tested"]
    assert type(tested) is int and tested == 2 * 256 - 1 - 1 and f"({tested:,} tested)" in cross.expected
    assert cross.pvalue == pytest.approx(lag_pvalue(s, by_pairs, p, tested), rel=1e-9, abs=0)
    assert 1e-49 < cross.pvalue < 1e-6  # neither clamped at 1 nor at the ETA floor: v shows
    pq = p * q
    a = np.concatenate([m[:128] for m in masks[:3]]).astype(float)
    b = np.concatenate([m[128:] for m in masks[1:]]).astype(float)
    phi = np.corrcoef(a, b)[0, 1]  # the pairs' sample correlation, in [-1, 1]
    assert cross.observed == (
        f"displacement [128]: correlation {phi:.4g} over 384 pairs (z = {s / math.sqrt(384) / pq:.3g})"
    )


def test_every_lag_below_z_one_still_tests_a_lag_the_pair_checks_leave():
    """Four units, two calls (seed 2: |z| = 0.18 at the only tested lag, 2): lag 0 and the pair
    checks' lags +-1 are set aside by zeroing their z, not by a value the tested lag can lose to."""
    rng = np.random.default_rng(2)
    masks = [rng.random(4) < P for _ in range(2)]
    c = [m - P for m in masks]
    z2 = abs(sum(float((a * np.roll(a, -2)).sum()) for a in c)) / (math.sqrt(2 * 4) * P * (1 - P))
    assert 0 < z2 < 1
    auto, _ = check(masks)
    assert auto.values["displacement"] in ([2], [-2]) and auto.values["tested"] == 2, auto  # 2 and 3


def test_no_pairs_at_the_chosen_cell_when_every_tested_lag_sums_to_zero():
    """Keep 0.5, masks [1, 1, 1, 0]: c = (.5, .5, .5, -.5) sums to exactly 0 at lag 2, the only
    lag left; the check passes with p = 1 and names no displacement (not lag 0's variance)."""
    m = np.array([True, True, True, False])
    auto, _ = check([m, m.copy(), m.copy()], p=0.5)
    assert (auto.passed, auto.pvalue, auto.samples, auto.detail) == (True, 1.0, 12, "no pairs at the chosen cell"), auto
    assert "displacement" not in auto.values


def test_a_tie_between_pieces_reports_the_first_non_negative_one():
    """Keep 0.5, masks [1, 1, 0, 0]: lag 2's two pieces (+2 and -2) have the same sum and pairs,
    so the same p-value; the report names +2, the first of pieces()."""
    m = np.array([True, True, False, False])
    auto, _ = check([m, m.copy()], p=0.5)
    assert auto.values["displacement"] == [2], auto


def test_detail_names_whose_lags_were_left_out():
    rng = np.random.default_rng(22)
    masks = [rng.random((8, 8)) < P for _ in range(2)]
    auto, cross = check(masks)
    _, stateful = check(masks, stateful=True)
    assert "are the pair checks'" in auto.detail and "seed_independence" not in auto.detail
    assert cross.detail.endswith("; displacement 0 is seed_independence's") and "pair checks" not in cross.detail
    assert "seed_independence" not in stateful.detail and "pair checks" not in stateful.detail
