"""Keras 3 on JAX: Keras's dropout layers wrapped to verify()'s stateful contract, eagerly (a
layer's seed generator is state that jax.jit cannot update).  Keras picks its backend once per
process, when it is first imported: this module sets ``KERAS_BACKEND=jax`` if Keras is not
imported yet, and refuses when Keras already runs on another backend (audit Keras on TensorFlow
and on JAX in two runs)."""

from __future__ import annotations

import os
import sys

from . import Adapter

MODES = ("eager",)
LAYER_CLASSES = (
    "Dropout",
    "AlphaDropout",
    "GaussianDropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
)


def keras_on_jax():
    """keras, on JAX; a RuntimeError naming the backend when Keras already runs on another."""
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "jax"
    import keras

    if keras.backend.backend() != "jax":
        raise RuntimeError(
            f"Keras already runs on {keras.backend.backend()} in this process (it picks its backend "
            "once, at import): run Keras on JAX in its own process (KERAS_BACKEND=jax)"
        )
    return keras


def _dtypes() -> tuple:
    from .jax import _dtypes as jax_dtypes

    return jax_dtypes()


def _keras_layer(keras, cls_name: str, takes_noise_shape: bool):
    def make(seed):
        cache = {}

        def fn(x, rate, noise_shape=None):
            key = (rate, tuple(noise_shape) if noise_shape is not None else None, x.dtype.name, tuple(x.shape))
            if key not in cache:
                kwargs = dict(rate=rate, seed=seed + len(cache), dtype=x.dtype.name)
                if takes_noise_shape:
                    kwargs["noise_shape"] = list(noise_shape) if noise_shape is not None else None
                cache[key] = getattr(keras.layers, cls_name)(**kwargs)
            return cache[key](x, training=True)

        return fn

    return make


def adapters(*, modes=MODES) -> list[Adapter]:
    if "eager" not in modes:
        return []
    keras = keras_on_jax()
    out = [
        Adapter(
            "keras.layers.Dropout (JAX)",
            "eager",
            True,
            _keras_layer(keras, "Dropout", True),
            reference=None,
            backend="jax",
            dtypes=_dtypes(),
        ),
        Adapter(
            "keras.layers.AlphaDropout (JAX)",
            "eager",
            True,
            _keras_layer(keras, "AlphaDropout", True),
            reference=None,
            backend="jax",
            dtypes=_dtypes(),
            kind="alpha",
            keep_dtype="float32",
            notes="dropped positions hold a*alpha'+b",
        ),
        Adapter(
            "keras.layers.GaussianDropout (JAX)",
            "eager",
            True,
            _keras_layer(keras, "GaussianDropout", False),
            reference=None,
            backend="jax",
            dtypes=_dtypes(),
            kind="gaussian",
        ),
    ]
    for dims in (1, 2, 3):
        out.append(
            Adapter(
                f"keras.layers.SpatialDropout{dims}D (JAX)",
                "eager",
                True,
                _keras_layer(keras, f"SpatialDropout{dims}D", False),
                reference=None,
                backend="jax",
                dtypes=_dtypes(),
                shape=(64,) + (2,) * dims + (64,),
                noise_shape=(64,) + (1,) * dims + (64,),
                notes="drops whole channels: one draw per (batch, channel)",
            )
        )
    return out


def layer_factories(dtype: str = "float32") -> list:
    """(name, make_layer(rate, seed)) for verify_layer: Keras's dropout layer classes on JAX."""
    keras = keras_on_jax()

    def factory(cls):
        return lambda rate, seed: cls(rate, seed=seed, dtype=dtype)

    return [(f"keras.layers.{name} (JAX)", factory(getattr(keras.layers, name))) for name in LAYER_CLASSES]
