"""JAX's and Flax's dropout, wrapped to verify()'s contracts: the stateless ``fn(x, rate, key,
noise_shape=None)`` for ``jax.random.bernoulli`` (the reference stream) and ``flax.linen.Dropout``
(its ``broadcast_dims`` from the noise shape), eagerly and under ``jax.jit``; the stateful
``fn(x, rate, noise_shape=None)`` for ``flax.nnx.Dropout`` (a module with its own RNG stream).
Keras 3 on JAX is its own framework here: ``keras_jax``."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from . import Adapter

MODES = ("eager", "jit")


def _broadcast_dims(x, noise_shape):
    return (
        ()
        if noise_shape is None
        else tuple(i for i, (d, s) in enumerate(zip(noise_shape, x.shape, strict=True)) if d == 1 and s != 1)
    )


def bernoulli_dropout(x, rate, key, noise_shape=None):
    """What Flax and Keras on JAX compute: bernoulli(key, 1 - rate), then x / (1 - rate)."""
    keep = jax.random.bernoulli(key, 1.0 - rate, tuple(noise_shape) if noise_shape else x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def linen_dropout(x, rate, key, noise_shape=None):
    from flax import linen

    layer = linen.Dropout(rate, broadcast_dims=_broadcast_dims(x, noise_shape), deterministic=False)
    return layer.apply({}, x, rngs={"dropout": key})


def _stateless(body, mode):
    def make(seed):
        fn = jax.jit(body, static_argnums=(1,), static_argnames=("noise_shape",)) if mode == "jit" else body

        def named(x, rate, key, noise_shape=None):
            return fn(x, rate, key, noise_shape=noise_shape)

        return named

    return make


def _nnx(seed_offset=0):
    def make(seed):
        from flax import nnx

        modules = {}

        def fn(x, rate, noise_shape=None):
            key = (rate, _broadcast_dims(x, noise_shape))
            if key not in modules:
                modules[key] = nnx.Dropout(rate, broadcast_dims=key[1], rngs=nnx.Rngs(dropout=seed + len(modules)))
            return modules[key](x)

        return fn

    return make


def _dtypes() -> tuple:
    """float64 only with jax_enable_x64 (otherwise JAX makes a float64 input float32)."""
    return ("float16", "bfloat16", "float32") + (("float64",) if jax.config.jax_enable_x64 else ())


def adapters(*, modes=MODES) -> list[Adapter]:
    """Flax's entry points only where flax is installed (TensorFlow 2.12 brings jax without it)."""
    import importlib.util

    flax = importlib.util.find_spec("flax") is not None
    out = []
    for mode in modes:
        out.append(
            Adapter(
                "jax.random.bernoulli dropout",
                mode,
                False,
                _stateless(bernoulli_dropout, mode),
                reference="jax",
                backend="jax",
                dtypes=_dtypes(),
                notes="bernoulli(key, 1 - rate) then x / (1 - rate), as Flax computes it",
            )
        )
        if not flax:
            continue
        out.append(
            Adapter(
                "flax.linen.Dropout",
                mode,
                False,
                _stateless(linen_dropout, mode),
                reference=None,
                backend="jax",
                dtypes=_dtypes(),
                notes="its rng is folded from the module path: no reference stream",
            )
        )
        if mode == "eager":
            out.append(
                Adapter(
                    "flax.nnx.Dropout",
                    mode,
                    True,
                    _nnx(),
                    reference=None,
                    backend="jax",
                    dtypes=_dtypes(),
                    notes="a module with its own RNG stream: stateful contract",
                )
            )
    return out


def layer_factories(dtype: str = "float32") -> list:
    """(name, make_layer(rate, seed)) for verify_layer: flax.nnx.Dropout (its RNG stream seeded)."""
    import importlib.util

    if importlib.util.find_spec("flax") is None:
        return []

    def make(rate, seed):
        from flax import nnx

        return nnx.Dropout(rate, rngs=nnx.Rngs(dropout=0 if seed is None else seed))

    return [("flax.nnx.Dropout", make)]
