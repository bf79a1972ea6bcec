"""The backward checks: the gradient of a call uses that call's mask and scale, on real
TensorFlow, under GradientTape, tf.function, XLA and activation checkpointing."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import dropout_stats as ds
from dropout_stats.adapters import adapters

A = 1e-9


def stateless(x, rate, seed, noise_shape=None):
    return tf.nn.experimental.stateless_dropout(x, rate, seed=seed, noise_shape=noise_shape)


def stateful(x, rate, noise_shape=None):
    return tf.nn.dropout(x, rate, noise_shape=noise_shape)


def _need(wrapper):
    from dropout_stats.backends import get_backend

    if wrapper is not True and wrapper not in get_backend("tensorflow").recompute_wrappers:
        pytest.skip(f"{wrapper} is not in this Keras")


def _backward(r):
    return {c.name: c for c in r.checks if c.name.startswith("backward")}


@pytest.mark.statistical(false_fail_rate=A)
@pytest.mark.parametrize("mode", ["eager", "function", "jit"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_stateless_dropout_gradient_is_the_forward_mask_and_scale(mode, dtype, seed):
    fn = stateless if mode == "eager" else tf.function(stateless, jit_compile=mode == "jit")
    r = ds.verify(
        fn,
        rate=0.3,
        dtype=dtype,
        seed=seed % 2**30,
        false_fail_rate=A,
        reference="tensorflow-xla" if mode == "jit" else "tensorflow",
    )
    b = _backward(r)
    assert b["backward_mask"].passed and b["backward_scale"].passed, str(r)
    assert b["backward_scale"].observed.startswith("every kept gradient = upstream * ")


@pytest.mark.parametrize("wrapper", [True, "keras.remat"])
def test_stateless_dropout_survives_recompute(wrapper, seed):
    _need(wrapper)
    r = ds.verify(stateless, rate=0.2, seed=seed % 2**30, recompute=wrapper, false_fail_rate=A)
    assert _backward(r)["backward_mask"].passed, str(r)


@pytest.mark.statistical(false_fail_rate=2 * A)
@pytest.mark.parametrize("wrapper", ["tf.recompute_grad", "keras.remat"])
def test_stateful_dropout_redraws_its_mask_under_recompute(wrapper, seed):
    """The finding: the backward mask of tf.nn.dropout under rematerialisation is a fresh one.
    The agreement is tested against independence (p^2 + q^2) at level A: if TensorFlow redraws
    independently, as measured, that fails with probability <= A (exact binomial test)."""
    _need(wrapper)
    tf.random.set_seed(seed)
    r = ds.verify(stateful, rate=0.2, stateful=True, seed=seed % 2**30, recompute=wrapper, false_fail_rate=A)
    mask = _backward(r)["backward_mask"]
    assert mask.passed is False and f"under {wrapper}" in mask.detail
    p_independent = float(mask.detail.rsplit("p = ", 1)[1].rstrip(")"))
    assert p_independent > A, mask.detail


@pytest.mark.parametrize(
    "fn,why",
    [
        (
            lambda x, rate, seed, noise_shape=None: tf.stop_gradient(stateless(x, rate, seed, noise_shape)),
            "no gradient",
        ),
        (
            lambda x, rate, seed, noise_shape=None: tf.constant(stateless(x, rate, seed, noise_shape).numpy()),
            "no gradient",
        ),
    ],
    ids=["stop_gradient", "numpy in the middle"],
)
def test_no_gradient_is_stated_not_a_crash(fn, why):
    r = ds.verify(fn, rate=0.2, false_fail_rate=A)
    b = _backward(r)
    assert b["backward_mask"].passed is None and b["backward_scale"].passed is None
    assert why in b["backward_mask"].detail and "does not depend differentiably on x" in b["backward_mask"].detail


def test_backward_off_and_numpy_backend():
    r = ds.verify(stateless, rate=0.2, backward=False, false_fail_rate=A)
    assert not _backward(r)

    def numpy_dropout(x, rate, seed, noise_shape=None):
        keep = np.random.default_rng(list(seed)).random(noise_shape or x.shape) >= rate
        return np.where(keep, x * x.dtype.type(1 / (1 - rate)), x.dtype.type(0)).astype(x.dtype)

    r = ds.verify(numpy_dropout, rate=0.2, backward=True, false_fail_rate=A)
    assert _backward(r)["backward_mask"].passed is None
    assert "backend 'numpy' has no gradients" in _backward(r)["backward_mask"].detail


@pytest.mark.statistical(false_fail_rate=A)
@pytest.mark.parametrize("adapter", [a for a in adapters() if a.kind != "gaussian"], ids=lambda a: a.name)
def test_every_entry_point_gradient_goes_through_it(adapter, seed):
    """Every TensorFlow and Keras entry point (its layer, for the Keras ones), every mode: the
    gradient of the call is that call's mask and scale (float32)."""
    r = adapter.verify(rate=0.3, dtype="float32", seed=seed % 2**30, false_fail_rate=A)
    b = _backward(r)
    assert b["backward_mask"].passed and b["backward_scale"].passed, str(r)


def test_gradient_calls_draw_their_own_documented_seeds():
    """The two calls made with their gradient use seeds (s + 5, 0) and (s + 5, 1), as the
    check's docstring says, and no other call uses them (each is a fresh draw for the rate test);
    the numbers the entries report are recomputed from those two calls' outputs."""
    seen = []

    def recording(x, rate, seed, noise_shape=None):
        y = stateless(x, rate, seed, noise_shape)
        seen.append((int(seed[0]), int(seed[1]), tuple(x.shape), y))
        return y

    r = ds.verify(recording, rate=0.3, seed=4, false_fail_rate=A)
    # seed_correlation's far seeds: (s + 3, 0) with bit 30 of seed[0] flipped, and bit 0 too
    far = {7 ^ (1 << 30), 7 ^ (1 << 30) ^ 1}
    assert {s for s, _, _, _ in seen} == {4, 5, 6, 7, 8, 9} | far
    grads = [(i, y) for s, i, _, y in seen if s == 9]
    assert [i for i, _ in grads] == [0, 1]
    kept = sum(int(np.count_nonzero(y.numpy())) for _, y in grads)
    b = _backward(r)
    total = sum(int(np.prod(y.shape)) for _, y in grads)
    assert b["backward_mask"].samples == total
    assert b["backward_mask"].values == {"agreement": 1.0, "positions": total, "dropped_passing": 0, "kept_blocked": 0}
    assert b["backward_mask"].observed == "agreement 1 (0 positions differ)" and b["backward_mask"].detail == ""
    assert b["backward_mask"].reproduce.endswith("seeds [[9, 0], [9, 1]]")
    assert b["backward_scale"].samples == kept
    assert b["backward_scale"].detail == f"{kept:,} kept positions of 2 calls"


def test_a_backward_scale_failure_names_the_closest_formula():
    """The backward divides by fl(1 - rate), one gradient a ULP off per call: the failure names
    the divide formula with that count (closest by the number of differing positions), not the
    first formula tried (multiply, which differs on many)."""
    rate = 0.3

    def off_by_one_ulp(x, r, seed, noise_shape=None):
        @tf.custom_gradient
        def f(t):
            y = stateless(t, r, seed, noise_shape)

            def grad(dy):
                g = tf.where(y != 0, dy / tf.constant(1 - r, t.dtype), tf.zeros_like(dy))
                first = tf.reshape(tf.where(tf.reshape(y, [-1]) != 0)[0], [1, 1])
                flat = tf.reshape(g, [-1])
                bumped = tf.tensor_scatter_nd_update(
                    flat,
                    first,
                    [tf.experimental.numpy.nextafter(tf.gather_nd(flat, first)[0], tf.constant(np.inf, t.dtype))],
                )
                return tf.reshape(bumped, tf.shape(g))

            return y, grad

        return f(x)

    # one ULP is inside the contract's rounding bound: only exact_scale=True calls it a failure
    assert _backward(ds.verify(off_by_one_ulp, rate=rate, seed=2, false_fail_rate=A))["backward_scale"].passed
    r = ds.verify(off_by_one_ulp, rate=rate, seed=2, false_fail_rate=A, exact_scale=True)
    b = _backward(r)
    assert b["backward_mask"].passed and b["backward_scale"].passed is False, str(r)
    divisor = float(np.float32(1 - rate))
    assert b["backward_scale"].observed.startswith(
        f"2/{b['backward_scale'].samples:,} differ from the closest formula (upstream / {divisor!r})"
    ), b["backward_scale"].observed
    # gradient / upstream over the kept positions: 1 / fl(0.7) to within a rounding and the one bumped
    # ULP (2^-24 + 2^-23 = 1.8e-7 relative at most)
    lo, hi = (float(v) for v in b["backward_scale"].detail.split("by [", 1)[1].split("]", 1)[0].split(", "))
    assert 1 / divisor * (1 - 4e-7) < lo <= hi < 1 / divisor * (1 + 4e-7), b["backward_scale"].detail


def test_one_call_without_a_gradient_is_named():
    """Only the first call made with its gradient stops it (seed (s + 5, 0)): both entries are
    not applicable, with the reason, rather than checked on the one call left."""

    def first_stopped(x, rate, seed, noise_shape=None):
        y = stateless(x, rate, seed, noise_shape)
        return tf.stop_gradient(y) if (int(seed[0]), int(seed[1])) == (9, 0) else y

    r = ds.verify(first_stopped, rate=0.3, seed=4, false_fail_rate=A)
    b = _backward(r)
    assert b["backward_mask"].passed is None and b["backward_scale"].passed is None
    assert b["backward_mask"].detail.startswith("no gradient flows from y to x")


def test_a_backward_mask_failure_is_recomputed_from_both_masks():
    """corpus.backward_other_seed: the gradient of the call with seed (s + 5, i) passes where seed
    (s + 5, i + 1) keeps.  Agreement, the positions that differ each way and the independence
    p-value, from TensorFlow's own two masks of each call."""
    from scipy import stats

    from dropout_stats.calibration.corpus import backward_other_seed

    r = ds.verify(backward_other_seed, rate=0.3, seed=4, false_fail_rate=A)
    m = _backward(r)["backward_mask"]
    ones = tf.ones(r.config["shape"], tf.float32)
    agree = total = dropped_passing = kept_blocked = 0
    for i in (0, 1):
        kept = stateless(ones, 0.3, tf.constant([9, i])).numpy() != 0
        passing = stateless(ones, 0.3, tf.constant([9, i + 1])).numpy() != 0
        agree += int(np.count_nonzero(kept == passing))
        dropped_passing += int(np.count_nonzero(~kept & passing))
        kept_blocked += int(np.count_nonzero(kept & ~passing))
        total += kept.size
    assert m.passed is False
    assert m.values == {
        "agreement": agree / total,
        "positions": total,
        "dropped_passing": dropped_passing,
        "kept_blocked": kept_blocked,
    }
    assert m.observed == f"agreement {agree / total:.6g} ({total - agree:,} positions differ)"
    p = stats.binomtest(agree, total, 0.7**2 + 0.3**2).pvalue
    assert m.detail.endswith(f"p^2 + q^2 = {0.7**2 + 0.3**2:.6g}: p = {p:.3g})"), m.detail


def test_a_gradient_of_zeros_everywhere_leaves_no_scale_to_check():
    """The backward returns zeros: the mask entry fails (kept positions get none) and the scale
    entry has nothing to compare, said as such."""

    def zero_backward(x, rate, seed, noise_shape=None):
        @tf.custom_gradient
        def f(t):
            return stateless(t, rate, seed, noise_shape), lambda dy: tf.zeros_like(dy)

        return f(x)

    b = _backward(ds.verify(zero_backward, rate=0.3, seed=2, false_fail_rate=A))
    assert b["backward_mask"].passed is False and b["backward_mask"].values["kept_blocked"] > 0
    assert b["backward_scale"].passed is None and b["backward_scale"].detail == "no kept position passes a gradient"


def test_alpha_dropout_gradient_scaled_as_plain_dropout_fails():
    """Alpha dropout's gradient at a kept position is a times the upstream one; a backward that
    scales by plain dropout's fl(1 / (1 - rate)), bit for bit as TensorFlow's own, must fail
    backward_scale (the plain formulas are not the alpha contract's)."""
    import keras

    def scaled_like_dropout(x, rate, noise_shape=None):
        @tf.custom_gradient
        def f(t):
            y = keras.layers.AlphaDropout(rate, dtype=t.dtype.name, noise_shape=noise_shape)(t, training=True)
            kept = y > tf.reduce_min(y)  # inputs are positive: the dropped value is the smallest

            def grad(dy):
                return tf.where(kept, dy * tf.constant(1 / (1 - rate), t.dtype), tf.zeros_like(dy))

            return y, grad

        return f(x)

    r = ds.verify_alpha_dropout(scaled_like_dropout, rate=0.2, false_fail_rate=A)
    b = _backward(r)
    assert b["backward_mask"].passed and b["backward_scale"].passed is False, str(r)
