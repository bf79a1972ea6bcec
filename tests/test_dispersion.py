"""count_dispersion: the kept counts per call, per row and per block vary as independent draws make
them vary (dropout_stats/battery/checks/dispersion.py).

* the randomized transform of each split is exactly uniform (every outcome's interval tiles
  [0, 1] with its hypergeometric probability), and the tails it sums agree with scipy;
* calibration: the component p-values of correct masks are uniform (Kolmogorov-Smirnov);
* broken implementations of four classes, each written two or three ways (numpy, torch): every
  one fails count_dispersion, and one of each class fails nothing else;
* correct implementations of tests/contract_corpus.py pass it across backends, dtypes and rates.

Budget: each broken run is at false_fail_rate=RUN: a defect the rest of the battery cannot see
fails another check with probability <= RUN; the defects are caught with certainty (fixed
counts: every split of the class has d = 0, so Fisher's statistic is at most 2 sum -log(1 - r0)
whatever the randomization, p far below the level) or with the miss chance in their marks.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
from contract_corpus import by_name
from scipy import stats

import dropout_stats as ds
from dropout_stats.battery.checks.dispersion import (
    CountDispersion,
    hypergeom_tail,
    symmetric_uniforms,
    unequal_uniforms,
)

RUN = 1e-12  # false_fail_rate of each broken run


def _where(x, keep, rate):
    return np.where(keep, x / np.asarray(1 - rate, x.dtype), 0).astype(x.dtype)


def _rows(shape):
    return (shape[0], int(np.prod(shape[1:]))) if len(shape) > 1 else (1, shape[0])


# -- class 1: exactly round(keep x n) kept in every row -------------------------------------------
def np_argsort_per_row(x, rate, seed, noise_shape=None):
    shape = tuple(noise_shape or x.shape)
    r, m = _rows(shape)
    u = np.random.default_rng(list(seed)).random((r, m))
    keep = np.argsort(np.argsort(u, axis=1), axis=1) < round((1 - rate) * m)
    return _where(x, keep.reshape(shape), rate)


def torch_topk_per_row(x, rate, seed, noise_shape=None):
    import torch

    shape = tuple(noise_shape or x.shape)
    r, m = _rows(shape)
    idx = torch.rand(r, m, generator=seed).topk(round((1 - rate) * m), dim=1).indices
    keep = torch.zeros(r, m, dtype=torch.bool).scatter_(1, idx, True).reshape(shape)
    return torch.where(keep, x / (1 - rate), torch.zeros_like(x))


# -- class 2: a fixed count per call --------------------------------------------------------------
def np_permutation_per_call(x, rate, seed, noise_shape=None):
    shape = tuple(noise_shape or x.shape)
    n = int(np.prod(shape))
    keep = np.zeros(n, dtype=bool)
    keep[np.random.default_rng(list(seed)).permutation(n)[: round((1 - rate) * n)]] = True
    return _where(x, keep.reshape(shape), rate)


def torch_randperm_per_call(x, rate, seed, noise_shape=None):
    import torch

    shape = tuple(noise_shape or x.shape)
    n = int(np.prod(shape))
    keep = torch.zeros(n, dtype=torch.bool)
    keep[torch.randperm(n, generator=seed)[: round((1 - rate) * n)]] = True
    return torch.where(keep.reshape(shape), x / (1 - rate), torch.zeros_like(x))


# -- class 3: counts too variable ----------------------------------------------------------------
def np_keep_per_row(x, rate, seed, noise_shape=None):
    """keep drawn from U(keep - 0.1, keep + 0.1) afresh for each row"""
    shape = tuple(noise_shape or x.shape)
    rng = np.random.default_rng(list(seed))
    r, m = _rows(shape)
    keep_p = (1 - rate) + rng.uniform(-0.1, 0.1, (r, 1))
    return _where(x, (rng.random((r, m)) < keep_p).reshape(shape), rate)


def torch_keep_per_row(x, rate, seed, noise_shape=None):
    """keep drawn from U(keep - 0.1, keep + 0.1) afresh for each row"""
    import torch

    shape = tuple(noise_shape or x.shape)
    r, m = _rows(shape)
    keep_p = (1 - rate) + 0.2 * (torch.rand(r, 1, generator=seed, dtype=torch.float64) - 0.5)
    keep = (torch.rand(r, m, generator=seed, dtype=torch.float64) < keep_p).reshape(shape)
    return torch.where(keep, x / (1 - rate), torch.zeros_like(x))


def np_tiles_above_and_below(x, rate, seed, noise_shape=None, tile=256, delta=0.012):
    """keep + delta in one tile of 256 units and keep - delta in the next, the order random per pair
    of tiles: every row's rate (and every position's, on average) is right; tiles vary too much"""
    shape = tuple(noise_shape or x.shape)
    rng = np.random.default_rng(list(seed))
    r, m = _rows(shape)
    pairs = m // (2 * tile)
    sign = rng.choice([-1.0, 1.0], size=(r, pairs, 1, 1)) * np.array([1.0, -1.0]).reshape(1, 1, 2, 1)
    keep_p = np.full((r, m), 1 - rate)
    keep_p[:, : pairs * 2 * tile] += (delta * sign * np.ones((1, 1, 1, tile))).reshape(r, -1)
    return _where(x, (rng.random((r, m)) < keep_p).reshape(shape), rate)


# -- class 4: a fixed count per block of units inside a row ----------------------------------------
def np_argsort_per_block(x, rate, seed, noise_shape=None, block=1024):
    shape = tuple(noise_shape or x.shape)
    n = int(np.prod(shape))
    u = np.random.default_rng(list(seed)).random((n // block, block))
    keep = np.argsort(np.argsort(u, axis=1), axis=1) < round((1 - rate) * block)
    return _where(x, keep.reshape(shape), rate)


def torch_topk_per_block(x, rate, seed, noise_shape=None, block=64):
    import torch

    shape = tuple(noise_shape or x.shape)
    n = int(np.prod(shape))
    idx = torch.rand(n // block, block, generator=seed).topk(round((1 - rate) * block), dim=1).indices
    keep = torch.zeros(n // block, block, dtype=torch.bool).scatter_(1, idx, True).reshape(shape)
    return torch.where(keep, x / (1 - rate), torch.zeros_like(x))


# (fn, backend, whether a test shows that the rest of the battery passes it: one of each class,
# numpy for speed; the torch forms of the first two pass it too)
BROKEN = [
    (np_argsort_per_row, "numpy", True),
    (torch_topk_per_row, "torch", False),
    (np_permutation_per_call, "numpy", True),
    (torch_randperm_per_call, "torch", False),
    (np_keep_per_row, "numpy", False),  # homogeneity_axis0 sees rows this uneven too
    (torch_keep_per_row, "torch", False),
    (np_tiles_above_and_below, "numpy", True),
    (np_argsort_per_block, "numpy", True),
    (torch_topk_per_block, "torch", False),  # blocks of 64: neighbour_independence sees -1/63
]
CERTAIN = {np_argsort_per_row, torch_topk_per_row, np_argsort_per_block, torch_topk_per_block}
JITTER = {np_keep_per_row, torch_keep_per_row}  # variance ratio ~85 over 315 splits: z > 100
PER_CALL = {np_permutation_per_call, torch_randperm_per_call}


def _delta_miss(z_margin):
    return float(stats.norm.sf(z_margin))


# tiles: level 256 sees each pair shifted by 256 delta = 3.07 against sd sqrt(256 pq / 2) = 4.5:
# variance ratio 1.46 over 2,560 splits, Fisher's z ~ 0.98 x 0.46 x sqrt(1280) = 16 against a
# threshold of at most 6.3 at the default budget (weight 1/12 of the smallest Holm level)
TILES_MISS = _delta_miss(16 - 6.3)
# homogeneity_axis1 (16 bins of 256) sees the tiles' signs as a variance ratio 1 + 256 delta^2 / pq
# = 1.23 on 15 df: it fails at RUN only if 1.23 chi2_15 passes its level (RUN / 30 at most)
TILES_COLLATERAL = float(stats.chi2.sf(stats.chi2.isf(RUN / 30, 15) / (1 + 256 * 0.012**2 / 0.16), 15))


def _mark(fn):
    return TILES_MISS if fn is np_tiles_above_and_below else 0.0


def _run(fn, backend, seed, **kwargs):
    if backend == "torch":
        pytest.importorskip("torch")
    return ds.verify(fn, rate=0.2, seed=seed % 2**20, backend=backend, reference=None, **kwargs)


@pytest.mark.parametrize(
    "fn, backend",
    [
        pytest.param(fn, backend, marks=pytest.mark.statistical(false_fail_rate=_mark(fn)) if _mark(fn) else ())
        for fn, backend, _ in BROKEN
    ],
    ids=lambda v: v.__name__ if callable(v) else v,
)
def test_broken_counts_fail_count_dispersion(fn, backend, seed):
    """At the default budget.  A fixed count per row, call or block makes every split of its
    component land on its centre (d = 0), so Fisher's statistic is below 2 sum r0 whatever the
    randomization: the p-value is certain to be below the level (per call, at 5 calls of 64 x
    4096: 4 splits, p <= ~2e-9 against a level >= 4e-8)."""
    r = _run(fn, backend, seed)
    c = next(c for c in r.checks if c.name == "count_dispersion")
    assert c.passed is False, f"{fn.__name__} passed count_dispersion\n{r}"
    assert c.values["words"].startswith("kept counts vary"), c.values


@pytest.mark.parametrize(
    "fn, backend",
    [
        pytest.param(
            fn,
            backend,
            marks=pytest.mark.statistical(
                false_fail_rate=RUN + (TILES_COLLATERAL + TILES_MISS if fn is np_tiles_above_and_below else 0.0)
            ),
        )
        for fn, backend, alone in BROKEN
        if alone
    ],
    ids=lambda v: v.__name__ if callable(v) else v,
)
def test_one_of_each_class_passes_the_rest_of_the_battery(fn, backend, seed):
    """The rest of the battery passes these (at RUN, where a check that cannot see the defect
    fails with probability <= RUN): without count_dispersion they would pass.  At RUN the
    per-call class's 4 splits are too few for count_dispersion itself (p ~ 1e-10): it may pass."""
    r = _run(fn, backend, seed, false_fail_rate=RUN)
    failed = {c.name for c in r.failures}
    assert failed <= {"count_dispersion"}, f"{fn.__name__} also failed {sorted(failed)}\n{r}"
    if fn not in PER_CALL:
        assert failed == {"count_dispersion"}, r


def test_every_class_is_written_two_ways():
    classes = [
        {np_argsort_per_row, torch_topk_per_row},
        PER_CALL,
        JITTER | {np_tiles_above_and_below},
        {np_argsort_per_block, torch_topk_per_block},
    ]
    backends = {fn: b for fn, b, _ in BROKEN}
    alone = {fn for fn, _, a in BROKEN if a}
    for cls in classes:
        assert {"numpy", "torch"} <= {backends[fn] for fn in cls} and cls & alone, cls


# -- the transform is exact -------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 3, 8, 37, 256])
def test_symmetric_transform_tiles_the_unit_interval(n):
    """For every s, the outcomes' intervals [u(v=0), u(v=1)] have length P(|2A - s| = d) and
    P(u <= u(v=1) of outcome a) is exactly u(v=1): u is uniform whatever s."""
    for s in range(1, 2 * n):
        a = np.arange(max(0, s - n), min(n, s) + 1)
        p = stats.hypergeom.pmf(a, 2 * n, s, n)
        full = np.full(a.size, s)
        u0, w0 = symmetric_uniforms(np.full(a.size, n), full, a, np.zeros(a.size))
        u1, w1 = symmetric_uniforms(np.full(a.size, n), full, a, np.ones(a.size))
        for i in range(a.size):
            assert abs(p[u1 <= u1[i] + 1e-13].sum() - u1[i]) < 1e-11
        np.testing.assert_allclose(u0 + w0, 1, atol=1e-12)
        np.testing.assert_allclose(u1 + w1, 1, atol=1e-12)


@pytest.mark.parametrize("n1, n2", [(1, 2), (3, 5), (40, 24), (100, 400)])
def test_unequal_transform_is_uniform(n1, n2):
    """P(u <= x) = x for the two-sided transform of unequal halves, on a grid of v."""
    v = (np.arange(400) + 0.5) / 400
    m = n1 + n2
    for s in range(1, m, max(1, m // 12)):
        a = np.arange(max(0, s - n2), min(n1, s) + 1)
        p = np.repeat(stats.hypergeom.pmf(a, m, s, n1), v.size) / v.size
        aa, vv = np.repeat(a, v.size), np.tile(v, a.size)
        u, w = unequal_uniforms(np.full(aa.size, n1), np.full(aa.size, n2), np.full(aa.size, s), aa, vv)
        np.testing.assert_allclose(u + w, 1, atol=1e-12)
        order = np.argsort(u)
        assert np.abs(np.cumsum(p[order]) - u[order]).max() <= 2 / v.size


def test_tails_agree_with_scipy():
    """hypergeom_tail sums the small side outward; scipy's (boost's) tails as the reference."""
    for k_up, k_down, m, s, n1 in [
        (700, 300, 2000, 1000, 1000),
        (25, 5, 100, 30, 50),
        (839500, 838000, 1310720, 1048000, 1048576),
    ]:
        up = hypergeom_tail(k_up, m, s, n1, up=True)
        down = hypergeom_tail(k_down, m, s, n1, up=False)
        np.testing.assert_allclose(up, stats.hypergeom.sf(k_up - 1, m, s, n1), rtol=1e-7)
        np.testing.assert_allclose(down, stats.hypergeom.cdf(k_down, m, s, n1), rtol=1e-7)


# -- calibration: correct masks give uniform p-values ----------------------------------------------
def _family(shape, seed, masks):
    cfg = types.SimpleNamespace(seed=seed, reproduce=lambda: "")
    fam = CountDispersion(types.SimpleNamespace(unit_shape=shape, units=int(np.prod(shape)), cfg=cfg))
    for m in masks:
        fam.observe(types.SimpleNamespace(mask=m, kept=int(m.sum()), inconsistent=0))
    return fam.conclude()[0]


CALIBRATION = [((16, 256), 0.8, 5), ((8, 24), 0.1, 7), ((4096,), 0.5, 6), ((5, 3, 40), 0.9, 9)]
KS_LEVEL = 1e-10  # per component of each shape; 4 shapes, at most 8 components each


@pytest.mark.statistical(false_fail_rate=KS_LEVEL * 32)
def test_p_values_are_uniform_under_independence(seed):
    """800 runs of Bernoulli masks per shape (1-D, noise-shape-like, p from 0.1 to 0.9): each
    component's p-values pass Kolmogorov-Smirnov at KS_LEVEL, and the entry's p-value is
    below 0.05 in at most its share (Bonferroni: <= 0.05) plus binomial noise."""
    rng = np.random.default_rng(seed)
    for shape, p, calls in CALIBRATION:
        ps = {}
        for i in range(800):
            c = _family(shape, i, [rng.random(shape) < p for _ in range(calls)])
            for k, v in c.values.items():
                if k.endswith("_p"):
                    for j, x in enumerate(v):
                        ps.setdefault(f"{k}{j}", []).append(x)
            ps.setdefault("entry", []).append(c.pvalue)
        entry = np.array(ps.pop("entry"))
        for k, v in ps.items():
            assert stats.kstest(v, "uniform").pvalue > KS_LEVEL, (shape, k)
        assert stats.binom.sf((entry <= 0.05).sum() - 1, entry.size, 0.05) > KS_LEVEL, shape


# -- shapes -----------------------------------------------------------------------------------
def test_components_follow_the_shape():
    for shape, expected in [
        ((64, 4096), ["calls", "rows", "blocks"]),
        ((4096,), ["calls", "blocks"]),
        ((64, 1), ["calls", "rows"]),
        ((1, 15), ["calls"]),
        ((3,), ["calls"]),
    ]:
        cfg = types.SimpleNamespace(seed=0, reproduce=lambda: "")
        fam = CountDispersion(types.SimpleNamespace(unit_shape=shape, units=int(np.prod(shape)), cfg=cfg))
        assert fam.components() == expected, shape
    c = _family((5,), 0, [])
    assert c.passed is None and "no split" in c.detail


# -- correct implementations --------------------------------------------------------------------
CORRECT = [
    ("np.random_ge", "float16", 0.1),
    ("np.binomial", "float64", 0.9),
    ("np.stateful_generator", "bfloat16", 0.5),
    ("tf.stateless_dropout", "bfloat16", 0.5),
    ("tf.textbook_where", "float32", 0.9),
    ("torch.F.dropout", "float16", 0.1),
    ("jax.uniform_ge", "float32", 0.5),
]
A = 1e-10


@pytest.mark.statistical(false_fail_rate=A)
@pytest.mark.parametrize("name, dtype, rate", CORRECT)
def test_correct_implementations_pass(name, dtype, rate, seed):
    entry = by_name(name)
    if not entry.available():
        pytest.skip(f"{entry.framework} not installed")
    if entry.framework == "numpy" and dtype in ("float16", "bfloat16") and int(np.__version__.split(".")[0]) < 2:
        pytest.skip(f"numpy {np.__version__} promotes a 16-bit x divided by a Python float to float64")
    r = entry.verify(rate=rate, dtype=dtype, seed=seed % 2**20, false_fail_rate=A)
    c = next(c for c in r.checks if c.name == "count_dispersion")
    assert c.passed is True, f"{name} at {dtype}, rate {rate}\n{r}"
