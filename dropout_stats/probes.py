"""Version facts: what the installed TensorFlow's dropout does at the edges, measured directly.

Each probe returns plain values (JSON-ready) for the behaviour matrix across TF releases
(``dropout-stats matrix``): NaN/inf at dropped positions, low-precision keep probabilities,
XLA against eager masks, extreme rates, rate validation, Keras seeding, the rate 0 / 1 paths.
"""

from __future__ import annotations

import inspect
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from .binomial import rate_test  # noqa: E402
from .precision import expected_keep_probability  # noqa: E402

_N = 1 << 20


def _sd(x, rate, seed=(7, 1), **kw):
    return tf.nn.experimental.stateless_dropout(x, rate, seed=list(seed), **kw)


def nonfinite_at_dropped_positions() -> dict:
    """What dropped positions hold when x is NaN or +-inf: 0 (a select) or NaN (x * mask)."""
    out = {}
    for label, value in (("nan", np.nan), ("inf", np.inf), ("-inf", -np.inf)):
        x = tf.fill([4096], tf.constant(value, tf.float32))
        y = _sd(x, 0.5).numpy()
        dropped = tf.random.stateless_uniform([4096], seed=[7, 1]).numpy() < np.float32(0.5)
        held = y[dropped]
        kind = (
            "0 (select)"
            if np.all(held == 0)
            else "NaN (multiply)"
            if np.all(np.isnan(held))
            else f"mixed: {np.unique(held.astype(str)).tolist()}"
        )
        kept = y[~dropped]
        out[label] = {"dropped_hold": kind, "kept_hold": str(kept[0]) if kept.size else None}
    y = tf.nn.dropout(tf.fill([4096], np.float32(np.nan)), 0.5).numpy()
    out["tf.nn.dropout nan"] = "0 (select)" if np.any(y == 0) else "NaN (multiply)"
    return out


def keep_probabilities(rates=(0.1, 0.2, 0.3)) -> dict:
    """Observed stateless keep fraction on 2^20 draws per cell, against TF's dtype-exact
    prediction and against 1 - rate (exact two-sided binomial p-values)."""
    out = {}
    for dtype in ("float16", "bfloat16"):
        for r in rates:
            x = tf.ones([_N], dtype=getattr(tf, dtype))
            kept = int(tf.math.count_nonzero(_sd(x, r)))
            pred = expected_keep_probability(r, dtype)
            out[f"{dtype} {r}"] = {
                "observed": kept / _N,
                "predicted": pred,
                "p_vs_predicted": rate_test(kept, _N, pred).pvalue,
                "p_vs_nominal": rate_test(kept, _N, 1 - r).pvalue,
            }
    return out


def xla_against_eager() -> dict:
    """Mask positions (of 2^16) where stateless_dropout under jit_compile differs from eager."""
    has_alg = "rng_alg" in inspect.signature(tf.nn.experimental.stateless_dropout).parameters
    out = {}
    for dtype in ("float16", "bfloat16", "float32", "float64"):
        x = tf.ones([1 << 16], dtype=getattr(tf, dtype))
        eager = _sd(x, 0.3).numpy() != 0
        jit = tf.function(lambda t: _sd(t, 0.3), jit_compile=True)(x).numpy() != 0
        row = {"default": int(np.count_nonzero(eager != jit))}
        if has_alg:
            e2 = _sd(x, 0.3, rng_alg="philox").numpy() != 0
            j2 = tf.function(lambda t: _sd(t, 0.3, rng_alg="philox"), jit_compile=True)(x).numpy() != 0
            row["philox"] = int(np.count_nonzero(e2 != j2))
        else:
            row["philox"] = "no rng_alg argument"
        out[dtype] = row
    return out


def extremes() -> dict:
    """Tiny and near-one rates in low precision: dropped share against the nominal rate."""
    out = {}
    for dtype, r in (
        ("float16", 1e-4),
        ("float16", 1e-3),
        ("bfloat16", 1e-3),
        ("float16", 0.9995),
        ("bfloat16", 0.995),
    ):
        x = tf.ones([_N], dtype=getattr(tf, dtype))
        dropped = _N - int(tf.math.count_nonzero(_sd(x, r)))
        out[f"{dtype} {r}"] = {"dropped_share": dropped / _N, "times_nominal": round(dropped / _N / r, 3)}
    return out


def _outcome(fn) -> str:
    try:
        y = fn().numpy()
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"{type(exc).__name__}: {msg[:90]}"
    kept = y != 0
    if not kept.any():
        return "accepted: drops everything"
    scale = float(y[kept][0])
    return f"accepted: keeps {kept.mean():.3f}, scale {scale:.8g}"


def rate_validation() -> dict:
    """How tf.nn.dropout treats out-of-range rates, as a Python float and as a tensor."""
    x = tf.ones([4096])
    out = {}
    for r in (-0.1, 1.0, 1.5, float("nan")):
        out[f"python {r}"] = _outcome(lambda r=r: tf.nn.dropout(x, r))
        out[f"tensor {r}"] = _outcome(lambda r=r: tf.nn.dropout(x, tf.constant(r, tf.float32)))
    out["python 0.0"] = _outcome(lambda: tf.nn.dropout(x, 0.0))
    return out


def keras_seeding() -> dict:
    """Does keras.layers.Dropout(seed=s) call stateless_dropout with seeds [s, 0], [s, 1], ...?"""
    import keras

    out = {"keras": keras.__version__}
    layer = keras.layers.Dropout(0.3, seed=1234)
    x = tf.ones([64, 64])
    first, second = (layer(x, training=True).numpy() != 0 for _ in range(2))
    s0 = _sd(x, 0.3, seed=(1234, 0)).numpy() != 0
    s1 = _sd(x, 0.3, seed=(1234, 1)).numpy() != 0
    out["calls stateless_dropout([s, k])"] = bool(np.array_equal(first, s0) and np.array_equal(second, s1))
    tf.random.set_seed(0)
    nn = tf.nn.dropout(x, 0.3, seed=1234).numpy() != 0
    tf.random.set_seed(0)
    again = keras.layers.Dropout(0.3, seed=1234)(x, training=True).numpy() != 0
    out["first call equals tf.nn.dropout(seed=s)"] = bool(np.array_equal(nn, again))
    out["rate 1.0"] = _outcome(lambda: keras.layers.Dropout(1.0)(x, training=True))
    return out


def recompute_agreement(shape=(256, 1024), rate=0.2) -> dict:
    """Under tf.recompute_grad and keras.remat, does the backward pass use the forward's mask?
    (dropout_stats.adapters.recompute_agreement for TensorFlow's entry points.)
    Reproduce: y = tf.recompute_grad(lambda a: tf.nn.dropout(a, 0.2))(x) under a GradientTape,
    then compare tape.gradient(y, x) != 0 with y != 0."""
    from .adapters import recompute_agreement as agreement

    return agreement("tensorflow", rate=rate, shape=shape)


def all_probes() -> dict:
    facts = {"tensorflow": tf.__version__}
    for name, probe in (
        ("nonfinite", nonfinite_at_dropped_positions),
        ("keep_probability", keep_probabilities),
        ("xla_vs_eager", xla_against_eager),
        ("extremes", extremes),
        ("rate_validation", rate_validation),
        ("keras_seeding", keras_seeding),
        ("recompute", recompute_agreement),
    ):
        try:
            facts[name] = probe()
        except Exception as exc:  # a probe that cannot run on this version is itself a fact
            facts[name] = f"probe failed: {type(exc).__name__}: {str(exc)[:120]}"
    return facts
