"""Experiment design, checked against brute force: scipy's own p-values at every count."""

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import stats

from dropout_stats import (
    min_discrepancy_detectable,
    min_num_samples_for_rate_test,
    power_of_rate_test,
    rejection_region_for_rate_test,
)


def brute_force_power(n, p0, alts, alpha):
    """Power of scipy.stats.binomtest itself: its rejection set, summed under each alternative."""
    k = np.arange(n + 1)
    rejected = np.array([stats.binomtest(int(i), n, p0).pvalue <= alpha for i in k])
    return min(float(stats.binom.pmf(k[rejected], n, q).sum()) for q in alts)


@settings(max_examples=25)
@given(
    p0=st.floats(0.05, 0.95),
    rel=st.floats(0.08, 0.6),
    alpha=st.sampled_from([1e-2, 1e-4, 1e-6]),
    beta=st.sampled_from([0.2, 1e-2, 1e-3]),
)
def test_min_num_samples_is_a_crossing_of_exact_power(p0, rel, alpha, beta):
    delta = rel * min(p0, 1 - p0)
    n = min_num_samples_for_rate_test(p0, delta, false_fail_rate=alpha, false_pass_rate=beta)
    assume(n <= 1500)
    alts = [q for q in (p0 - delta, p0 + delta) if 0 <= q <= 1]
    assert brute_force_power(n, p0, alts, alpha) >= 1 - beta
    assert n == 1 or brute_force_power(n - 1, p0, alts, alpha) < 1 - beta


@settings(max_examples=30)
@given(n=st.integers(20_001, 10**9), p0=st.floats(0.01, 0.99), alpha=st.sampled_from([1e-3, 1e-6, 1e-9]))
def test_large_n_rejection_region_matches_scipy_pvalues(n, p0, alpha):
    """At large n both boundaries, and the counts just inside them, are binomtest's verdicts."""
    r = rejection_region_for_rate_test(n, p0, false_fail_rate=alpha)
    for k, rejected in ((r.low, True), (r.low + 1, False), (r.high - 1, False), (r.high, True)):
        if 0 <= k <= n:
            assert (stats.binomtest(k, n, p0).pvalue <= alpha) == rejected, (k, r)


def test_issue_example_exact_binomial_needs_far_fewer_draws_than_dkwm():
    # TFP's min_num_samples_for_dkwm_cdf_test(0.01, 1e-6, 1e-6) asks for 290,174 samples (a
    # number from TFP, quoted, not recomputed here); the exact test needs under a third
    n = min_num_samples_for_rate_test(0.1, 0.01, false_fail_rate=1e-6, false_pass_rate=1e-6)
    assert 3 * n < 290_174
    assert power_of_rate_test(n, 0.1, 0.01, false_fail_rate=1e-6) >= 1 - 1e-6
    assert power_of_rate_test(n - 1, 0.1, 0.01, false_fail_rate=1e-6) < 1 - 1e-6


def test_rejects_is_scipys_rejection_set_at_every_count():
    """rejects(k) against scipy.stats.binomtest(k, n, p).pvalue <= alpha for every k: both ends of
    both tails, off-by-one included."""
    for n, p, alpha in [
        (40, 0.8, 1e-3),
        (200, 0.3, 1e-6),
        (1000, 0.5, 0.05),
        (25_000, 0.8, 1e-9),
        (10**6, 0.3, 1e-40),
    ]:  # 1e-40: a level far below 1e-16, where scipy's binom.isf says n
        region = rejection_region_for_rate_test(n, p, false_fail_rate=alpha)
        ks = (
            range(n + 1)
            if n <= 1000
            else [*range(region.low - 3, region.low + 4), *range(region.high - 3, region.high + 4)]
        )
        for k in ks:
            assert region.rejects(k) == (stats.binomtest(k, n, p).pvalue <= alpha), (n, p, alpha, k)


def test_the_readme_design_is_pinned():
    """The n the bisection returns for the README's example, and that it is a crossing: a change of
    the search (its start guess, its bracket) that lands on another crossing of the sawtooth
    shows here."""
    n = min_num_samples_for_rate_test(0.8, 0.002)
    assert n == 2_557_371
    assert power_of_rate_test(n, 0.8, 0.002) >= 1 - 1e-3 > power_of_rate_test(n - 1, 0.8, 0.002)


def test_large_design_is_still_a_crossing():
    # n* above 10^7: found by bisection on exact power (a scan from 1 would take hours;
    # benchmarks/design.py times it)
    n = min_num_samples_for_rate_test(0.8, 0.0002)
    assert n > 10**7
    assert power_of_rate_test(n, 0.8, 0.0002) >= 1 - 1e-3 > power_of_rate_test(n - 1, 0.8, 0.0002)


@settings(max_examples=20)
@given(
    p0=st.floats(0.05, 0.95),
    n=st.integers(50, 10**7),
    alpha=st.sampled_from([1e-3, 1e-6]),
    beta=st.sampled_from([1e-2, 1e-3]),
)
def test_min_discrepancy_inverts_min_num_samples(p0, n, alpha, beta):
    """The returned discrepancy is exact to the bit: detected on both sides, and at the float just
    below it some side is missed with probability above beta (miss checked against a pmf sum in
    test_miss_is_the_accepted_mass_down_to_1e200)."""
    d = min_discrepancy_detectable(p0, n, false_fail_rate=alpha, false_pass_rate=beta)
    assume(math.isfinite(d) and d < min(p0, 1 - p0))
    region = rejection_region_for_rate_test(n, p0, false_fail_rate=alpha)
    assert max(region.miss(p0 - d), region.miss(p0 + d)) <= beta
    below = math.nextafter(d, 0)
    assert max(region.miss(p0 - below), region.miss(p0 + below)) > beta


def test_too_few_draws_detect_nothing():
    assert min_discrepancy_detectable(0.8, 5) == math.inf


def test_one_sided_alternative_near_the_edge():
    # keep 0.999 and discrepancy 0.005: only keep - discrepancy lies inside [0, 1]
    n = min_num_samples_for_rate_test(0.999, 0.005)
    assert power_of_rate_test(n, 0.999, 0.005) >= 1 - 1e-3


def test_defaults_are_the_documented_error_rates():
    """false_fail_rate 1e-6 and false_pass_rate 1e-3 when not given (the signatures' documented
    defaults), each against the explicit call."""
    r = rejection_region_for_rate_test(5000, 0.8)
    assert r == rejection_region_for_rate_test(5000, 0.8, false_fail_rate=1e-6) and r.false_fail_rate == 1e-6
    assert power_of_rate_test(5000, 0.8, 0.03) == power_of_rate_test(5000, 0.8, 0.03, false_fail_rate=1e-6)
    assert min_num_samples_for_rate_test(0.8, 0.03) == min_num_samples_for_rate_test(
        0.8, 0.03, false_fail_rate=1e-6, false_pass_rate=1e-3
    )
    assert min_discrepancy_detectable(0.8, 5000) == min_discrepancy_detectable(
        0.8, 5000, false_fail_rate=1e-6, false_pass_rate=1e-3
    )
    # at these arguments a doubled rate changes every answer (region 3863/4133 against 3859/4137,
    # power 0.674 against 0.624, n 11,272 at false pass 2e-3 against 11,854): a changed default shows
    assert power_of_rate_test(5000, 0.8, 0.03) != power_of_rate_test(5000, 0.8, 0.03, false_fail_rate=2e-6)
    assert min_num_samples_for_rate_test(0.8, 0.03) != min_num_samples_for_rate_test(0.8, 0.03, false_pass_rate=2e-3)
    assert min_discrepancy_detectable(0.8, 5000) != min_discrepancy_detectable(0.8, 5000, false_pass_rate=2e-3)


def test_regions_are_frozen():
    import dataclasses

    r = rejection_region_for_rate_test(100, 0.5, false_fail_rate=0.01)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.low = 0


def test_small_regions_at_loose_levels_are_scipys():
    """Every count of n <= 30 at levels up to 0.99: the region's least likely counts (whose p-value
    is their own mass plus the unseen tails) and ties between the two tails decide here, and at
    0.9 and 0.99 every count but the most likely few is rejected (the tails meet the mean)."""
    for n in range(1, 31):
        for p in (0.1, 0.25, 0.4, 0.5, 0.7, 0.9, 0.97):
            for alpha in (0.99, 0.9, 0.5, 0.3, 0.05, 0.01, 1e-3):
                region = rejection_region_for_rate_test(n, p, false_fail_rate=alpha)
                for k in range(n + 1):
                    assert region.rejects(k) == (stats.binomtest(k, n, p).pvalue <= alpha), (n, p, alpha, k)


def test_a_level_equal_to_a_pvalue_rejects_that_count_as_scipy_does():
    """alpha set to a count's own scipy p-value: a tie the region's search could round either way
    (it sums the same terms in another order).  Every count of n <= 20 at three keep
    probabilities and every distinct p-value below 1 as the level (a search that summed the
    p-values itself, in another order, got 247 of these 7,535 verdicts wrong), and the boundary
    counts of four large designs."""
    for n in range(1, 21):
        for p in (0.5, 0.25, 0.2):
            for alpha in {stats.binomtest(k, n, p).pvalue for k in range(n + 1)} - {1.0}:
                region = rejection_region_for_rate_test(n, p, false_fail_rate=alpha)
                for k in range(n + 1):
                    assert region.rejects(k) == (stats.binomtest(k, n, p).pvalue <= alpha), (n, p, alpha, k)
    example = rejection_region_for_rate_test(10, 0.5, false_fail_rate=0.109375)
    assert (example.low, example.high) == (2, 8)
    for n, p, alpha in ((20_001, 0.5, 1e-3), (150_000, 0.2, 1e-6), (3_000_000, 0.8, 1e-9), (10**8, 0.3, 1e-12)):
        r = rejection_region_for_rate_test(n, p, false_fail_rate=alpha)
        for k in (r.low, r.high, r.low + 1, r.high - 1):
            tie = stats.binomtest(k, n, p).pvalue
            at = rejection_region_for_rate_test(n, p, false_fail_rate=tie)
            for j in (k - 1, k, k + 1):
                assert at.rejects(j) == (stats.binomtest(j, n, p).pvalue <= tie), (n, p, k, j, at)


def test_large_regions_on_a_grid_are_scipys():
    """Both boundaries, off by one either way, on a grid of n, p and levels up to 10^9 draws,
    keep probabilities with no count below the mean but 0 (1e-5) and levels from 0.2 to 1e-20."""
    for n in (20_001, 20_002, 150_000, 3_000_000, 10**9):
        for p in (1e-5, 0.002, 0.2, 0.5, 0.8, 0.9995, 1 - 1e-5):  # 1e-5: no room below the mode
            for alpha in (0.2, 1e-3, 1e-9, 1e-20):
                r = rejection_region_for_rate_test(n, p, false_fail_rate=alpha)
                for k, rejected in ((r.low, True), (r.low + 1, False), (r.high - 1, False), (r.high, True)):
                    if 0 <= k <= n:
                        assert (stats.binomtest(k, n, p).pvalue <= alpha) == rejected, (n, p, alpha, k, r)


def test_small_designs_against_a_scan_of_scipys_power():
    """Designs whose answer is a handful of draws (1 included: one draw at keep 0.9 rejects k = 0
    at level 0.2), where the normal guess is least accurate and the search starts at its floor:
    the returned n reaches the power by scipy's own rejection set and n - 1 does not.  At (0.55,
    0.5, 0.3, 0.1) the search starts at lo = 2, which is enough, and walks down to 1, which is not;
    at (0.5, 0.4, 0.5, 0.5) the guess is 1, which is not enough: the answer is 2.  At (0.2, 0.25,
    0.2, 0.6) one draw suffices but the walk stops at the crossing 3 (the sawtooth: any crossing
    meets the contract).  At (0.08, 0.15, 0.5, 0.9) and (0.96, 0.15, 0.2, 0.9) the guess is 6 and 3,
    and the walk down reaches one draw, which suffices (found by a random search of 20,000 designs:
    84 take that path)."""
    for p, delta, alpha, beta in [
        (0.08, 0.15, 0.5, 0.9),
        (0.96, 0.15, 0.2, 0.9),
        (0.55, 0.5, 0.3, 0.1),
        (0.6, 0.5, 0.2, 0.3),
        (0.5, 0.4, 0.5, 0.5),
        (0.2, 0.25, 0.2, 0.6),
        (0.05, 0.1, 0.05, 0.9),
        (0.2, 0.3, 0.2, 0.5),
        (0.9, 0.85, 0.2, 0.1),
        (0.95, 0.9, 0.1, 0.05),
        (0.5, 0.45, 0.3, 0.3),
        (0.8, 0.7, 0.1, 0.1),
        (0.7, 0.5, 0.2, 0.2),
        (0.5, 0.4, 0.05, 0.05),
    ]:
        n = min_num_samples_for_rate_test(p, delta, false_fail_rate=alpha, false_pass_rate=beta)
        alts = [q for q in (p - delta, p + delta) if 0 <= q <= 1]
        assert brute_force_power(n, p, alts, alpha) >= 1 - beta, (p, delta, n)
        assert n == 1 or brute_force_power(n - 1, p, alts, alpha) < 1 - beta, (p, delta, n)
    assert min_num_samples_for_rate_test(0.2, 0.25, false_fail_rate=0.2, false_pass_rate=0.6) == 3


def test_a_first_guess_past_1e15_is_not_evaluated(monkeypatch):
    """keep 1e-16 at a discrepancy of 1e-18: the normal approximation's first guess is ~1e21
    draws, past numpy's int64; the search tries 1e15 draws instead, nothing beyond, and gives up
    with its own error, not scipy's TypeError.  So do first guesses of ~6.4e15 and ~1.6e15, and
    one past the float range (discrepancy 1e-200: its square overflowed to OverflowError before)."""
    import dropout_stats.design as design

    miss, asked = design._miss, []

    def bounded(n, *args):
        asked.append(n)
        return miss(n, *args)

    monkeypatch.setattr(design, "_miss", bounded)
    design._min_num_samples.cache_clear()
    for keep, delta in ((1e-16, 1e-18), (1e-10, 1e-12), (1e-10, 2e-12), (0.5, 1e-200)):
        asked.clear()
        with pytest.raises(design.SampleSizeTooLarge, match="no sample size up to 1e15 reaches the requested power"):
            min_num_samples_for_rate_test(keep, delta)
        assert asked == [10**15], (keep, delta, asked)


def test_the_search_widens_to_1e15_draws_and_gives_up(monkeypatch):
    """A test that never rejects (miss replaced by 1): from the first guess's bracket the search
    widens by x1.25 + 2 and tries 1e15 draws itself last, then stops with a clear error."""
    import dropout_stats.design as design

    asked = []
    monkeypatch.setattr(design, "_miss", lambda n, *a: asked.append(n) or 1.0)
    with pytest.raises(ValueError, match="no sample size up to 1e15 reaches the requested power"):
        design._min_num_samples.__wrapped__(0.5, 0.01, 1e-6, 1e-3)
    assert asked[-1] == 10**15 and asked[-2] < 10**15 < int(asked[-2] * 1.25) + 2
    assert all(b == int(a * 1.25) + 2 for a, b in zip(asked[:-2], asked[1:-1], strict=False)), asked


def test_a_level_above_the_target_power_detects_any_discrepancy():
    """alpha = 0.5 with beta = 0.6: the test already rejects with probability 0.48 >= 0.4 at the
    null itself (scipy's rejection set, summed), so every discrepancy is detected: 0."""
    assert brute_force_power(100, 0.5, [0.5], 0.5) >= 0.4
    assert min_discrepancy_detectable(0.5, 100, false_fail_rate=0.5, false_pass_rate=0.6) == 0.0


def test_the_first_detected_float_is_found_from_any_guess():
    """_first_float_detected on gap(d) = d - root, whose sign is exact (float subtraction with
    gradual underflow is 0 only for equal floats): the first float with gap >= 0 is the root, where
    gap is exactly 0.  Found from every guess (a nan, one outside (start, room), one on the root or
    beside it), for a root at the room, one float past the start or subnormal, in O(log distance)
    calls from the guess."""
    from dropout_stats.design import _first_float_detected

    for start, room, root in (
        (0.0, 0.3, 0.1),
        (0.05, 0.3, 0.1),
        (0.0, 0.3, 0.3),
        (0.05, 0.3, 0.3),
        (0.0, 1.0, 1e-300),
        (0.2, 0.7, math.nextafter(0.2, 1)),
        (0.0, 0.5, math.nextafter(0.0, 1)),
    ):
        below = math.nextafter(root, 0)
        # two floats below the root: from there, with the root at the room, the doubling steps
        # land one float past the room unless the search's top is the float below the room
        for guess in (
            math.nan,
            -0.1,
            start,
            room,
            2.0,
            root,
            below,
            math.nextafter(below, 0),
            math.nextafter(root, 1),
            (start + room) / 2,
            start + (root - start) / 3,
        ):
            asked = []

            def gap(d, asked=asked, start=start, room=room, root=root):
                asked.append(d)
                assert start <= d <= room, d  # never outside the range
                return d - root

            assert _first_float_detected(gap, start, room, guess) == root, (start, room, root, guess)
            assert len(asked) <= 130, (root, guess, len(asked))  # 2 x 63 doublings and halvings + 3
        if root < room:  # a guess on the room is no guess
            asked = []
            _first_float_detected(lambda d, asked=asked, root=root: asked.append(d) or d - root, start, room, root)
            assert len(asked) <= 5, (root, asked)  # a guess on the root: 5 calls at most


def test_one_draw_is_a_design_and_none_is_refused():
    """n = 1 is a valid number of draws for every design function; n = 0 is refused by name."""
    import pytest

    assert rejection_region_for_rate_test(1, 0.9, false_fail_rate=0.2).rejects(0)  # p-value 0.1
    assert power_of_rate_test(1, 0.9, 0.85, false_fail_rate=0.2) == stats.binom.pmf(0, 1, 0.05)
    assert min_discrepancy_detectable(0.5, 1) == math.inf
    for call in (
        lambda: rejection_region_for_rate_test(0, 0.5),
        lambda: power_of_rate_test(0, 0.5, 0.1),
        lambda: min_discrepancy_detectable(0.5, 0),
    ):
        with pytest.raises(ValueError, match=r"n \(0\) must be"):
            call()


def test_an_empty_tail_is_stored_as_documented():
    """Five draws at level 1e-3 reject nothing (scipy: every p-value >= 1/16): low -1, high n + 1."""
    assert min(stats.binomtest(k, 5, 0.5).pvalue for k in range(6)) > 1e-3
    r = rejection_region_for_rate_test(5, 0.5, false_fail_rate=1e-3)
    assert (r.low, r.high) == (-1, 6) and r.power(0.1) == 0.0


def test_tails_of_one_count_have_their_mass():
    """Ten draws at keep 0.5 and level 0.01 reject only 0 and 10 (scipy: p-values 0.002 and 0.021
    at 0 and 1): low 0, high n, and the power is P(K = 0) + P(K = 10), each count in it."""
    assert stats.binomtest(0, 10, 0.5).pvalue <= 0.01 < stats.binomtest(1, 10, 0.5).pvalue
    r = rejection_region_for_rate_test(10, 0.5, false_fail_rate=0.01)
    assert (r.low, r.high) == (0, 10)
    for q in (0.1, 0.5, 0.9):  # (scipy's cdf, sf and pmf agree to rounding, 1e-15 relative)
        mass = float(stats.binom.pmf(0, 10, q) + stats.binom.pmf(10, 10, q))
        assert r.power(q) == pytest.approx(mass, rel=1e-15, abs=0), q
        assert r.miss(q) == pytest.approx(1 - mass, rel=1e-15, abs=0), q


def test_no_upward_error_is_detectable_when_no_count_above_the_mean_is_rejected():
    """Keep 0.999 and 1,000 draws: even all 1,000 kept has scipy p-value 0.63, so a keep of 1 is
    never caught and the detectable discrepancy is infinite (the downward side is finite)."""
    assert stats.binomtest(1000, 1000, 0.999).pvalue > 1e-6
    assert min_discrepancy_detectable(0.999, 1000) == math.inf
    assert rejection_region_for_rate_test(1000, 0.999).high == 1001


def test_the_boundary_search_is_a_scan_from_any_guess():
    """_last_true against a linear scan: every prefix length (none to all of [0, top]), every
    guess (out of range on both sides included), never asking outside [0, top]; and its calls
    grow with the log of the guess's distance from the turn (two doublings and a bisection:
    2 log2(distance + 2) + 3 at most), so a start far off costs little."""
    from dropout_stats.design import _last_true

    for top in range(-1, 13):
        for turn in range(-1, top + 1):
            for guess in range(-3, top + 4):
                asked = []

                def pred(j, asked=asked, top=top, turn=turn, guess=guess):
                    assert 0 <= j <= top, (top, turn, guess, j)
                    asked.append(j)
                    return j <= turn

                assert _last_true(pred, top, guess) == turn
                assert len(asked) == len(set(asked)), (top, turn, guess, asked)
    for turn, guess in (
        (500_000, 400_000),
        (10, 900_000),
        (999_990, 3),
        (-1, 123_456),
        (10**6, 0),
        (500_000, 500_000),
        (500_000, 500_001),
    ):  # a guess on the turn: 5 calls at most
        asked = []
        assert _last_true(lambda j, asked=asked, turn=turn: asked.append(j) or j <= turn, 10**6, guess) == turn
        assert len(asked) <= 2 * math.log2(abs(guess - turn) + 2) + 3, (turn, guess, len(asked))


def test_the_near_tail_guess_is_within_a_hair_of_the_answer_at_strict_levels(monkeypatch):
    """At levels of 1e-3 and below the far tail adds too little power to move the root far, so the
    near tail's own root (one betaincinv call) starts the search within 2^21 floats of the answer
    (measured: 1.1e6 at most, 1.6e-10 relative) on every side searched, over keeps 0.02 to 0.97
    and n from 12 to 10^7, which the search then finds in 2 x 21 + 3 calls at most."""
    import itertools

    import dropout_stats.design as design

    searches = []
    search = design._first_float_detected

    def spy(gap, start, room, guess):
        asked = []
        found = search(lambda d: asked.append(d) or gap(d), start, room, guess)
        searches.append((start, room, guess, found, len(asked)))
        return found

    monkeypatch.setattr(design, "_first_float_detected", spy)
    for p, n, alpha, beta in itertools.product(
        (0.02, 0.1, 0.5, 0.8, 0.97), (50, 1000, 10**5, 10**7), (1e-3, 1e-6, 1e-12), (0.2, 1e-3)
    ):
        design._min_discrepancy.__wrapped__(p, n, alpha, beta)
    # tails of one count each: 12 draws at keep 0.5 and level 1e-3 reject only 0 and 12
    assert (rejection_region_for_rate_test(12, 0.5, false_fail_rate=1e-3).low, 12) == (0, 12)
    before = len(searches)
    for beta in (0.2, 1e-3):
        design._min_discrepancy.__wrapped__(0.5, 12, 1e-3, beta)
    # each side's own search; a search on from the answer (no guess) follows where the other side
    # is still missed there (test_every_side_is_detected_at_the_answer)
    sides = [s for s in searches if not math.isnan(s[2])]
    assert len(sides) == len([s for s in searches[:before] if not math.isnan(s[2])]) + 4  # both sides, both rates
    assert len(sides) > 100, len(sides)
    for start, room, guess, found, calls in sides:
        assert start == 0.0 < guess < room, (start, room, guess)
        assert abs(design._bits(guess) - design._bits(found)) < 2**21, (guess, found)
        assert calls <= 2 * 21 + 3, (guess, found, calls)


def test_a_false_pass_rate_equal_to_a_designs_miss_is_met_by_it():
    """beta set to the miss probability of 1,932 draws exactly (keep 0.3, discrepancy 0.06, level
    1e-3): the tie counts as met (miss <= beta), and the search returns 1,932 itself; under a
    strict < that n fails and the search lands elsewhere."""
    region = rejection_region_for_rate_test(1932, 0.3, false_fail_rate=1e-3)
    beta = max(region.miss(q) for q in (0.3 - 0.06, 0.3 + 0.06))
    n = min_num_samples_for_rate_test(0.3, 0.06, false_fail_rate=1e-3, false_pass_rate=beta)
    assert n == 1932, (beta, n)


def _miss_by_pmf_sum(n, p, alpha, q):
    """P(accept) at keep q: scipy's pmf summed over the counts rate_test accepts (its region's
    boundary verdicts checked against binomtest first)."""
    r = rejection_region_for_rate_test(n, p, false_fail_rate=alpha)
    for k, rejected in ((r.low, True), (r.low + 1, False), (r.high - 1, False), (r.high, True)):
        if 0 <= k <= n:
            assert (stats.binomtest(k, n, p).pvalue <= alpha) == rejected, (n, p, alpha, k)
    return float(np.sum(stats.binom.pmf(np.arange(r.low + 1, r.high), n, q)))


# the pmf sum adds at most 10^4 positive terms: relative error below 10^4 * 2^-53 = 1.2e-12
_SUM_RTOL = 1e4 * 2.0**-53


def test_false_pass_rates_far_below_1e16_are_resolved():
    """1 - 1e-17 rounds to 1, so a power alone cannot tell a design at false-pass rate 1e-17 (the
    old search, comparing power with 1 - beta, returned 4,277 draws at keep 0.5 and discrepancy
    0.1, which miss 0.4 and 0.6 with probability 5.4e-17).  Sized on the miss probability itself, n
    misses with probability <= beta and n - 1 does not, by a sum of scipy's pmf, at 1e-17, 1e-20
    and 1e-40; and the detectable discrepancy at that n is within the one asked for."""
    for beta in (1e-17, 1e-20, 1e-40):
        n = min_num_samples_for_rate_test(0.5, 0.1, false_pass_rate=beta)
        miss_n = max(_miss_by_pmf_sum(n, 0.5, 1e-6, q) for q in (0.4, 0.6))
        miss_before = max(_miss_by_pmf_sum(n - 1, 0.5, 1e-6, q) for q in (0.4, 0.6))
        assert miss_n <= beta * (1 + _SUM_RTOL) and miss_before > beta * (1 - _SUM_RTOL), (beta, n)
        assert min_discrepancy_detectable(0.5, n, false_pass_rate=beta) <= 0.1


def test_miss_is_the_accepted_mass_down_to_1e200():
    """RejectionRegion.miss against the pmf sum over the accepted counts, at alternatives 0 to 40
    standard deviations from the null on both sides (miss from ~1 down to 5e-223, and 0), and
    with empty tails (5 draws at 1e-3: miss 1); and against 1 - power where that is resolved
    (1 - power carries an absolute rounding of ~1e-16: relative 1e-12 once miss > 1e-3)."""
    smallest = 1.0
    for n, p, alpha in ((2000, 0.5, 1e-6), (3000, 0.1, 1e-9), (10**4, 0.8, 1e-3), (5, 0.5, 1e-3)):
        region = rejection_region_for_rate_test(n, p, false_fail_rate=alpha)
        sd = (p * (1 - p) / n) ** 0.5
        for q in {min(max(p + z * sd, 1e-9), 1 - 1e-9) for z in (-40, -20, -10, -6, -3, -1, 0, 1, 3, 6, 10, 20, 40)}:
            expected, got = _miss_by_pmf_sum(n, p, alpha, q), region.miss(q)
            assert got == pytest.approx(expected, rel=_SUM_RTOL, abs=0) or got == expected == 0.0, (
                n,
                p,
                q,
                got,
                expected,
            )
            if expected > 1e-3:
                assert got == pytest.approx(1 - region.power(q), rel=1e-12, abs=0), (n, p, q)
            smallest = min(smallest, expected) if expected > 0 else smallest
    assert smallest < 1e-200, smallest


def test_which_crossing_the_search_returns_is_pinned():
    """Exact power is a sawtooth with many crossings; the search's start (the normal
    approximation, its x0.97 and x1.03 + 2 bracket, the x1.25 + 2 widening) picks one.  These five
    designs pin which, each checked to be a crossing by scipy's pmf over rate_test's accepted
    counts.  Every single change of those lines lands elsewhere on at least one of them (found by
    running the 26 changes of the start, the widening and the walk down on 231 random designs with
    n <= 1,500: 23 moved 6 to 231 of them, 2 failed on one, 1 ran past 90 s)."""
    for (p, delta, alpha, beta), pinned in [
        ((0.344, 0.1211, 0.01, 0.2), 193),
        ((0.432, 0.2203, 0.01, 0.2), 56),
        ((0.451, 0.2598, 0.01, 0.2), 43),
        ((0.502, 0.2779, 0.01, 0.001), 93),
        ((0.343, 0.1245, 0.01, 0.2), 185),
    ]:
        n = min_num_samples_for_rate_test(p, delta, false_fail_rate=alpha, false_pass_rate=beta)
        assert n == pinned, (p, delta, alpha, beta, n)
        assert max(_miss_by_pmf_sum(n, p, alpha, q) for q in (p - delta, p + delta)) <= beta * (1 + _SUM_RTOL)
        assert max(_miss_by_pmf_sum(n - 1, p, alpha, q) for q in (p - delta, p + delta)) > beta * (1 - _SUM_RTOL)


# loose designs whose power dips below the power at keep_prob itself (the test is biased), each with a
# target between the two: a keep inside the dip is missed more often than false_pass_rate allows
_DIPS = [(5, 0.3, 0.7), (5, 0.45, 0.2), (5, 0.45, 0.5), (20, 0.3, 0.5), (100, 0.1, 0.3), (1000, 0.7, 0.9)]


def _power_on(region, keeps):
    """The region's power at many keeps at once, by scipy's cdf and sf (vectorised)."""
    lower = stats.binom.cdf(region.low, region.n, keeps) if region.low >= 0 else 0.0
    upper = stats.binom.sf(region.high - 1, region.n, keeps) if region.high <= region.n else 0.0
    return lower + upper


def test_the_least_power_keep_is_where_a_scan_finds_it():
    """_least_power_keep's closed form against the argmin of the power on a grid of 200,001 keeps
    (it must lie within one grid step, 5e-6), for regions with both tails; nan with a tail empty."""
    from dropout_stats.design import _least_power_keep

    grid = np.linspace(0.0, 1.0, 200_001)
    # and tails of one count each (low 0, high n): 10 draws at level 0.01, 12 at 1e-3, keep 0.5 and 0.45
    for n, p, alpha in [*_DIPS, (10, 0.5, 0.01), (12, 0.5, 1e-3), (12, 0.45, 1e-3)]:
        region = rejection_region_for_rate_test(n, p, false_fail_rate=alpha)
        assert region.low >= 0 and region.high <= n, region
        scanned = grid[np.argmin(_power_on(region, grid))]
        assert abs(_least_power_keep(region) - scanned) <= 5e-6, (n, p, alpha, _least_power_keep(region), scanned)
    assert math.isnan(_least_power_keep(rejection_region_for_rate_test(5, 0.5, false_fail_rate=1e-3)))
    assert math.isnan(_least_power_keep(rejection_region_for_rate_test(1000, 0.999)))  # no upper tail
    # every count rejected (low = 2, high = 3 of 5): the power is 1 at every keep, no dip; one
    # count accepted (high = 4): the power is 1 - P(K = 3), least where q^3 (1 - q)^2 peaks, at 3/5
    from dropout_stats.design import RejectionRegion

    assert math.isnan(_least_power_keep(RejectionRegion(5, 0.5, 0.9, 2, 3)))
    assert _least_power_keep(RejectionRegion(5, 0.5, 0.9, 2, 4)) == pytest.approx(0.6, rel=1e-15, abs=0)


def test_a_dip_in_the_power_is_not_reported_as_detected():
    """Where the power at keep_prob itself reaches the target but dips below it nearby (n = 5, keep
    0.3, level 0.7: power 0.640 at 0.3, down to 0.590 at 0.2; target 0.615), the detectable
    discrepancy is the far end of the dip (0.158), not 0, which was returned before though keeps
    0.142 to 0.268 are caught with less than the target power.  Checked on a grid of keeps: every
    one at least the returned distance out on either side is caught with the target power, and
    one just inside is not."""
    from dropout_stats.design import _least_power_keep

    grid = np.linspace(0.0, 1.0, 20_001)
    for n, p, alpha in _DIPS:
        region = rejection_region_for_rate_test(n, p, false_fail_rate=alpha)
        power = _power_on(region, grid)
        target = (region.power(p) + power.min()) / 2
        d = min_discrepancy_detectable(p, n, false_fail_rate=alpha, false_pass_rate=1 - target)
        assert 0 < d < math.inf, (n, p, alpha, d)
        outside = np.abs(grid - p) >= d
        assert (power[outside] >= target).all(), (n, p, alpha, d)
        below = math.nextafter(d, 0)  # exact to the bit: the float below is inside the dip
        assert max(region.miss(p - below), region.miss(p + below)) > 1 - target, (n, p, alpha, d)
        # a target equal to the power at keep_prob exactly (a tie at d = 0): the dip still counts
        least = _least_power_keep(region)
        tie = min_discrepancy_detectable(p, n, false_fail_rate=alpha, false_pass_rate=region.miss(p))
        assert abs(least - p) < tie < math.inf, (n, p, alpha, tie)
        # a target the dip's bottom meets, exactly or with room: every discrepancy is detected
        sign = 1 if least > p else -1
        for beta in (region.miss(p + sign * (sign * (least - p))), 1 - 0.99 * power.min()):
            assert min_discrepancy_detectable(p, n, false_fail_rate=alpha, false_pass_rate=beta) == 0.0, (n, p, beta)


def test_the_answer_does_not_depend_on_the_near_tail_guess(monkeypatch):
    """The near tail's root only starts the search: with it removed (nan, so the search starts at
    the start of the range) every design still gets a crossing (detected at d on both sides, missed
    at the float below on one), 0 and inf where the guided search gives them, including designs
    with a dip and targets tied with the power at keep_prob (gap(0) exactly 0).  Not always the
    same float: where the power is flat near the root, miss's own rounding (~1e-16) makes a band
    of crossings (3 of these 36 designs differ, by 2.7e-12 relative at most)."""
    import dropout_stats.design as design

    designs = [
        (p, n, alpha, beta)
        for p in (0.1, 0.5, 0.8)
        for n in (50, 10**4)
        for alpha in (1e-6, 0.3)
        for beta in (0.2, 1e-3)
    ]
    for n, p, alpha in _DIPS:
        region = rejection_region_for_rate_test(n, p, false_fail_rate=alpha)
        designs += [(p, n, alpha, region.miss(p)), (p, n, alpha, (region.miss(p) + 1) / 2)]
    with_guess = [design._min_discrepancy.__wrapped__(*d) for d in designs]
    monkeypatch.setattr(design, "_one_tail_guess", lambda *a: math.nan)
    for (p, n, alpha, beta), guided in zip(designs, with_guess, strict=True):
        d = design._min_discrepancy.__wrapped__(p, n, alpha, beta)
        assert (d == 0, d == math.inf) == (guided == 0, guided == math.inf), (p, n, alpha, beta, d, guided)
        if 0 < d < math.inf:
            region = rejection_region_for_rate_test(n, p, false_fail_rate=alpha)

            def miss(x, region=region, p=p):
                return max(region.miss(p - x) if x < p else 0.0, region.miss(p + x) if x < 1 - p else 0.0)

            assert miss(d) <= beta < miss(math.nextafter(d, 0)), (p, n, alpha, beta, d)
    assert sum(0 < d < math.inf for d in with_guess) > 20, with_guess


def test_every_side_is_detected_at_the_answer():
    """Each side's search finds a crossing of its own miss, and miss's rounding makes that a band:
    at keep 0.5, n = 54,940, level 1e-3, false pass 0.01 the upper side crosses at 0.011996304478566535,
    where the lower side is still missed (0.010000000000000167 > 0.01; found by a search of 3,000
    random designs with scipy 1.17; scipy 1.15 misses others, such as keep 0.5, n = 10^4, level 1e-6,
    false pass 1e-3).  The answer is detected on every side inside [0, 1] and missed on one at the
    float below, checked on those designs and on keep 0.5 (whose sides tie) at n from 10 to 10^6."""
    designs = [(0.5, 54_940, 1e-3, 0.01), (0.5, 10_000, 1e-6, 1e-3), (0.5, 52, 1e-3, 0.2)]
    designs += [
        (0.5, n, alpha, beta)
        for n in np.unique(np.geomspace(10, 10**6, 40).astype(int))
        for alpha, beta in ((1e-3, 0.01), (1e-6, 1e-3), (0.3, 0.2))
    ]
    for p, n, alpha, beta in designs:
        d = min_discrepancy_detectable(p, int(n), false_fail_rate=alpha, false_pass_rate=beta)
        if not 0 < d < math.inf:
            continue
        region = rejection_region_for_rate_test(int(n), p, false_fail_rate=alpha)
        below = math.nextafter(d, 0)
        assert max(region.miss(p - d), region.miss(p + d)) <= beta, (n, alpha, beta, d)
        assert max(region.miss(p - below), region.miss(p + below)) > beta, (n, alpha, beta, d)
