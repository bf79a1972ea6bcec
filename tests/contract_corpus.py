"""A corpus of CORRECT dropout implementations written the many ways people write them, and a
small corpus of BROKEN ones (GitHub issue 28, "Correct means the contract").

Correct means the contract, not one framework's formula: each unit kept independently with
probability 1 - rate (or 1 - the rate rounded to the dtype the user compares in), masks
independent across calls and seeds, kept values x / (1 - rate) up to the roundings of the
arithmetic the user wrote (a scale or divisor computed in the input dtype or wider, one multiply
or divide, a final cast), the backward pass the same mask and scale.  The entries are written as a
careful user would write them for ``verify`` (stateless ``fn(x, rate, seed, noise_shape=None)``
with the backend's seed form, stateful ``fn(x, rate, noise_shape=None)``, or a layer factory
``make_layer(rate, seed)`` for ``verify_layer``), not to suit the battery: a hand-written
function that draws its own uniform is verified with ``reference=None``, as the README says.

Frameworks are imported inside the builders: this module imports with numpy only.

    CORRECT: list[Entry]   every entry must pass at every rate in RATES and every dtype it lists
    BROKEN: list[Entry]    every entry must fail at every rate it lists (``reason`` says why)

``entry.verify(rate=, dtype=, seed=, **verify_kwargs)`` runs ``ds.verify`` / ``ds.verify_layer``
with the entry's own keyword arguments.  ``entry.available()`` says whether its framework imports.
Used by tests/test_contract.py and benchmarks/contract_corpus.py.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable

import numpy as np

RATES = (0.1, 0.2, 0.3, 0.5, 0.6, 0.65, 0.8, 0.9)
ALL_DTYPES = ("float32", "float16", "bfloat16", "float64")
JAX_DTYPES = ("float32", "float16", "bfloat16")  # float64 needs jax_enable_x64, a process-wide switch

FRAMEWORKS = ("tensorflow", "numpy", "jax", "torch")
_IMPORTS = {"tensorflow": ("tensorflow",), "numpy": (), "jax": ("jax",), "torch": ("torch",)}


@dataclasses.dataclass(frozen=True)
class Entry:
    """One implementation.

    name: unique, framework first.  framework: tensorflow | numpy | jax | torch.
    call: "stateless" (fn(x, rate, seed, noise_shape=None)), "stateful" (fn(x, rate,
    noise_shape=None)) or "layer" (make_layer(rate, seed) for verify_layer).
    build(dtype, seed): the fn or make_layer (a fresh one per run: stateful ones own a generator).
    kwargs: verify() keyword arguments it needs (backend, reference, stateful); none for layers.
    dtypes: the dtypes it supports.  code: the line the user wrote.
    Broken entries only: reason (the defect, one line), rates (where it is broken), miss
    ("exact": an exact check sees it in every call; "design": a keep probability off by at least
    the designed discrepancy, missed with probability <= false_pass_rate).
    """

    name: str
    framework: str
    call: str
    build: Callable
    dtypes: tuple
    code: str
    kwargs: dict = dataclasses.field(default_factory=dict)
    extra_imports: tuple = ()
    reason: str = ""
    rates: tuple = RATES
    miss: str = "exact"

    def available(self) -> bool:
        mods = _IMPORTS[self.framework] + self.extra_imports
        return all(importlib.util.find_spec(m) is not None for m in mods)

    def verify(self, *, rate: float, dtype: str, seed: int = 0, **verify_kwargs):
        """Run verify() (or verify_layer()) on this entry; returns the Report."""
        import dropout_stats as ds

        obj = self.build(dtype, seed)
        if self.call == "layer":
            return ds.verify_layer(obj, rate=rate, dtype=dtype, seed=seed, **verify_kwargs)
        return ds.verify(obj, rate=rate, dtype=dtype, seed=seed, **self.kwargs, **verify_kwargs)

    def snippet(self, *, rate: float, dtype: str, seed: int = 0) -> str:
        """A Python line that reproduces one run (with this module on sys.path)."""
        return (
            f"import contract_corpus as cc; r = cc.by_name({self.name!r}).verify(rate={rate!r}, "
            f"dtype={dtype!r}, seed={seed}); print(r)"
        )


def _stateless(**kw):
    return {"stateful": False, **kw}


def _stateful(**kw):
    return {"stateful": True, **kw}


# =================================================================================================
# TensorFlow
# =================================================================================================
def _tf():
    import tensorflow as tf

    return tf


def _tf_shape(tf, x, noise_shape):
    return tf.shape(x) if noise_shape is None else list(noise_shape)


def tf_stateless_dropout(dtype, seed):
    tf = _tf()

    def fn(x, rate, seed, noise_shape=None):
        return tf.nn.experimental.stateless_dropout(x, rate, seed=seed, noise_shape=noise_shape)

    return fn


def tf_general_dropout(dtype, seed):
    tf = _tf()

    def fn(x, rate, seed, noise_shape=None):
        def sampler(shape, dtype):
            return tf.random.stateless_uniform(shape, seed=seed, dtype=dtype)

        return tf.nn.experimental.general_dropout(x, rate, uniform_sampler=sampler, noise_shape=noise_shape)

    return fn


def tf_nn_dropout(dtype, seed):
    tf = _tf()
    tf.random.set_seed(seed)

    def fn(x, rate, noise_shape=None):
        return tf.nn.dropout(x, rate, noise_shape=noise_shape)

    return fn


def tf_textbook_where(dtype, seed):
    """The textbook inverted dropout: a float32 uniform, keep where U >= rate, x / (1 - rate)."""
    tf = _tf()

    def fn(x, rate, seed, noise_shape=None):
        keep = tf.random.stateless_uniform(_tf_shape(tf, x, noise_shape), seed=seed) >= rate
        return tf.where(keep, x / (1 - rate), tf.zeros_like(x))

    return fn


def tf_textbook_where_dtype_uniform(dtype, seed):
    """The same, the uniform drawn in x's dtype (as tf.nn.dropout draws it)."""
    tf = _tf()

    def fn(x, rate, seed, noise_shape=None):
        u = tf.random.stateless_uniform(_tf_shape(tf, x, noise_shape), seed=seed, dtype=x.dtype)
        return tf.where(u >= rate, x / (1 - rate), tf.zeros_like(x))

    return fn


def tf_mask_div_keep(dtype, seed):
    """x * mask / keep_prob, the mask cast to x's dtype."""
    tf = _tf()

    def fn(x, rate, seed, noise_shape=None):
        keep_prob = 1 - rate
        mask = tf.cast(tf.random.stateless_uniform(_tf_shape(tf, x, noise_shape), seed=seed) >= rate, x.dtype)
        return x * mask / keep_prob

    return fn


def tf_mask_times_inverse(dtype, seed):
    """x * cast(mask) * (1 / (1 - rate)): the scale computed in Python (float64), rounded to x's dtype."""
    tf = _tf()

    def fn(x, rate, seed, noise_shape=None):
        mask = tf.random.stateless_uniform(_tf_shape(tf, x, noise_shape), seed=seed) >= rate
        return x * tf.cast(mask, x.dtype) * (1 / (1 - rate))

    return fn


def tf_rate_tensor(dtype, seed):
    """The rate converted to a tensor of x's dtype first, then x / (1 - rate) in that dtype."""
    tf = _tf()

    def fn(x, rate, seed, noise_shape=None):
        rate = tf.convert_to_tensor(rate, dtype=x.dtype)
        u = tf.random.stateless_uniform(_tf_shape(tf, x, noise_shape), seed=seed, dtype=x.dtype)
        return tf.where(u >= rate, x / (1 - rate), tf.zeros_like(x))

    return fn


def tf_upcast_float32(dtype, seed):
    """Mixed-precision style: 16-bit inputs computed in float32 and cast back once."""
    tf = _tf()

    def fn(x, rate, seed, noise_shape=None):
        compute = tf.float32 if x.dtype in (tf.float16, tf.bfloat16) else x.dtype
        keep = tf.random.stateless_uniform(_tf_shape(tf, x, noise_shape), seed=seed) >= rate
        xc = tf.cast(x, compute)
        return tf.cast(tf.where(keep, xc / (1 - rate), tf.zeros_like(xc)), x.dtype)

    return fn


def tf_function_textbook(dtype, seed):
    """The textbook version inside tf.function (Grappler may rewrite x / c as x * (1 / c))."""
    tf = _tf()

    @tf.function
    def fn(x, rate, seed, noise_shape=None):
        keep = tf.random.stateless_uniform(_tf_shape(tf, x, noise_shape), seed=seed) >= rate
        return tf.where(keep, x / (1 - rate), tf.zeros_like(x))

    return fn


def tf_generator_stateful(dtype, seed):
    """A tf.random.Generator of its own, advanced on every call."""
    tf = _tf()
    gen = tf.random.Generator.from_seed(seed)

    def fn(x, rate, noise_shape=None):
        keep = gen.uniform(_tf_shape(tf, x, noise_shape)) >= rate
        return tf.where(keep, x / (1 - rate), tf.zeros_like(x))

    return fn


def tf_keras_dropout_layer(dtype, seed):
    import keras

    def make_layer(rate, seed):
        return keras.layers.Dropout(rate, seed=seed, dtype=dtype)

    return make_layer


# =================================================================================================
# numpy (ml_dtypes for bfloat16)
# =================================================================================================
def _np_shape(x, noise_shape):
    return x.shape if noise_shape is None else tuple(noise_shape)


def np_random_ge(dtype, seed):
    """keep where Generator.random() >= rate (float64 uniform), np.where(keep, x / (1 - rate), 0)."""

    def fn(x, rate, seed, noise_shape=None):
        rng = np.random.default_rng(seed)
        keep = rng.random(_np_shape(x, noise_shape)) >= rate
        return np.where(keep, x / (1 - rate), x.dtype.type(0))

    return fn


def np_random_float32_lt_keep(dtype, seed):
    """A float32 uniform, keep where U < 1 - rate, x * mask * scale with the scale in x's dtype."""

    def fn(x, rate, seed, noise_shape=None):
        rng = np.random.default_rng(seed)
        keep = rng.random(_np_shape(x, noise_shape), dtype=np.float32) < 1 - rate
        scale = np.asarray(1 / (1 - rate), dtype=x.dtype)
        return x * keep.astype(x.dtype) * scale

    return fn


def np_binomial(dtype, seed):
    """The mask from rng.binomial(1, 1 - rate, shape) (a correct Bernoulli, masks at different
    rates do not nest), cast to x's dtype, x * mask / (1 - rate)."""

    def fn(x, rate, seed, noise_shape=None):
        rng = np.random.default_rng(seed)
        mask = rng.binomial(1, 1 - rate, size=_np_shape(x, noise_shape)).astype(x.dtype)
        return x * mask / (1 - rate)

    return fn


def np_float64_then_cast(dtype, seed):
    """All arithmetic in float64 (x * mask / (1 - rate)), one cast back to x's dtype at the end."""

    def fn(x, rate, seed, noise_shape=None):
        rng = np.random.default_rng(seed)
        keep = rng.random(_np_shape(x, noise_shape)) >= rate
        y = x.astype(np.float64) * keep / (1 - rate)
        return y.astype(x.dtype)

    return fn


def np_float64_scale_once(dtype, seed):
    """x * (1 / (1 - rate)) in float64, rounded once to x's dtype (issue 28's bfloat16 case)."""

    def fn(x, rate, seed, noise_shape=None):
        rng = np.random.default_rng(seed)
        keep = rng.random(_np_shape(x, noise_shape)) >= rate
        y = np.where(keep, x.astype(np.float64) * (1 / (1 - rate)), 0.0)
        return y.astype(x.dtype)

    return fn


def np_float32_compute(dtype, seed):
    """16-bit inputs (ml_dtypes bfloat16, float16) computed in float32 and cast back; wider ones
    in their own dtype."""

    def fn(x, rate, seed, noise_shape=None):
        rng = np.random.default_rng(seed)
        keep = rng.random(_np_shape(x, noise_shape)) >= rate
        compute = np.float32 if x.dtype.itemsize < 4 else x.dtype.type
        xc = x.astype(compute)
        return (xc * keep / compute(1 - rate)).astype(x.dtype)

    return fn


class _OutBuffer:
    """Returns the SAME preallocated buffer on every call: np.multiply(x, scale_mask, out=buf)."""

    def __init__(self):
        self.buffers = {}

    def __call__(self, x, rate, seed, noise_shape=None):
        rng = np.random.default_rng(seed)
        keep = rng.random(_np_shape(x, noise_shape)) >= rate
        scale = np.where(keep, np.asarray(1 / (1 - rate), dtype=x.dtype), np.zeros((), dtype=x.dtype))
        key = (x.shape, x.dtype.str, x.dtype.name)
        buf = self.buffers.get(key)
        if buf is None:
            buf = self.buffers[key] = np.empty_like(x)
        np.multiply(x, scale, out=buf)
        return buf


def np_out_buffer(dtype, seed):
    return _OutBuffer()


def np_stateful_generator(dtype, seed):
    """A Generator of its own, advanced on every call."""
    rng = np.random.default_rng(seed)

    def fn(x, rate, noise_shape=None):
        keep = rng.random(_np_shape(x, noise_shape)) >= rate
        return np.where(keep, x / (1 - rate), x.dtype.type(0))

    return fn


# =================================================================================================
# JAX / Flax
# =================================================================================================
def _jax():
    import jax
    import jax.numpy as jnp

    return jax, jnp


def _jax_shape(x, noise_shape):
    return x.shape if noise_shape is None else tuple(noise_shape)


def jax_bernoulli_where(dtype, seed):
    """jax.random.bernoulli(key, 1 - rate), jnp.where(keep, x / keep_prob, 0)."""
    jax, jnp = _jax()

    def fn(x, rate, key, noise_shape=None):
        keep_prob = 1.0 - rate
        keep = jax.random.bernoulli(key, keep_prob, _jax_shape(x, noise_shape))
        return jnp.where(keep, x / keep_prob, 0)

    return fn


def jax_bernoulli_multiply(dtype, seed):
    """x * mask.astype(x.dtype) / keep_prob."""
    jax, jnp = _jax()

    def fn(x, rate, key, noise_shape=None):
        keep_prob = 1.0 - rate
        mask = jax.random.bernoulli(key, keep_prob, _jax_shape(x, noise_shape))
        return x * mask.astype(x.dtype) / keep_prob

    return fn


def jax_uniform_ge(dtype, seed):
    """jax.random.uniform(key, shape) >= rate (a float32 uniform), jnp.where(keep, x / (1 - rate), 0)."""
    jax, jnp = _jax()

    def fn(x, rate, key, noise_shape=None):
        keep = jax.random.uniform(key, _jax_shape(x, noise_shape)) >= rate
        return jnp.where(keep, x / (1 - rate), jnp.zeros_like(x))

    return fn


def jax_jit(dtype, seed):
    """The bernoulli version under jax.jit (rate and noise_shape static)."""
    jax, jnp = _jax()

    def body(x, rate, key, noise_shape=None):
        keep_prob = 1.0 - rate
        keep = jax.random.bernoulli(key, keep_prob, _jax_shape(x, noise_shape))
        return jnp.where(keep, x / keep_prob, 0)

    return jax.jit(body, static_argnames=("rate", "noise_shape"))


def jax_stateful_split(dtype, seed):
    """A key of its own, split on every call."""
    jax, jnp = _jax()
    state = {"key": jax.random.key(seed)}

    def fn(x, rate, noise_shape=None):
        state["key"], sub = jax.random.split(state["key"])
        keep = jax.random.bernoulli(sub, 1.0 - rate, _jax_shape(x, noise_shape))
        return jnp.where(keep, x / (1.0 - rate), 0)

    return fn


def flax_linen_dropout(dtype, seed):
    """flax.linen.Dropout applied functionally with the key as its 'dropout' RNG."""
    import flax.linen as nn

    def fn(x, rate, key, noise_shape=None):
        dims = () if noise_shape is None else tuple(i for i, d in enumerate(noise_shape) if d == 1 and x.shape[i] != 1)
        layer = nn.Dropout(rate=rate, broadcast_dims=dims, deterministic=False)
        return layer.apply({}, x, rngs={"dropout": key})

    return fn


def flax_nnx_dropout_layer(dtype, seed):
    from flax import nnx

    def make_layer(rate, seed):
        return nnx.Dropout(rate, rngs=nnx.Rngs(dropout=0 if seed is None else seed))

    return make_layer


# =================================================================================================
# PyTorch
# =================================================================================================
def _torch():
    import torch

    return torch


def _torch_shape(x, noise_shape):
    return tuple(x.shape) if noise_shape is None else tuple(noise_shape)


_TORCH_CLASSES: dict = {}


def _torch_classes() -> dict:
    """Module-level nn.Module classes (defined on first use, named in this module so that
    torch.save can pickle them)."""
    if _TORCH_CLASSES:
        return _TORCH_CLASSES
    torch = _torch()

    class HandDropout(torch.nn.Module):
        """The hand-written module: keep = (rand_like(x) >= p).to(x.dtype); x * keep / (1 - p)."""

        def __init__(self, p=0.5):
            super().__init__()
            self.p = p

        def forward(self, x):
            if not self.training or self.p == 0:
                return x
            keep = (torch.rand_like(x) >= self.p).to(x.dtype)
            return x * keep / (1 - self.p)

    class HandDropoutScaleByKeep(torch.nn.Module):
        """BROKEN: x * keep * (1 - p) (multiplies by the keep probability instead of dividing)."""

        def __init__(self, p=0.5):
            super().__init__()
            self.p = p

        def forward(self, x):
            if not self.training:
                return x
            keep = (torch.rand_like(x) >= self.p).to(x.dtype)
            return x * keep * (1 - self.p)

    class _UnscaledBackward(torch.autograd.Function):
        """BROKEN: the forward is x * mask / (1 - p); the backward masks but forgets the scale."""

        @staticmethod
        def forward(ctx, x, mask, p):
            ctx.save_for_backward(mask)
            return x * mask / (1 - p)

        @staticmethod
        def backward(ctx, g):
            (mask,) = ctx.saved_tensors
            return g * mask, None, None

    for name, cls in (
        ("HandDropout", HandDropout),
        ("HandDropoutScaleByKeep", HandDropoutScaleByKeep),
        ("UnscaledBackward", _UnscaledBackward),
    ):
        cls.__module__, cls.__qualname__, cls.__name__ = __name__, name, name
        globals()[name] = cls
        _TORCH_CLASSES[name] = cls
    return _TORCH_CLASSES


def torch_F_dropout(dtype, seed):
    torch = _torch()

    def fn(x, rate, noise_shape=None):
        return torch.nn.functional.dropout(x, rate, training=True)

    return fn


def torch_nn_dropout_layer(dtype, seed):
    torch = _torch()

    def make_layer(rate, seed):
        return torch.nn.Dropout(rate)

    return make_layer


def torch_hand_module_layer(dtype, seed):
    cls = _torch_classes()["HandDropout"]

    def make_layer(rate, seed):
        return cls(rate)

    return make_layer


def torch_rand_like_stateful(dtype, seed):
    """A function on torch's global generator: x * (rand_like(x) >= rate) / (1 - rate)."""
    torch = _torch()

    def fn(x, rate, noise_shape=None):
        shape = _torch_shape(x, noise_shape)
        u = torch.rand(shape, dtype=x.dtype, device=x.device)
        return x * (u >= rate) / (1 - rate)

    return fn


def torch_bernoulli_generator(dtype, seed):
    """Stateless with a torch.Generator: torch.bernoulli of float32 probabilities 1 - rate,
    x * mask.to(x.dtype) / (1 - rate)."""
    torch = _torch()

    def fn(x, rate, generator, noise_shape=None):
        probs = torch.full(_torch_shape(x, noise_shape), 1 - rate)
        mask = torch.bernoulli(probs, generator=generator).to(x.dtype)
        return x * mask / (1 - rate)

    return fn


def torch_bernoulli_inplace_generator(dtype, seed):
    """F.dropout's own mechanism by hand: empty(shape, dtype).bernoulli_(1 - rate, generator=g),
    x * mask / (1 - rate)."""
    torch = _torch()

    def fn(x, rate, generator, noise_shape=None):
        mask = torch.empty(_torch_shape(x, noise_shape), dtype=x.dtype).bernoulli_(1 - rate, generator=generator)
        return x * mask / (1 - rate)

    return fn


def torch_rand_generator_where(dtype, seed):
    """Stateless with a torch.Generator: torch.rand(shape, generator=g) >= rate (float32),
    torch.where(keep, x / (1 - rate), 0)."""
    torch = _torch()

    def fn(x, rate, generator, noise_shape=None):
        keep = torch.rand(_torch_shape(x, noise_shape), generator=generator) >= rate
        return torch.where(keep, x / (1 - rate), torch.zeros_like(x))

    return fn


# =================================================================================================
# The correct corpus
# =================================================================================================
NO_REF = {"reference": None}

CORRECT: list[Entry] = [
    # -- TensorFlow --------------------------------------------------------------------------
    Entry(
        "tf.stateless_dropout",
        "tensorflow",
        "stateless",
        tf_stateless_dropout,
        ALL_DTYPES,
        "tf.nn.experimental.stateless_dropout(x, rate, seed=seed, noise_shape=noise_shape)",
        _stateless(backend="tensorflow"),
    ),
    Entry(
        "tf.general_dropout",
        "tensorflow",
        "stateless",
        tf_general_dropout,
        ALL_DTYPES,
        "tf.nn.experimental.general_dropout(x, rate, uniform_sampler=stateless_uniform(shape, seed, dtype))",
        _stateless(backend="tensorflow"),
    ),
    Entry(
        "tf.nn.dropout",
        "tensorflow",
        "stateful",
        tf_nn_dropout,
        ALL_DTYPES,
        "tf.random.set_seed(seed); tf.nn.dropout(x, rate, noise_shape=noise_shape)",
        _stateful(backend="tensorflow"),
    ),
    Entry(
        "tf.textbook_where",
        "tensorflow",
        "stateless",
        tf_textbook_where,
        ALL_DTYPES,
        "tf.where(tf.random.stateless_uniform(shape, seed) >= rate, x / (1 - rate), tf.zeros_like(x))",
        _stateless(backend="tensorflow", **NO_REF),
    ),
    Entry(
        "tf.textbook_where_dtype_uniform",
        "tensorflow",
        "stateless",
        tf_textbook_where_dtype_uniform,
        ALL_DTYPES,
        "tf.where(tf.random.stateless_uniform(shape, seed, dtype=x.dtype) >= rate, x / (1 - rate), 0)",
        _stateless(backend="tensorflow", **NO_REF),
    ),
    Entry(
        "tf.mask_div_keep",
        "tensorflow",
        "stateless",
        tf_mask_div_keep,
        ALL_DTYPES,
        "x * tf.cast(stateless_uniform(shape, seed) >= rate, x.dtype) / keep_prob",
        _stateless(backend="tensorflow", **NO_REF),
    ),
    Entry(
        "tf.mask_times_inverse",
        "tensorflow",
        "stateless",
        tf_mask_times_inverse,
        ALL_DTYPES,
        "x * tf.cast(mask, x.dtype) * (1 / (1 - rate))",
        _stateless(backend="tensorflow", **NO_REF),
    ),
    Entry(
        "tf.rate_tensor",
        "tensorflow",
        "stateless",
        tf_rate_tensor,
        ALL_DTYPES,
        "rate = tf.convert_to_tensor(rate, x.dtype); tf.where(U(x.dtype) >= rate, x / (1 - rate), 0)",
        _stateless(backend="tensorflow", **NO_REF),
    ),
    Entry(
        "tf.upcast_float32",
        "tensorflow",
        "stateless",
        tf_upcast_float32,
        ALL_DTYPES,
        "tf.cast(tf.where(keep, tf.cast(x, tf.float32) / (1 - rate), 0), x.dtype)  (16-bit x)",
        _stateless(backend="tensorflow", **NO_REF),
    ),
    Entry(
        "tf.function_textbook",
        "tensorflow",
        "stateless",
        tf_function_textbook,
        ALL_DTYPES,
        "@tf.function around tf.where(stateless_uniform(shape, seed) >= rate, x / (1 - rate), 0)",
        _stateless(backend="tensorflow", **NO_REF),
    ),
    Entry(
        "tf.generator_stateful",
        "tensorflow",
        "stateful",
        tf_generator_stateful,
        ALL_DTYPES,
        "g = tf.random.Generator.from_seed(seed); tf.where(g.uniform(shape) >= rate, x / (1 - rate), 0)",
        _stateful(backend="tensorflow", **NO_REF),
    ),
    Entry(
        "tf.keras.layers.Dropout",
        "tensorflow",
        "layer",
        tf_keras_dropout_layer,
        ALL_DTYPES,
        "verify_layer(lambda rate, seed: keras.layers.Dropout(rate, seed=seed, dtype=dtype))",
        extra_imports=("keras",),
    ),
    # -- numpy -------------------------------------------------------------------------------
    Entry(
        "np.random_ge",
        "numpy",
        "stateless",
        np_random_ge,
        ALL_DTYPES,
        "rng = default_rng(seed); np.where(rng.random(shape) >= rate, x / (1 - rate), 0)",
        _stateless(backend="numpy", **NO_REF),
    ),
    Entry(
        "np.float32_uniform_lt_keep",
        "numpy",
        "stateless",
        np_random_float32_lt_keep,
        ALL_DTYPES,
        "keep = rng.random(shape, dtype=np.float32) < 1 - rate; x * keep * np.asarray(1/(1-rate), x.dtype)",
        _stateless(backend="numpy", **NO_REF),
    ),
    Entry(
        "np.binomial",
        "numpy",
        "stateless",
        np_binomial,
        ALL_DTYPES,
        "mask = rng.binomial(1, 1 - rate, shape).astype(x.dtype); x * mask / (1 - rate)",
        _stateless(backend="numpy", **NO_REF),
    ),
    Entry(
        "np.float64_then_cast",
        "numpy",
        "stateless",
        np_float64_then_cast,
        ALL_DTYPES,
        "(x.astype(np.float64) * keep / (1 - rate)).astype(x.dtype)",
        _stateless(backend="numpy", **NO_REF),
    ),
    Entry(
        "np.float64_scale_once",
        "numpy",
        "stateless",
        np_float64_scale_once,
        ALL_DTYPES,
        "np.where(keep, x.astype(np.float64) * (1 / (1 - rate)), 0).astype(x.dtype)",
        _stateless(backend="numpy", **NO_REF),
    ),
    Entry(
        "np.float32_compute",
        "numpy",
        "stateless",
        np_float32_compute,
        ALL_DTYPES,
        "(x.astype(np.float32) * keep / np.float32(1 - rate)).astype(x.dtype)  (16-bit x, ml_dtypes bfloat16)",
        _stateless(backend="numpy", **NO_REF),
    ),
    Entry(
        "np.out_buffer",
        "numpy",
        "stateless",
        np_out_buffer,
        ALL_DTYPES,
        "np.multiply(x, np.where(keep, fl(1/(1-rate)), 0), out=buf); return buf  (the same buffer every call)",
        _stateless(backend="numpy", **NO_REF),
    ),
    Entry(
        "np.stateful_generator",
        "numpy",
        "stateful",
        np_stateful_generator,
        ALL_DTYPES,
        "rng = default_rng(seed) once; np.where(rng.random(shape) >= rate, x / (1 - rate), 0) per call",
        _stateful(backend="numpy", **NO_REF),
    ),
    # -- JAX / Flax --------------------------------------------------------------------------
    Entry(
        "jax.bernoulli_where",
        "jax",
        "stateless",
        jax_bernoulli_where,
        JAX_DTYPES,
        "keep = jax.random.bernoulli(key, 1 - rate, shape); jnp.where(keep, x / keep_prob, 0)",
        _stateless(backend="jax"),
    ),
    Entry(
        "jax.bernoulli_multiply",
        "jax",
        "stateless",
        jax_bernoulli_multiply,
        JAX_DTYPES,
        "x * jax.random.bernoulli(key, keep_prob, shape).astype(x.dtype) / keep_prob",
        _stateless(backend="jax"),
    ),
    Entry(
        "jax.uniform_ge",
        "jax",
        "stateless",
        jax_uniform_ge,
        JAX_DTYPES,
        "jnp.where(jax.random.uniform(key, shape) >= rate, x / (1 - rate), 0)",
        _stateless(backend="jax", **NO_REF),
    ),
    Entry(
        "jax.jit_bernoulli",
        "jax",
        "stateless",
        jax_jit,
        JAX_DTYPES,
        "jax.jit(bernoulli where, static_argnames=('rate', 'noise_shape'))",
        _stateless(backend="jax"),
    ),
    Entry(
        "jax.stateful_split",
        "jax",
        "stateful",
        jax_stateful_split,
        JAX_DTYPES,
        "key, sub = jax.random.split(key) per call; jnp.where(bernoulli(sub, 1 - rate), x / (1 - rate), 0)",
        _stateful(backend="jax", **NO_REF),
    ),
    Entry(
        "flax.linen.Dropout",
        "jax",
        "stateless",
        flax_linen_dropout,
        JAX_DTYPES,
        "nn.Dropout(rate, broadcast_dims=..., deterministic=False).apply({}, x, rngs={'dropout': key})",
        _stateless(backend="jax", **NO_REF),
        extra_imports=("flax",),
    ),
    Entry(
        "flax.nnx.Dropout",
        "jax",
        "layer",
        flax_nnx_dropout_layer,
        JAX_DTYPES,
        "verify_layer(lambda rate, seed: nnx.Dropout(rate, rngs=nnx.Rngs(dropout=seed)))",
        extra_imports=("flax",),
    ),
    # -- PyTorch -----------------------------------------------------------------------------
    Entry(
        "torch.F.dropout",
        "torch",
        "stateful",
        torch_F_dropout,
        ALL_DTYPES,
        "torch.nn.functional.dropout(x, rate, training=True)",
        _stateful(backend="torch"),
    ),
    Entry(
        "torch.nn.Dropout",
        "torch",
        "layer",
        torch_nn_dropout_layer,
        ALL_DTYPES,
        "verify_layer(lambda rate, seed: torch.nn.Dropout(rate))",
    ),
    Entry(
        "torch.hand_module",
        "torch",
        "layer",
        torch_hand_module_layer,
        ALL_DTYPES,
        "class HandDropout(nn.Module): keep = (torch.rand_like(x) >= p).to(x.dtype); x * keep / (1 - p)",
    ),
    Entry(
        "torch.rand_stateful",
        "torch",
        "stateful",
        torch_rand_like_stateful,
        ALL_DTYPES,
        "x * (torch.rand(shape, dtype=x.dtype) >= rate) / (1 - rate)  (global generator)",
        _stateful(backend="torch", **NO_REF),
    ),
    Entry(
        "torch.bernoulli_generator",
        "torch",
        "stateless",
        torch_bernoulli_generator,
        ALL_DTYPES,
        "mask = torch.bernoulli(torch.full(shape, 1 - rate), generator=g).to(x.dtype); x * mask / (1 - rate)",
        _stateless(backend="torch", **NO_REF),
    ),
    Entry(
        "torch.bernoulli_inplace_generator",
        "torch",
        "stateless",
        torch_bernoulli_inplace_generator,
        ALL_DTYPES,
        "mask = torch.empty(shape, dtype=x.dtype).bernoulli_(1 - rate, generator=g); x * mask / (1 - rate)",
        _stateless(backend="torch"),
    ),
    Entry(
        "torch.rand_generator_where",
        "torch",
        "stateless",
        torch_rand_generator_where,
        ALL_DTYPES,
        "torch.where(torch.rand(shape, generator=g) >= rate, x / (1 - rate), 0)",
        _stateless(backend="torch", **NO_REF),
    ),
]


# =================================================================================================
# The broken corpus: each fails the scale or keep contract at every rate it lists
# =================================================================================================
def _np_broken(keep_fn, value_fn):
    """A numpy stateless fn: keep = keep_fn(U, rate) for a float64 uniform U, kept values
    value_fn(x, rate) (in whatever precision it computes, cast to x's dtype)."""

    def build(dtype, seed):
        def fn(x, rate, seed, noise_shape=None):
            rng = np.random.default_rng(seed)
            keep = keep_fn(rng.random(_np_shape(x, noise_shape)), rate)
            return np.where(keep, np.asarray(value_fn(x, rate)).astype(x.dtype), x.dtype.type(0))

        return fn

    return build


def _ge(u, rate):
    return u >= rate


def _round(value, dtype):
    if dtype == "bfloat16":
        import ml_dtypes

        return float(np.asarray(value, dtype=ml_dtypes.bfloat16).astype(np.float64))
    return float(np.asarray(value, dtype=dtype))


def _plus_ulps(y, n):
    """y moved n ULP away from zero (the bits of a sign-magnitude float plus n)."""
    y = np.asarray(y)
    uint = {2: np.uint16, 4: np.uint32, 8: np.uint64}[y.dtype.itemsize]
    return (y.view(uint) + uint(n)).view(y.dtype)


def tf_no_scale(dtype, seed):
    tf = _tf()

    def fn(x, rate, seed, noise_shape=None):
        mask = tf.random.stateless_uniform(_tf_shape(tf, x, noise_shape), seed=seed) >= rate
        return x * tf.cast(mask, x.dtype)

    return fn


def tf_scale_in_bfloat16(dtype, seed):
    tf = _tf()

    def fn(x, rate, seed, noise_shape=None):
        mask = tf.random.stateless_uniform(_tf_shape(tf, x, noise_shape), seed=seed) >= rate
        scale = tf.cast(tf.constant(1 / (1 - rate), tf.bfloat16), x.dtype)
        return x * tf.cast(mask, x.dtype) * scale

    return fn


def tf_backward_unscaled(dtype, seed):
    tf = _tf()

    def fn(x, rate, seed, noise_shape=None):
        mask = tf.cast(tf.random.stateless_uniform(_tf_shape(tf, x, noise_shape), seed=seed) >= rate, x.dtype)

        @tf.custom_gradient
        def drop(t):
            return t * mask / (1 - rate), lambda up: up * mask

        return drop(x)

    return fn


def jax_keep_prob_rate(dtype, seed):
    jax, jnp = _jax()

    def fn(x, rate, key, noise_shape=None):
        keep = jax.random.bernoulli(key, rate, _jax_shape(x, noise_shape))  # rate where 1 - rate belongs
        return jnp.where(keep, x / (1.0 - rate), 0)

    return fn


def jax_scale_in_bfloat16(dtype, seed):
    jax, jnp = _jax()

    def fn(x, rate, key, noise_shape=None):
        keep = jax.random.bernoulli(key, 1.0 - rate, _jax_shape(x, noise_shape))
        scale = jnp.asarray(1 / (1 - rate), jnp.bfloat16).astype(x.dtype)
        return jnp.where(keep, x * scale, 0)

    return fn


def torch_scale_by_keep_layer(dtype, seed):
    cls = _torch_classes()["HandDropoutScaleByKeep"]
    return lambda rate, seed: cls(rate)


def torch_backward_unscaled(dtype, seed):
    torch = _torch()
    fn_cls = _torch_classes()["UnscaledBackward"]

    def fn(x, rate, generator, noise_shape=None):
        mask = (torch.rand(_torch_shape(x, noise_shape), generator=generator) >= rate).to(x.dtype)
        return fn_cls.apply(x, mask, rate)

    return fn


BROKEN_RATES = (0.2, 0.65)
BROKEN_RATES_NOT_HALF = (0.2, 0.8)  # keep probability rate instead of 1 - rate: right at 0.5
SCALE_NOT_EXACT_RATES = (0.3, 0.65)  # 1/(1 - rate) not exact in 16 bits (1.25, 2.5, 5, 10 are)

BROKEN: list[Entry] = [
    Entry(
        "np.no_scale",
        "numpy",
        "stateless",
        _np_broken(_ge, lambda x, r: x),
        ALL_DTYPES,
        "np.where(keep, x, 0)",
        _stateless(backend="numpy", **NO_REF),
        reason="no scale: kept values are x, not x / (1 - rate)",
        rates=BROKEN_RATES,
    ),
    Entry(
        "np.scale_inverse_rate",
        "numpy",
        "stateless",
        _np_broken(_ge, lambda x, r: x / r),
        ALL_DTYPES,
        "np.where(keep, x / rate, 0)",
        _stateless(backend="numpy", **NO_REF),
        reason="scale 1/rate instead of 1/(1 - rate)",
        rates=(0.2, 0.65),
    ),
    Entry(
        "np.scale_keep_prob",
        "numpy",
        "stateless",
        _np_broken(_ge, lambda x, r: x * (1 - r)),
        ALL_DTYPES,
        "np.where(keep, x * (1 - rate), 0)",
        _stateless(backend="numpy", **NO_REF),
        reason="scale (1 - rate): multiplies by the keep probability instead of dividing",
        rates=BROKEN_RATES,
    ),
    Entry(
        "np.scale_in_bfloat16_for_float32",
        "numpy",
        "stateless",
        _np_broken(_ge, lambda x, r: x * np.float32(_round(1 / (1 - r), "bfloat16"))),
        ("float32",),
        "np.where(keep, x * float32(bfloat16(1 / (1 - rate))), 0)",
        _stateless(backend="numpy", **NO_REF),
        reason="scale rounded to bfloat16 (8 bits) for a float32 input",
        rates=SCALE_NOT_EXACT_RATES,
    ),
    Entry(
        "np.scale_in_float16_for_float32",
        "numpy",
        "stateless",
        _np_broken(_ge, lambda x, r: x * np.float32(_round(1 / (1 - r), "float16"))),
        ("float32",),
        "np.where(keep, x * float32(float16(1 / (1 - rate))), 0)",
        _stateless(backend="numpy", **NO_REF),
        reason="scale rounded to float16 (11 bits) for a float32 input",
        rates=SCALE_NOT_EXACT_RATES,
    ),
    Entry(
        "np.rate_rounded_to_bfloat16_for_float32",
        "numpy",
        "stateless",
        _np_broken(_ge, lambda x, r: x / np.float32(1 - _round(r, "bfloat16"))),
        ("float32",),
        "np.where(keep, x / float32(1 - bfloat16(rate)), 0)",
        _stateless(backend="numpy", **NO_REF),
        reason="the rate rounded to bfloat16 before the scale, for a float32 input",
        rates=(0.2, 0.65),
    ),
    Entry(
        "np.scale_1pct_high",
        "numpy",
        "stateless",
        _np_broken(_ge, lambda x, r: x.astype(np.float64) * (1.01 / (1 - r))),
        ALL_DTYPES,
        "np.where(keep, x * 1.01 / (1 - rate), 0)",
        _stateless(backend="numpy", **NO_REF),
        reason="scale 1% too large",
        rates=BROKEN_RATES,
    ),
    Entry(
        "np.plus_3_ulp",
        "numpy",
        "stateless",
        _np_broken(_ge, lambda x, r: _plus_ulps(x / (1 - r), 3)),
        ALL_DTYPES,
        "np.where(keep, nextafter^3(x / (1 - rate)), 0)",
        _stateless(backend="numpy", **NO_REF),
        reason="kept values perturbed by +3 ULP",
        rates=BROKEN_RATES,
    ),
    Entry(
        "np.rate_1pct_high",
        "numpy",
        "stateless",
        _np_broken(lambda u, r: u >= r * 1.01, lambda x, r: x / (1 - r)),
        ALL_DTYPES,
        "np.where(U >= 1.01 * rate, x / (1 - rate), 0)",
        _stateless(backend="numpy", **NO_REF),
        reason="drops at 1.01 x rate (keep probability off by 1% of min(rate, 1 - rate) or more)",
        rates=BROKEN_RATES,
        miss="design",
    ),
    Entry(
        "np.rate_1pct_high_rescaled",
        "numpy",
        "stateless",
        _np_broken(lambda u, r: u >= r * 1.01, lambda x, r: x / (1 - 1.01 * r)),
        ALL_DTYPES,
        "np.where(U >= 1.01 * rate, x / (1 - 1.01 * rate), 0)",
        _stateless(backend="numpy", **NO_REF),
        reason="the whole implementation at 1.01 x rate (consistent, but not the rate asked for)",
        rates=BROKEN_RATES,
        miss="design",  # the scale is off by less than a 16-bit ULP at rate 0.2: the keep probability carries it
    ),
    Entry(
        "np.keep_prob_is_rate",
        "numpy",
        "stateless",
        _np_broken(lambda u, r: u > 1 - r, lambda x, r: x / (1 - r)),
        ALL_DTYPES,
        "np.where(U > 1 - rate, x / (1 - rate), 0)",
        _stateless(backend="numpy", **NO_REF),
        reason="mask U > 1 - rate: keeps with probability rate instead of 1 - rate",
        rates=BROKEN_RATES_NOT_HALF,
        miss="design",
    ),
    Entry(
        "tf.no_scale",
        "tensorflow",
        "stateless",
        tf_no_scale,
        ALL_DTYPES,
        "x * tf.cast(stateless_uniform(shape, seed) >= rate, x.dtype)",
        _stateless(backend="tensorflow", **NO_REF),
        reason="no scale: kept values are x",
        rates=BROKEN_RATES,
    ),
    Entry(
        "tf.scale_in_bfloat16_for_float32",
        "tensorflow",
        "stateless",
        tf_scale_in_bfloat16,
        ("float32",),
        "x * cast(mask) * tf.cast(tf.constant(1 / (1 - rate), tf.bfloat16), x.dtype)",
        _stateless(backend="tensorflow", **NO_REF),
        reason="scale computed in bfloat16 for a float32 input",
        rates=SCALE_NOT_EXACT_RATES,
    ),
    Entry(
        "tf.backward_unscaled",
        "tensorflow",
        "stateless",
        tf_backward_unscaled,
        ("float32",),
        "@tf.custom_gradient: forward x * mask / (1 - rate), backward up * mask",
        _stateless(backend="tensorflow", **NO_REF),
        reason="the backward pass masks the gradient but does not scale it",
        rates=BROKEN_RATES,
    ),
    Entry(
        "jax.keep_prob_is_rate",
        "jax",
        "stateless",
        jax_keep_prob_rate,
        JAX_DTYPES,
        "jnp.where(jax.random.bernoulli(key, rate), x / (1 - rate), 0)",
        _stateless(backend="jax", **NO_REF),
        reason="bernoulli(key, rate): keeps with probability rate instead of 1 - rate",
        rates=BROKEN_RATES_NOT_HALF,
        miss="design",
    ),
    Entry(
        "jax.scale_in_bfloat16_for_float32",
        "jax",
        "stateless",
        jax_scale_in_bfloat16,
        ("float32",),
        "jnp.where(keep, x * jnp.asarray(1 / (1 - rate), jnp.bfloat16).astype(x.dtype), 0)",
        _stateless(backend="jax", **NO_REF),
        reason="scale computed in bfloat16 for a float32 input",
        rates=SCALE_NOT_EXACT_RATES,
    ),
    Entry(
        "torch.hand_module_scale_by_keep",
        "torch",
        "layer",
        torch_scale_by_keep_layer,
        ALL_DTYPES,
        "class ...(nn.Module): x * keep * (1 - p)",
        reason="scale (1 - p) instead of 1 / (1 - p)",
        rates=BROKEN_RATES,
    ),
    Entry(
        "torch.backward_unscaled",
        "torch",
        "stateless",
        torch_backward_unscaled,
        ("float32", "bfloat16"),
        "autograd.Function: forward x * mask / (1 - p), backward g * mask",
        _stateless(backend="torch", **NO_REF),
        reason="the backward pass masks the gradient but does not scale it",
        rates=BROKEN_RATES,
    ),
]


def by_name(name: str) -> Entry:
    for e in CORRECT + BROKEN:
        if e.name == name:
            return e
    raise KeyError(name)


def _unique_names():
    names = [e.name for e in CORRECT + BROKEN]
    dup = {n for n in names if names.count(n) > 1}
    assert not dup, dup


_unique_names()

__all__ = ["ALL_DTYPES", "BROKEN", "CORRECT", "FRAMEWORKS", "RATES", "Entry", "by_name"]
