"""verify_dropblock: the exact geometry, the corpus of correct and broken DropBlocks, bad input.

Correct entries run at a false-fail rate of 1e-9 each (their statistical marks add up); broken
entries must fail with the check that names their defect (tests/structured_corpus_dropblock.py).
"""

from __future__ import annotations

import importlib.util
import itertools
import math

import numpy as np
import pytest
from structured_corpus_dropblock import broken, correct, numpy_dropblock

import dropout_stats as ds
from dropout_stats.battery.dropblock_checks import count_bound
from dropout_stats.battery.dropblock_geometry import (
    Geometry,
    bennett_pvalue,
    bennett_tail,
    maps_needed,
    union_violations,
)

LEVEL = 1e-9


def _available(entry) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in entry.needs)


def _tv_geometry(h, w, k, rate, centres, d=None):
    spatial = (h, w) if d is None else (d, h, w)
    gamma = rate * math.prod(spatial) / (k ** len(spatial) * math.prod(s - k + 1 for s in spatial))
    return Geometry(spatial, (k,) * len(spatial), centres, gamma)


# -- geometry, exactly ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "h,k,rate,centres,fraction",
    [  # the exact fractions of the facts file (torchvision: valid; timm: all)
        (14, 3, 0.1, "valid", 0.0951),
        (14, 7, 0.1, "valid", 0.0929),
        (14, 7, 0.1, "all", 0.2092),
        (7, 5, 0.2, "all", 0.5232),
        (7, 7, 0.2, "all", 0.9943),
        (7, 7, 0.1, "valid", 0.1000),
    ],
)
def test_exact_fraction_matches_the_facts(h, k, rate, centres, fraction):
    g = _tv_geometry(h, h, k, rate, centres)
    assert round(g.mean() / g.positions, 4) == fraction


def test_exact_fraction_3d():
    g = _tv_geometry(8, 8, 3, 0.1, "valid", d=8)
    assert round(g.mean() / g.positions, 4) == 0.0935


def _enumerate(spatial, kernel, centres, gamma):
    """Mean and variance of a map's dropped count by listing every set of centres."""
    g = Geometry(spatial, kernel, centres, gamma)
    allowed = [range(lo, hi + 1) for lo, hi in (g.allowed(L, k, k // 2) for L, k in zip(spatial, kernel, strict=True))]
    sites = list(itertools.product(*allowed))
    mean = second = 0.0
    for drawn in itertools.product((False, True), repeat=len(sites)):
        dropped = np.zeros(spatial, bool)
        for on, s in zip(drawn, sites, strict=True):
            if on:
                dropped[
                    tuple(slice(max(0, c - k // 2), max(0, c - k // 2 + k)) for c, k in zip(s, kernel, strict=True))
                ] = 1
        p = gamma ** sum(drawn) * (1 - gamma) ** (len(sites) - sum(drawn))
        x = dropped.sum()
        mean += p * x
        second += p * x * x
    return mean, second - mean * mean


@pytest.mark.parametrize(
    "spatial,kernel,centres",
    [((3, 4), (2, 3), "all"), ((4, 4), (3, 3), "valid"), ((5, 3), (3, 2), "valid"), ((2, 2, 3), (2, 1, 2), "all")],
)
def test_mean_and_variance_equal_enumeration(spatial, kernel, centres):
    g = Geometry(spatial, kernel, centres, 0.3)
    mean, var = _enumerate(spatial, kernel, centres, 0.3)
    assert g.mean() == pytest.approx(mean, rel=1e-12)
    assert g.variance() == pytest.approx(var, rel=1e-10)


def _union_brute(dropped, kernel, centres):
    """Each map: the union of allowed blocks wholly dropped, compared with the mask."""
    spatial = dropped.shape[1:]
    g = Geometry(spatial, kernel, centres, 0.5)
    allowed = [range(lo, hi + 1) for lo, hi in (g.allowed(L, k, k // 2) for L, k in zip(spatial, kernel, strict=True))]
    out = np.zeros_like(dropped)
    for u in range(dropped.shape[0]):
        cover = np.zeros(spatial, bool)
        for s in itertools.product(*allowed):
            block = tuple(slice(max(0, c - k // 2), max(0, c - k // 2 + k)) for c, k in zip(s, kernel, strict=True))
            if dropped[u][block].all():
                cover[block] = True
        out[u] = dropped[u] & ~cover
    return out


@pytest.mark.parametrize("kernel", [(3, 3), (4, 4), (2, 5), (1, 3)])
@pytest.mark.parametrize("centres", ["valid", "all"])
def test_union_violations_equal_brute_force(kernel, centres, seed):
    rng = np.random.default_rng(seed)
    dropped = rng.random((40, 7, 8)) < 0.85
    assert np.array_equal(union_violations(dropped, kernel, centres), _union_brute(dropped, kernel, centres))


def test_bennett_is_conservative_where_exact():
    """Maps of one position: the count is Binomial(n, p) exactly; Bennett's bound is above its tail."""
    from scipy import stats

    n, p = 400, 0.1
    for t in range(1, 60):
        assert bennett_tail(t, n, p * (1 - p), 1 - p) >= stats.binom.sf(n * p + t - 1, n, p)
        assert bennett_tail(t, n, p * (1 - p), p) >= stats.binom.cdf(n * p - t, n, p)
    assert bennett_pvalue(40, 400, 0.1, 0.09, 1) == 1.0


def test_design_grows_with_smaller_discrepancy():
    g = _tv_geometry(14, 14, 7, 0.1, "valid")
    f = g.mean() / g.positions
    small, ok_small = maps_needed(g, 1e-7, 1e-3, 0.05 * f, 10**8)
    large, ok_large = maps_needed(g, 1e-7, 1e-3, 0.2 * f, 10**8)
    assert ok_small and ok_large and small > 10 * large
    assert maps_needed(g, 1e-7, 1e-3, 0.05 * f, 1000) == (1000, False)


def test_count_bound_holds_torchs_float32_formula_and_refuses_bfloat16_scale():
    """fl32(numel * fl32(1/count)) (torch's int / tensor) is inside; a scale rounded to bfloat16 is not."""
    low, high = count_bound("float32")
    rng = np.random.default_rng(3)
    numel = 100_352
    for count in rng.integers(60_000, numel, 200):
        exact = numel / count
        torch_way = float(np.float32(numel) * np.float32(1) / np.float32(count))
        assert low <= torch_way / exact <= high
    bf16 = 1 + 2**-7  # a bfloat16 neighbour of 1: a scale off by its rounding
    assert not low <= bf16 <= high


# -- the corpus ----------------------------------------------------------------------------
@pytest.mark.statistical(false_fail_rate=LEVEL)
@pytest.mark.parametrize("entry", correct(), ids=lambda e: e.name)
def test_correct_dropblock_passes(entry):
    if not _available(entry):
        pytest.skip(f"needs {entry.needs}")
    report = entry.verify(false_fail_rate=LEVEL, max_calls=400)  # at most 400 calls: the level holds
    assert report.passed, str(report)


@pytest.mark.parametrize("entry", broken(), ids=lambda e: e.name)
def test_broken_dropblock_fails_its_check(entry):
    if not _available(entry):
        pytest.skip(f"needs {entry.needs}")
    report = entry.verify(false_fail_rate=LEVEL, max_calls=40)
    assert entry.fails in [c.name for c in report.failures], str(report)


def test_report_states_the_realized_fraction_beside_the_rate():
    pytest.importorskip("torch")
    from structured_corpus_dropblock import TIMM, timm_module

    report = ds.verify_dropblock(
        timm_module(7)(), 0.1, 7, (8, 4, 14, 14), layer=True, false_fail_rate=LEVEL, max_calls=20, **TIMM
    )
    finding = next(f for f in report.findings if f.name == "dropped_fraction")
    assert "drops 0.2092 of the positions: 2.09 x rate" in finding.detail
    assert "cut short by max_calls (20)" in next(f.detail for f in report.findings if f.name == "design")


def test_a_seed_fixes_the_report():
    fn = numpy_dropblock(3)()
    a = ds.verify_dropblock(fn, 0.2, 3, (4, 4, 8, 8), max_calls=10, seed=5)
    b = ds.verify_dropblock(fn, 0.2, 3, (4, 4, 8, 8), max_calls=10, seed=5)
    assert a.to_dict() == b.to_dict()


# -- bad input, refused before any call ------------------------------------------------------
def _never_called(x, rate, seed):
    raise AssertionError("fn must not be called")


@pytest.mark.parametrize(
    "args,kwargs,error,words",
    [
        ((0.1, 7, (2, 3, 14)), {}, ValueError, "shape ([2, 3, 14]) must be (N, C, H, W) or (N, C, D, H, W)"),
        ((0.1, 4, (2, 3, 14, 14)), {}, ValueError, "block_size (4) gives an even block 4"),
        ((0.1, 15, (2, 3, 14, 14)), {}, ValueError, "block_size (15) gives an even block 14 (block_size 15 clipped"),
        ((0.1, 7, (2, 3, 14, 14)), {"gamma": 1.5}, ValueError, "gamma (1.5) must be in (0, 1)"),
        ((0.0, 7, (2, 3, 14, 14)), {}, ValueError, "rate (0.0) must be > 0"),
        ((1.5, 7, (2, 3, 14, 14)), {}, ValueError, "rate (1.5) must be in [0, 1]"),
        ((0.1, 0, (2, 3, 14, 14)), {}, ValueError, "block_size (0) must be >= 1"),
        ((0.1, 7, (2, 3, 14, 14)), {"centres": "any"}, ValueError, "centres ('any') must be one of"),
        ((0.1, 7, (2, 3, 14, 14)), {"normalization": "keep"}, ValueError, "normalization ('keep') must be one of"),
        ((0.1, 7, (2, 3, 14, 14)), {"stateful": True, "layer": True}, ValueError, "exclude each other"),
        ((0.1, 7, (2, 3, 14, 14)), {"shared_across_channels": "yes"}, TypeError, "must be True or False"),
        ((1.0, 7, (2, 3, 7, 7)), {}, ValueError, "gives gamma 1 for blocks [7, 7]"),
        ((1.0, 3, (2, 3, 7, 7)), {"normalization": "rate"}, ValueError, "rate (1.0) must be < 1 with normalization"),
    ],
)
def test_bad_input_is_refused_before_any_call(args, kwargs, error, words):
    with pytest.raises(error) as info:
        ds.verify_dropblock(_never_called, *args, **kwargs)
    assert words in str(info.value)
