"""seed_correlation: masks of different seeds compared at every displacement.

A seed that moves the mask instead of redrawing it (seed (s + 1, i) draws the mask of (s, i)
shifted by one position, by k positions, by a row) passes a comparison at displacement 0; so do
seeds whose high bits are ignored (seeds 2**16 apart collide), because no two seeds of a run are
that far apart.  Each defect below is written at least twice (numpy, TensorFlow, PyTorch); each
must fail seed_correlation, and the correct implementations of tests/contract_corpus.py must pass.

Budget: correct runs at false_fail_rate=A each (their statistical mark).  A broken run's defect is
a copy of the whole mask: its folded cross-correlation stands 64 noise standard deviations out
(the fold's sqrt(4096)) and its table's p-value bound is below 1e-10000, so it is missed with
probability far below MISS, its mark.
"""

from __future__ import annotations

import numpy as np
import pytest
from contract_corpus import by_name
from scipy.stats import binom, hypergeom

import dropout_stats as ds
from dropout_stats.battery.checks import seeds

A = 1e-10  # false_fail_rate of each correct run
MISS = 1e-30  # miss chance of a broken run (bounded in the module docstring)
PAD = 1024  # the broken streams are longer than the mask by this much: offsets below it


# -- broken implementations: numpy ---------------------------------------------------------------
def _np_out(x, u, rate):
    return np.where(u >= rate, x / (1 - rate), 0).astype(x.dtype)


def _np_window(shape, stream_seed, offset):
    n = int(np.prod(shape))
    return np.random.default_rng([9, stream_seed]).random(n + PAD)[offset : offset + n].reshape(shape)


def np_shift_seed0(x, rate, seed, noise_shape=None):
    """one stream per seed[1]; seed[0] moves its window by one position"""
    return _np_out(x, _np_window(noise_shape or x.shape, int(seed[1]), int(seed[0]) % PAD), rate)


def np_shift_seed1(x, rate, seed, noise_shape=None):
    """one stream per seed[0]; seed[1] moves its window by one position"""
    return _np_out(x, _np_window(noise_shape or x.shape, int(seed[0]), int(seed[1]) % PAD), rate)


def np_shift_by_k(x, rate, seed, noise_shape=None):
    """seed[0] moves the window by 37 positions"""
    shape = noise_shape or x.shape
    n = int(np.prod(shape))
    u = np.random.default_rng([9, int(seed[1])]).random(n + 37 * 16)[37 * (int(seed[0]) % 16) :][:n]
    return _np_out(x, u.reshape(shape), rate)


def np_rows_rotated(x, rate, seed, noise_shape=None):
    """seed[0] rotates the rows of one draw per seed[1]"""
    shape = noise_shape or x.shape
    u = np.random.default_rng([9, int(seed[1])]).random(shape)
    return _np_out(x, np.roll(u, int(seed[0]) % shape[0], axis=0), rate)


def np_seed0_mod_2_16(x, rate, seed, noise_shape=None):
    """seed[0] taken modulo 2**16: seeds 2**16 apart collide"""
    u = np.random.default_rng((int(seed[0]) % 2**16, int(seed[1]))).random(noise_shape or x.shape)
    return _np_out(x, u, rate)


def np_seed1_20_bits(x, rate, seed, noise_shape=None):
    """seed[1] cut to its low 20 bits"""
    u = np.random.default_rng((int(seed[0]), int(seed[1]) & 0xFFFFF)).random(noise_shape or x.shape)
    return _np_out(x, u, rate)


def np_seed_through_float32(x, rate, seed, noise_shape=None):
    """the seed stored in a float32 array on its way (24 significant bits)"""
    s = np.asarray([int(v) for v in seed], dtype=np.float32).astype(np.int64)
    return _np_out(x, np.random.default_rng(s.tolist()).random(noise_shape or x.shape), rate)


def np_mixed_rolled(x, rate, seed, noise_shape=None):
    """seed[0] + seed[1] draws, seed[0] rolls: (s + 1, i) is (s, i + 1) shifted by one position"""
    shape = noise_shape or x.shape
    u = np.random.default_rng([9, int(seed[0]) + int(seed[1])]).random(int(np.prod(shape)))
    return _np_out(x, np.roll(u, int(seed[0]) % 4096).reshape(shape), rate)


# -- broken implementations: TensorFlow ----------------------------------------------------------
def _tf():
    import tensorflow as tf

    return tf


def _tf_out(x, u, rate):
    tf = _tf()
    return tf.where(u >= rate, x / (1 - rate), tf.zeros_like(x))


def _tf_window(shape, stream_seed, offset):
    tf = _tf()
    n = int(np.prod(shape))
    u = tf.random.stateless_uniform([n + PAD], seed=tf.stack([tf.constant(9, tf.int32), stream_seed]))
    return tf.reshape(u[offset : offset + n], shape)


def tf_shift_seed0(x, rate, seed, noise_shape=None):
    shape = list(noise_shape or x.shape)
    return _tf_out(x, _tf_window(shape, seed[1], seed[0] % PAD), rate)


def tf_shift_seed1(x, rate, seed, noise_shape=None):
    shape = list(noise_shape or x.shape)
    return _tf_out(x, _tf_window(shape, seed[0], seed[1] % PAD), rate)


def tf_shift_by_row_and_3(x, rate, seed, noise_shape=None):
    """seed[0] moves the window by a row and 3 positions (4099 at the default shape)"""
    tf = _tf()
    shape = list(noise_shape or x.shape)
    n, step = int(np.prod(shape)), int(shape[-1]) + 3
    u = tf.random.stateless_uniform([n + 8 * step], seed=tf.stack([tf.constant(9, tf.int32), seed[1]]))
    off = (seed[0] % 8) * step
    return _tf_out(x, tf.reshape(u[off : off + n], shape), rate)


def tf_rows_rotated(x, rate, seed, noise_shape=None):
    tf = _tf()
    shape = list(noise_shape or x.shape)
    u = tf.random.stateless_uniform(shape, seed=tf.stack([tf.constant(9, tf.int32), seed[1]]))
    return _tf_out(x, tf.roll(u, seed[0], axis=0), rate)


def tf_seed_16_bits(x, rate, seed, noise_shape=None):
    """both components cut to 16 bits"""
    tf = _tf()
    u = tf.random.stateless_uniform(list(noise_shape or x.shape), seed=tf.bitwise.bitwise_and(seed, 0xFFFF))
    return _tf_out(x, u, rate)


def tf_seed_through_float32(x, rate, seed, noise_shape=None):
    """the seed cast to float32 and back"""
    tf = _tf()
    s = tf.cast(tf.cast(seed, tf.float32), tf.int32)
    return _tf_out(x, tf.random.stateless_uniform(list(noise_shape or x.shape), seed=s), rate)


def tf_mixed_rolled(x, rate, seed, noise_shape=None):
    tf = _tf()
    shape = list(noise_shape or x.shape)
    u = tf.random.stateless_uniform([int(np.prod(shape))], seed=tf.stack([seed[0] + seed[1], tf.constant(0)]))
    return _tf_out(x, tf.reshape(tf.roll(u, seed[0] % 4096, axis=0), shape), rate)


# -- broken implementations: PyTorch (the backend packs the pair as s0 * 2**24 + s1) ---------------
def _torch_parts(generator):
    packed = generator.initial_seed()
    return packed >> 24, packed & (2**24 - 1)


def _torch_out(x, u, rate):
    import torch

    return torch.where(u >= rate, x / (1 - rate), torch.zeros_like(x))


def torch_shift_seed0(x, rate, generator, noise_shape=None):
    import torch

    shape = tuple(noise_shape or x.shape)
    s0, s1 = _torch_parts(generator)
    n, off = int(np.prod(shape)), s0 % PAD
    u = torch.rand(n + PAD, generator=torch.Generator().manual_seed(s1))[off : off + n]
    return _torch_out(x, u.reshape(shape), rate)


def torch_rows_rotated(x, rate, generator, noise_shape=None):
    import torch

    shape = tuple(noise_shape or x.shape)
    s0, s1 = _torch_parts(generator)
    u = torch.rand(shape, generator=torch.Generator().manual_seed(s1))
    return _torch_out(x, torch.roll(u, s0, dims=0), rate)


def torch_seed_31_bits(x, rate, generator, noise_shape=None):
    """the generator's seed cut to 31 bits"""
    import torch

    g = torch.Generator().manual_seed(generator.initial_seed() & 0x7FFFFFFF)
    return _torch_out(x, torch.rand(tuple(noise_shape or x.shape), generator=g), rate)


# (fn, backend, words the finding must hold, the other failures allowed: None for any)
SHIFT1 = "shifted back by 1 position"
BROKEN = [
    (np_shift_seed0, "numpy", ["seed[0] + 1", SHIFT1], set()),
    (tf_shift_seed0, "tensorflow", ["seed[0] + 1", SHIFT1], set()),
    (torch_shift_seed0, "torch", ["seed[0] + 1", SHIFT1], set()),
    # a shift per seed[1] step moves consecutive main calls too: their own checks see it as well
    (np_shift_seed1, "numpy", ["seed[1] + 1", SHIFT1], None),
    (tf_shift_seed1, "tensorflow", ["seed[1] + 1", SHIFT1], None),
    (np_shift_by_k, "numpy", ["seed[0] + 1", "shifted back by 37 positions"], set()),
    (tf_shift_by_row_and_3, "tensorflow", ["seed[0] + 1", "shifted back by 4,099 positions"], set()),
    (
        np_rows_rotated,
        "numpy",
        ["seed[0] + 1", "shifted forward by 4,096 positions", "(1 row of 4,096)"],
        {"repeats"},
    ),  # whole rows of one seed are rows of the next: repeats
    (
        tf_rows_rotated,
        "tensorflow",
        ["seed[0] + 1", "(1 row of 4,096)"],
        {"repeats"},
    ),  # whole rows of one seed are rows of the next: repeats
    (
        torch_rows_rotated,
        "torch",
        ["seed[0] + 1", "(1 row of 4,096)"],
        {"repeats"},
    ),  # whole rows of one seed are rows of the next: repeats
    (np_seed0_mod_2_16, "numpy", ["draw the same mask", "bit 30 of seed[0] is ignored"], set()),
    (np_seed1_20_bits, "numpy", ["draw the same mask", "bit 30 of seed[1] is ignored"], set()),
    (tf_seed_16_bits, "tensorflow", ["draw the same mask", "bit 30 of seed["], set()),
    (torch_seed_31_bits, "torch", ["draw the same mask", "bit 31 of the 32-bit generator seed"], set()),
    (np_mixed_rolled, "numpy", ["seed[0] + 1 against seed[1] + 1", "shifted forward by 1 position"], set()),
    (np_seed_through_float32, "numpy", ["draw the same mask", "bit 0 of seed[0] is lost once bit 30"], set()),
    (tf_seed_through_float32, "tensorflow", ["draw the same mask", "as when the seed passes through float32"], set()),
    (tf_mixed_rolled, "tensorflow", ["seed[0] + 1 against seed[1] + 1", "shifted forward by 1 position"], set()),
]


@pytest.mark.statistical(false_fail_rate=MISS)
@pytest.mark.parametrize("fn, backend, words, also", BROKEN, ids=[b[0].__name__ for b in BROKEN])
def test_seed_shift_fails_seed_correlation(fn, backend, words, also, seed):
    pytest.importorskip(backend)
    # seed[0] a multiple of 1024 plus 0 to 7: the defects' moduli (PAD, 16, 8, the torch backend's
    # 256) never wrap between neighbouring seeds, so the displacement is the one named
    r = ds.verify(fn, rate=0.2, backend=backend, reference=None, seed=(seed % 2**10) << 10, false_fail_rate=A)
    c = r.check("seed_correlation")
    failed = {f.name for f in r.failures}
    assert c.passed is False, f"{fn.__name__} passed seed_correlation\n{r}"
    if also is not None:
        assert failed - also == {"seed_correlation"}, f"{fn.__name__}: only seed_correlation sees it\n{r}"
    for w in words:
        assert w in c.values["finding"], (w, c.values["finding"])


@pytest.mark.statistical(false_fail_rate=MISS)
@pytest.mark.parametrize("shape, noise_shape", [((16, 64), None), ((8, 4, 128), (8, 1, 128))])
def test_small_masks_and_noise_shapes_test_every_displacement_at_once(shape, noise_shape, seed):
    """Masks of up to 4096 units: every displacement's table counted by FFT (no folding)."""
    r = ds.verify(np_shift_seed0, rate=0.5, shape=shape, noise_shape=noise_shape, seed=seed % 2**20, false_fail_rate=A)
    c = r.check("seed_correlation")
    assert c.passed is False and c.values["displacement"] == -1, str(r)


# -- correct implementations pass ----------------------------------------------------------------
CORRECT = [
    ("tf.stateless_dropout", "float32", 0.1),
    ("tf.textbook_where", "bfloat16", 0.5),
    ("tf.rate_tensor", "float16", 0.9),
    ("np.random_ge", "float32", 0.5),
    ("np.binomial", "float16", 0.9),
    ("np.float32_compute", "bfloat16", 0.1),
    ("jax.bernoulli_where", "float32", 0.9),
    ("jax.uniform_ge", "bfloat16", 0.5),
    ("flax.linen.Dropout", "float16", 0.1),
    ("torch.bernoulli_generator", "float32", 0.5),
    ("torch.bernoulli_inplace_generator", "bfloat16", 0.9),
    ("torch.rand_generator_where", "float16", 0.1),
]


@pytest.mark.statistical(false_fail_rate=A)
@pytest.mark.parametrize("name, dtype, rate", CORRECT, ids=[f"{n}-{d}-{r}" for n, d, r in CORRECT])
def test_correct_implementations_pass(name, dtype, rate, seed):
    entry = by_name(name)
    if not entry.available():
        pytest.skip(f"{entry.framework} is not importable")
    if rate not in entry.rates or dtype not in entry.dtypes:
        pytest.skip(f"{name} is not defined at {dtype}, rate {rate}")
    r = entry.verify(rate=rate, dtype=dtype, seed=seed % 2**20, false_fail_rate=A)
    c = r.check("seed_correlation")
    assert c.passed is True and r.passed, str(r)
    assert c.values["tested"] == 3 * (2 * 262_144 - 2) + 5 * (2 * 65_536 - 1)  # neighbours; far seeds


# -- the statistics -------------------------------------------------------------------------------
def test_bound_is_above_the_exact_two_sided_tail():
    """Hoeffding's bound against the exact hypergeometric tails, on tables of every shape, far in
    the tail included: the bound is never below twice the observed side's exact tail."""
    rng = np.random.default_rng(2029)
    m = rng.integers(2, 5000, 4000)
    a = rng.integers(0, m + 1)
    b = rng.integers(0, m + 1)
    lo, hi = np.maximum(0, a + b - m), np.minimum(a, b)
    k = lo + (rng.random(m.size) * (hi - lo + 1)).astype(np.int64)
    bound = seeds.two_sided_bound(k, a, b, m)
    exact = np.minimum(1.0, 2 * np.minimum(hypergeom.sf(k - 1, m, a, b), hypergeom.cdf(k, m, a, b)))
    assert np.all(bound >= exact * (1 - 1e-9)), np.max(exact / bound)
    deep = (exact < 1e-6) & (exact > 1e-280)  # and not vacuous: it keeps at least half the exponent
    ratio = np.log(bound[deep]) / np.log(exact[deep])
    assert np.all(ratio > 0.4) and np.median(ratio) > 0.75, (np.min(ratio), np.median(ratio))


@pytest.mark.parametrize("n, keep", [(4096, 0.8), (4096, 0.05), (65_536, 0.5), (65_536, 0.97)])
def test_null_pvalues_are_conservative(n, keep):
    """Independent i.i.d. masks (the null): the displacement-level bound is a valid p-value
    (P(bound <= x) <= x, checked on exact hypergeometric draws), and so is the check's p-value
    after Bonferroni (200 runs).  A valid p-value puts at most Binomial(N, x) of N draws at or
    below x: each count is held to that binomial's 1 - 1e-9 quantile (the thresholds follow from
    N and x; the draws are seeded, so the test replays)."""
    rng = np.random.default_rng(n + int(keep * 100))
    a = rng.binomial(n, keep, 20_000)
    b = rng.binomial(n, keep, 20_000)
    k = rng.hypergeometric(a, n - a, b)
    bound = seeds.two_sided_bound(k, a, b, np.full(a.size, n))
    for x in (0.01, 0.1, 0.5):
        assert np.sum(bound <= x) <= binom.isf(1e-9, bound.size, x), (x, np.mean(bound <= x))
    pvalues = []
    for _ in range(200):
        x, y = rng.random(n) < keep, rng.random(n) < keep
        found = seeds.scan([(x, y)], exclude_zero=False)
        pvalues.append(min(1.0, (2 * n - 1) * found[0]))
    for x in (0.01, 0.05):
        assert sum(p <= x for p in pvalues) <= binom.isf(1e-9, len(pvalues), x), (x, sorted(pvalues)[:5])


def test_folding_finds_a_shift_at_any_displacement():
    """A copy displaced by d, for d near 0, near a fold's modulus, and far: down to an overlap of
    15% of the mask (the fold finds shares from about 10% on)."""
    rng = np.random.default_rng(7)
    n = 1 << 18
    for d in (1, -1, 4095, -4096, 2187, 100_003, -200_000, n - 40_000):
        x = rng.random(n + abs(d)) < 0.8
        a, b = (x[d : d + n], x[:n]) if d >= 0 else (x[:n], x[-d : n - d])  # b[u + d] = a[u]
        found = seeds.scan([(a, b)], exclude_zero=True)
        assert found[1] == d and found[2] == found[3] == found[4], (d, found[1:])


@pytest.mark.parametrize("backend", ["numpy", "tensorflow", "jax", "torch"])
@pytest.mark.parametrize("base", [0, 12345, 2**30 - 2, 2**31 - 12])
def test_far_seeds_are_valid_in_every_backend_form(backend, base):
    """Each far seed is a valid seed of the backend (TensorFlow's int32 pair, JAX's key, torch's
    packed 32-bit generator seed) and lands on another framework seed than every call of a run
    (seed[0] offsets 0 to 7, seed[1] up to 63)."""
    pytest.importorskip(backend)
    from types import SimpleNamespace

    from dropout_stats.backends import get_backend
    from dropout_stats.battery.runner import Run

    b = get_backend(backend)
    run = SimpleNamespace(backend=b, cfg=SimpleNamespace(seed=base), seed_pair=lambda i, offset=0: (base + offset, i))

    def ident(pair):
        if backend == "torch":
            return b.seed(pair).initial_seed()
        if backend == "tensorflow":
            return tuple(b.seed(pair).numpy().tolist())
        if backend == "jax":
            return tuple(np.asarray(b.jax.random.key_data(b.seed(pair))).tolist())
        return tuple(b.seed(pair))

    others = {ident((base + k, i)) for k in range(8) for i in range(64)}
    far = set()
    for comp in (0, 1):
        for low in (False, True):
            pair, bit, where = Run.far_seed_pair(run, comp, offset=3, low=low)
            assert all(0 <= v < 2**31 for v in pair), pair
            assert pair[1 - comp] == (base + 3, 0)[1 - comp] and pair[comp] != (base + 3, 0)[comp]
            assert pair[comp] ^ (base + 3, 0)[comp] == (1 << bit) | low, (pair, bit, low)
            assert ident(pair) not in others, (backend, pair)
            assert f"bit {bit} of seed[{comp}]" in where
            far.add(ident(pair))
    assert len(far) == 4, far  # four framework seeds, each another


def test_every_displacement_table_matches_counting():
    """The FFT's tables (small masks, several pairs pooled) equal the tables counted pair by pair."""
    rng = np.random.default_rng(3)
    pairs = [(rng.random(300) < 0.3, rng.random(300) < 0.6) for _ in range(3)]
    d, k, a, b, m = seeds.direct_tables(pairs)
    for i in range(d.size):
        assert (k[i], a[i], b[i], m[i]) == seeds.table(pairs, int(d[i])), int(d[i])
