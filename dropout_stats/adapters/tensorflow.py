"""Every dropout entry point of the installed TensorFlow and Keras, wrapped to verify()'s contract.

Stateless entry points take ``fn(x, rate, seed, noise_shape=None)``; stateful ones (tf.nn.dropout,
the v1 API, Keras layers) take ``fn(x, rate, noise_shape=None)`` and draw fresh randomness on
every call.  Each runs eagerly, inside ``tf.function``, and with ``jit_compile=True``; under XLA
the stateless mask follows XLA's own uniform stream, so those adapters use the
"tensorflow-xla" reference.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from . import Adapter  # noqa: E402

MODES = ("eager", "function", "jit")


def _wrap(fn, mode: str):
    if mode == "eager":
        return fn
    return tf.function(fn, jit_compile=(mode == "jit"), reduce_retracing=True)


def _named(fn):
    def named(*args, **kwargs):
        return fn(*args, **kwargs)

    return named


# -- stateless --------------------------------------------------------------------------------
def _stateless(mode):
    def make(seed):
        body = _wrap(
            lambda x, rate, seed, noise_shape=None: tf.nn.experimental.stateless_dropout(
                x, rate, seed=seed, noise_shape=noise_shape
            ),
            mode,
        )
        return _named(body)

    return make


def _general(mode):
    def make(seed):
        def body(x, rate, seed, noise_shape=None):
            sampler = lambda shape, dtype: tf.random.stateless_uniform(shape, seed=seed, dtype=dtype)  # noqa: E731
            return tf.nn.experimental.general_dropout(x, rate, uniform_sampler=sampler, noise_shape=noise_shape)

        return _named(_wrap(body, mode))

    return make


# -- stateful ---------------------------------------------------------------------------------
def _nn_dropout(mode, op_seed: bool):
    def make(seed):
        if op_seed:
            body = lambda x, rate, noise_shape=None: tf.nn.dropout(x, rate, noise_shape=noise_shape, seed=seed)  # noqa: E731
        else:
            body = lambda x, rate, noise_shape=None: tf.nn.dropout(x, rate, noise_shape=noise_shape)  # noqa: E731
        return _named(_wrap(body, mode))

    return make


def _v1_dropout(mode):
    def make(seed):
        def body(x, rate, noise_shape=None):
            return tf.compat.v1.nn.dropout(x, keep_prob=1 - rate, noise_shape=noise_shape)

        return _named(_wrap(body, mode))

    return make


def _keras_layer(module, cls_name: str, mode: str, takes_noise_shape: bool):
    def make(seed):
        cache = {}

        def fn(x, rate, noise_shape=None):
            key = (rate, tuple(noise_shape) if noise_shape is not None else None, x.dtype.name, tuple(x.shape))
            if key not in cache:
                cls = getattr(module.layers, cls_name)
                kwargs = dict(rate=rate, seed=seed + len(cache), dtype=x.dtype.name)
                if takes_noise_shape:
                    kwargs["noise_shape"] = list(noise_shape) if noise_shape is not None else None
                layer = cls(**kwargs)
                cache[key] = _wrap(lambda t: layer(t, training=True), mode)
            return cache[key](x)

        return fn

    return make


def adapters(*, modes=MODES) -> list[Adapter]:
    """The adapters available in this installation (Keras 2 via tf_keras only where installed)."""
    out: list[Adapter] = []
    for mode in modes:
        xla = mode == "jit"
        out.append(
            Adapter(
                "tf.nn.experimental.stateless_dropout",
                mode,
                False,
                _stateless(mode),
                reference="tensorflow-xla" if xla else "tensorflow",
            )
        )
        if hasattr(tf.nn.experimental, "general_dropout"):
            out.append(
                Adapter(
                    "tf.nn.experimental.general_dropout",
                    mode,
                    False,
                    _general(mode),
                    reference="tensorflow-xla" if xla else "tensorflow",
                    notes="uniform_sampler = stateless_uniform(shape, seed, dtype)",
                )
            )
        ref = "tensorflow-xla" if xla else "tensorflow"  # for stateful ones: the keep model only
        out.append(
            Adapter(
                "tf.nn.dropout", mode, True, _nn_dropout(mode, op_seed=False), reference=ref, notes="global seed only"
            )
        )
        out.append(
            Adapter(
                "tf.nn.dropout(seed=...)",
                mode,
                True,
                _nn_dropout(mode, op_seed=True),
                reference=ref,
                notes="global seed and op seed",
            )
        )
        out.append(Adapter("tf.compat.v1.nn.dropout(keep_prob=...)", mode, True, _v1_dropout(mode), reference=ref))
        for module, label in _keras_modules():
            out.append(
                Adapter(
                    f"{label}.layers.Dropout", mode, True, _keras_layer(module, "Dropout", mode, True), reference=ref
                )
            )
            out.append(
                Adapter(
                    f"{label}.layers.AlphaDropout",
                    mode,
                    True,
                    _keras_layer(module, "AlphaDropout", mode, True),
                    reference=ref,
                    kind="alpha",
                    keep_dtype="float32",  # Keras 2 and 3 both draw it with floatx
                    notes="dropped positions hold a*alpha'+b; the uniform is drawn in float32",
                )
            )
            out.append(
                Adapter(
                    f"{label}.layers.GaussianDropout",
                    mode,
                    True,
                    _keras_layer(module, "GaussianDropout", mode, False),
                    kind="gaussian",
                    notes="multiplicative Normal(1, rate/(1-rate)) noise, no mask",
                )
            )
            for dims, cls in ((1, "SpatialDropout1D"), (2, "SpatialDropout2D"), (3, "SpatialDropout3D")):
                # few elements per unit: the draws are the units, the elements only cost time
                shape = (64,) + (2,) * dims + (64,)
                noise = (64,) + (1,) * dims + (64,)
                out.append(
                    Adapter(
                        f"{label}.layers.{cls}",
                        mode,
                        True,
                        _keras_layer(module, cls, mode, False),
                        shape=shape,
                        noise_shape=noise,
                        reference=ref,
                        notes="drops whole channels: one draw per (batch, channel)",
                    )
                )
    return out


def _keras_modules():
    """Keras on TensorFlow: keras (unless KERAS_BACKEND names another backend) and tf_keras."""
    mods = []
    try:
        import keras

        if getattr(keras.backend, "backend", lambda: "tensorflow")() == "tensorflow":
            mods.append((keras, "keras"))
    except ImportError:  # pragma: no cover - keras ships with TF >= 2.16
        pass
    try:
        import tf_keras

        mods.append((tf_keras, "tf_keras"))
    except ImportError:
        pass
    return mods


LAYER_CLASSES = (
    "Dropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
    "AlphaDropout",
    "GaussianDropout",
)


def layer_factories(dtype: str = "float32") -> list:
    """(name, make_layer(rate, seed)) for every dropout layer class of the installed Keras and
    tf_keras: what verify_layer takes."""
    out = []
    for module, label in _keras_modules():
        for cls_name in LAYER_CLASSES:
            cls = getattr(module.layers, cls_name, None)
            if cls is not None:
                out.append(
                    (f"{label}.layers.{cls_name}", lambda rate, seed, cls=cls: cls(rate, seed=seed, dtype=dtype))
                )
    return out
