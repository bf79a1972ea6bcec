"""The long_range family (dropout_stats/battery/checks/long_range.py): repeats (rows that come back
at any distance, whole masks that cycle) and, in the long mode, drift.

Broken implementations, each class at least two ways (numpy and torch or TensorFlow): rows that
repeat every 37 rows within a call; a row stream that wraps every 150 rows, across calls; a
generator whose state cycles every 2 or 3 calls (default run) or every 37 or 300 calls (long
mode); a threshold that drifts after 300 calls (long mode).  A repeat fails with certainty (its
p-value is at most 1e-30); a drift of 0.02 against a design of 0.005 is missed with probability
below the run's false_pass_rate (1e-9 here).  Correct implementations of tests/contract_corpus.py
pass the long mode at false_fail_rate A.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from contract_corpus import by_name

import dropout_stats as ds
from dropout_stats.battery.checks.long_range import (
    PAIR_BOUND,
    long_calls,
    split_pvalue,
    window_rows,
)
from dropout_stats.diagnosis import diagnose

A = 1e-10  # false_fail_rate of a correct run
B = 1e-9  # false_pass_rate of a drift run


def _np_keep(x, rate, keep):
    return np.where(keep, x / x.dtype.type(1 - rate), x.dtype.type(0)).astype(x.dtype)


# -- broken implementations -------------------------------------------------------------------------
def np_rows_every_37(x, rate, seed, noise_shape=None):
    """37 rows drawn, tiled down the batch: row r is row r mod 37"""
    shape = tuple(noise_shape or x.shape)
    u = np.random.default_rng(list(seed)).random((37,) + shape[1:])
    return _np_keep(x, rate, u[np.arange(shape[0]) % 37] >= rate)


def torch_rows_every_37(x, rate, noise_shape=None):
    """stateful torch: 37 rows drawn, repeated down the batch"""
    import torch

    shape = tuple(noise_shape or x.shape)
    u = torch.rand((37,) + shape[1:])
    keep = u[torch.arange(shape[0]) % 37] >= rate
    return torch.where(keep, x / (1 - rate), torch.zeros((), dtype=x.dtype))


def np_row_counter_wraps():
    """stateful numpy: row k of all calls together is row k mod 150 of one table (a row counter
    that wraps): rows 150 apart are equal, across calls"""
    state = {"k": 0}
    table = {}

    def np_row_counter(x, rate, noise_shape=None):
        shape = tuple(noise_shape or x.shape)
        if shape[1:] not in table:
            table[shape[1:]] = np.random.default_rng(7).random((150,) + shape[1:])
        rows = (state["k"] + np.arange(shape[0])) % 150
        state["k"] += shape[0]
        return _np_keep(x, rate, table[shape[1:]][rows] >= rate)

    return np_row_counter


def tf_rows_wrap_150(x, rate, seed, noise_shape=None):
    """TensorFlow, stateless: each row's draw indexed by (seed[1] x rows + row) mod 150"""
    import tensorflow as tf

    shape = list(noise_shape or x.shape)
    table = tf.random.stateless_uniform([150] + shape[1:], seed=tf.stack([seed[0], seed[0] * 0]), dtype=x.dtype)
    rows = (seed[1] * shape[0] + tf.range(shape[0])) % 150
    u = tf.gather(table, rows)
    return tf.where(u >= rate, x * tf.cast(1 / (1 - rate), x.dtype), tf.zeros_like(x))


def np_cycle(period: int):
    """stateful numpy whose generator state is the call count mod ``period``"""
    state = {"k": 0}

    def fn(x, rate, noise_shape=None):
        k = state["k"] % period
        state["k"] += 1
        return _np_keep(x, rate, np.random.default_rng([99, k]).random(noise_shape or x.shape) >= rate)

    fn.__name__ = fn.__qualname__ = f"np_cycle{period}"
    return fn


def torch_cycle(period: int):
    """stateful torch: a generator reseeded with the call count mod ``period``"""
    import torch

    state = {"k": 0}

    def fn(x, rate, noise_shape=None):
        g = torch.Generator().manual_seed(1000 + state["k"] % period)
        state["k"] += 1
        keep = torch.rand(tuple(noise_shape or x.shape), generator=g) >= rate
        return torch.where(keep, x / (1 - rate), torch.zeros((), dtype=x.dtype))

    fn.__name__ = fn.__qualname__ = f"torch_cycle{period}"
    return fn


def np_seed_wraps_300(x, rate, seed, noise_shape=None):
    """stateless numpy: seed[1] kept mod 300 (the mask of seed (s, i) is that of (s, i + 300))"""
    return _np_keep(x, rate, np.random.default_rng([seed[0], seed[1] % 300]).random(noise_shape or x.shape) >= rate)


def np_drifts_after_300():
    """stateful numpy: after 300 calls the threshold is rate + 0.02"""
    state = {"k": 0}
    rng = np.random.default_rng(5)

    def np_drift(x, rate, noise_shape=None):
        state["k"] += 1
        threshold = rate + (0.02 if state["k"] > 300 else 0.0)
        return _np_keep(x, rate, rng.random(noise_shape or x.shape) >= threshold)

    return np_drift


def torch_drifts_after_300():
    """stateful torch: after 300 calls the threshold is rate - 0.02"""
    import torch

    state = {"k": 0}

    def torch_drift(x, rate, noise_shape=None):
        state["k"] += 1
        threshold = rate - (0.02 if state["k"] > 300 else 0.0)
        keep = torch.rand(tuple(noise_shape or x.shape)) >= threshold
        return torch.where(keep, x / (1 - rate), torch.zeros((), dtype=x.dtype))

    return torch_drift


# -- the default run --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fn,kwargs",
    [(np_rows_every_37, {"backend": "numpy"}), (torch_rows_every_37, {"stateful": True, "backend": "torch"})],
    ids=["numpy", "torch"],
)
def test_rows_repeating_every_37_rows_name_their_displacement(fn, kwargs):
    if kwargs["backend"] == "torch":
        pytest.importorskip("torch")
    r = ds.verify(fn, rate=0.2, **kwargs)
    c = r.check("repeats")
    assert c.passed is False and c.values["displacement_rows"] == 37, r
    words = diagnose(r)[0]
    assert words.startswith("rows repeat 37 rows apart, within a call"), words


@pytest.mark.parametrize("impl", ["numpy", "tensorflow"])
def test_a_row_stream_that_wraps_across_calls_names_its_displacement(impl):
    if impl == "numpy":
        fn, kwargs = np_row_counter_wraps(), {"stateful": True, "backend": "numpy"}
    else:
        pytest.importorskip("tensorflow")
        fn, kwargs = tf_rows_wrap_150, {"reference": None, "backend": "tensorflow"}
    r = ds.verify(fn, rate=0.2, false_fail_rate=1e-30, **kwargs)
    c = r.check("repeats")
    assert c.passed is False, r
    assert c.values["displacement_rows"] == 150 and "across calls (2 calls and 22 rows later)" in c.observed, c


@pytest.mark.statistical(false_fail_rate=A)  # the other checks of the run must pass
def test_one_chance_collision_is_not_called_a_cycle():
    """A small seed space (a key cut to 16 bits after hashing) shows as one pair of calls with one
    mask: the words name the pair and say no period, where a cycle would be claimed falsely."""

    def collides(x, rate, seed, noise_shape=None):
        s0, s1 = int(seed[0]), int(seed[1])
        keep = np.random.default_rng([s0, 1 if s1 == 3 else s1]).random(x.shape) >= rate
        return np.where(keep, x / (1 - rate), 0).astype(x.dtype)

    r = ds.verify(collides, rate=0.2, backend="numpy", false_fail_rate=A)
    c = r.check("repeats")
    assert c.passed is False and c.values["repeat_calls"] == [1, 3] and "period_calls" not in c.values, r
    words = diagnose(r)[0]
    assert "main calls 1 and 3 (seed[1] = 1 and 3) drew the same mask" in words and "cycle" not in words, words


@pytest.mark.statistical(false_fail_rate=2 * A)  # two runs whose other checks must pass
def test_a_key_cut_to_16_bits_after_hashing_collides_in_the_long_mode():
    """No bit flip of the seed shows a seed space cut after hashing (docs/battery/seeds.md); the
    long mode's thousand seeds do (birthday bound: ~8 colliding pairs expected among 1,054 calls
    in 65,536 masks), named as chance collisions, not a cycle."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy

    def small_key(x, rate, key, noise_shape=None):
        small = int(jax.random.key_data(key)[-1]) & 0xFFFF
        keep = jax.random.bernoulli(jax.random.key(small), 1.0 - rate, noise_shape or x.shape)
        return jnp.where(keep, x / (1 - rate), 0).astype(x.dtype)

    assert ds.verify(small_key, rate=0.2, backend="jax", reference=None, false_fail_rate=A).passed
    r = ds.verify(small_key, rate=0.2, backend="jax", reference=None, drift=0.005, false_fail_rate=A)
    assert [c.name for c in r.failures] == ["repeats"], r
    words = diagnose(r)[0]
    assert "drew the same mask" in words and "no fixed period" in words and "cycle" not in words, words


@pytest.mark.parametrize("period", [2, 3])
@pytest.mark.parametrize("make", [np_cycle, torch_cycle], ids=["numpy", "torch"])
def test_a_state_cycle_is_reported_with_its_period_not_as_the_same_mask(make, period):
    if make is torch_cycle:
        pytest.importorskip("torch")
    r = ds.verify(make(period), rate=0.2, stateful=True)
    c = r.check("repeats")
    assert c.passed is False and c.values["period_calls"] == period, r
    words = diagnose(r)[0]
    assert f"period {period} main calls" in words and "every" not in words, words


def test_the_same_mask_on_every_call_says_so():
    r = ds.verify(np_cycle(1), rate=0.2, stateful=True)
    assert diagnose(r)[0].startswith("the same mask on every main call"), diagnose(r)


def test_short_rows_are_compared_in_windows():
    """Rows of 8 units collide by chance: windows of g rows keep the bound; a stream of such
    rows that repeats every 37 rows still fails, a correct one passes."""

    def np_correct(x, rate, seed, noise_shape=None):
        return _np_keep(x, rate, np.random.default_rng(list(seed)).random(noise_shape or x.shape) >= rate)

    bad = ds.verify(np_rows_every_37, rate=0.5, shape=(4096, 8), backend="numpy")
    assert bad.check("repeats").passed is False and bad.check("repeats").values["window_rows"] > 1, bad
    good = ds.verify(np_correct, rate=0.5, shape=(4096, 8), backend="numpy", false_fail_rate=A)
    assert good.check("repeats").passed is True and good.check("repeats").pvalue == 1.0, good


def test_the_window_bound_holds():
    for rows, units, keep in [(640, 4096, 0.8), (40960, 8, 0.5), (10**6, 2, 0.9), (3, 1, 0.999)]:
        c = keep**2 + (1 - keep) ** 2
        g = window_rows(rows, units, c, PAIR_BOUND)
        assert math.comb(rows, 2) * c ** (g * units) <= PAIR_BOUND * (1 + 1e-9)
        assert g == 1 or math.comb(rows, 2) * c ** ((g - 1) * units) > PAIR_BOUND


# -- the long mode --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fn,kwargs,period,needs",
    [
        (lambda: np_cycle(37), {"stateful": True, "drift": 0.01}, 37, None),
        (lambda: torch_cycle(37), {"stateful": True, "drift": 0.01}, 37, "torch"),
        (lambda: torch_cycle(300), {"stateful": True, "drift": 0.005}, 300, "torch"),
        (lambda: np_seed_wraps_300, {"drift": 0.005, "backend": "numpy"}, 300, None),
    ],
    ids=["numpy-37", "torch-37", "torch-300", "numpy-seed-300"],
)
def test_the_long_mode_sees_long_cycles(fn, kwargs, period, needs):
    if needs:
        pytest.importorskip(needs)
    r = ds.verify(fn(), rate=0.2, **kwargs)
    c = r.check("repeats")
    assert c.passed is False and c.values["period_calls"] == period and c.values["stream"] == "long", r
    assert f"period {period} long-sequence calls" in diagnose(r)[0]


@pytest.mark.statistical(false_fail_rate=2 * B)
@pytest.mark.parametrize("make", [np_drifts_after_300, torch_drifts_after_300], ids=["numpy", "torch"])
def test_a_threshold_that_drifts_after_300_calls_fails_the_long_mode(make):
    if make is torch_drifts_after_300:
        pytest.importorskip("torch")
    r = ds.verify(make(), rate=0.2, stateful=True, drift=0.005, false_pass_rate=B)
    c = r.check("drift")
    assert c.passed is False, r
    assert c.values["calls"] >= 600 and diagnose(r)[0].startswith("the keep probability changes during the run")


@pytest.mark.statistical(false_fail_rate=6 * A)
@pytest.mark.parametrize(
    "name,dtype,rate",
    [
        ("np.random_ge", "bfloat16", 0.65),
        ("np.stateful_generator", "float64", 0.1),
        ("np.binomial", "float32", 0.2),
        ("tf.textbook_where", "float16", 0.3),
        ("torch.rand_stateful", "float32", 0.8),
        ("jax.uniform_ge", "float32", 0.5),
    ],
)
def test_correct_implementations_pass_the_long_mode(name, dtype, rate, seed):
    entry = by_name(name)
    if not entry.available():
        pytest.skip(f"{name} needs a framework that is not installed")
    if entry.framework == "numpy" and dtype in ("float16", "bfloat16") and int(np.__version__.split(".")[0]) < 2:
        pytest.skip(f"numpy {np.__version__} promotes a 16-bit x divided by a Python float to float64")
    r = entry.verify(rate=rate, dtype=dtype, seed=seed % 2**30, drift=0.02, false_fail_rate=A)
    assert r.passed, r
    assert r.check("drift").passed and r.check("repeats").passed


@pytest.mark.statistical(false_fail_rate=1e-9)
def test_the_split_scan_is_conservative_under_the_null(seed):
    """P(p <= t) <= t: 4000 runs of 40 calls; the count at t = 0.05 and t = 0.2 stays below the
    binomial(4000, t) upper 1e-10 quantile."""
    from scipy.stats import binom

    rng = np.random.default_rng(seed)
    units = np.full(40, 4096.0)
    ps = np.array([split_pvalue(rng.binomial(4096, 0.8, 40).astype(float), units)[0] for _ in range(4000)])
    for t in (0.05, 0.2):
        assert np.sum(ps <= t) <= binom.isf(5e-11, 4000, t), (t, np.sum(ps <= t))


@pytest.mark.statistical(false_fail_rate=1e-9)
def test_the_designed_calls_detect_a_step_in_the_middle_half(seed):
    """At the size long_calls() gives (level 1e-4, beta 0.05), a step of the drift after call C/4
    is missed in at most a binomial(400, 0.05) upper-1e-9 share of 400 runs."""
    from scipy.stats import binom

    rng = np.random.default_rng(seed)
    keep, drift, units = 0.8, 0.01, 4096
    calls = long_calls(keep, drift, units, 1e-4, 0.05)
    tau = math.ceil(calls / 4)
    miss = 0
    for _ in range(400):
        kept = np.concatenate([rng.binomial(units, keep, tau), rng.binomial(units, keep - drift, calls - tau)]).astype(
            float
        )
        miss += split_pvalue(kept, np.full(calls, float(units)))[0] > 1e-4
    assert miss <= binom.isf(1e-9, 400, 0.05), (miss, calls)


def test_drift_is_validated_before_any_call():
    calls = []

    def fn(x, rate, seed, noise_shape=None):
        calls.append(1)
        return x

    for bad, error in [(0, ValueError), (1.5, ValueError), ("0.1", TypeError)]:
        with pytest.raises(error, match=r"drift \(.*\) must be"):
            ds.verify(fn, rate=0.2, backend="numpy", drift=bad)
    assert not calls


def tf_cycles_every_37_calls():
    """stateful TensorFlow: the seed of the uniform is the call count mod 37 (the family's corpus
    defect, dropout_stats.calibration.corpus.cycles_every_37_calls, proposed there)"""
    import tensorflow as tf

    state = {"k": 0}

    def cycles_every_37_calls(x, rate, noise_shape=None):
        seed = tf.constant([state["k"] % 37, 1234])
        state["k"] += 1
        u = tf.random.stateless_uniform(noise_shape or tf.shape(x), seed=seed, dtype=x.dtype)
        return tf.where(u >= rate, x * tf.cast(1 / (1 - rate), x.dtype), tf.zeros_like(x))

    return cycles_every_37_calls


def test_a_37_call_cycle_fails_the_long_mode_and_nothing_else():
    pytest.importorskip("tensorflow")
    r = ds.verify(
        tf_cycles_every_37_calls(), rate=0.2, stateful=True, reference=None, drift=0.01, false_fail_rate=1e-30
    )
    assert [c.name for c in r.failures] == ["repeats"], r
    assert r.check("repeats").values["period_calls"] == 37
