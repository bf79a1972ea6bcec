"""The recurrent layer probe: builds a Keras recurrent layer with weights that make its dropout
masks readable (a closed gate, a known bias), and the framework facts verify_recurrent needs
(which backend a layer runs on, how to construct it, its name).  verify_recurrent's checks are
in ``recurrent``; ``attention`` reuses the construction helpers."""

from __future__ import annotations

import re

import numpy as np

from .._floats import round_to

KINDS = {1: "SimpleRNN", 3: "GRU", 4: "LSTM"}
BLOCK = {1: 0, 3: 2, 4: 2}  # the candidate block: SimpleRNN's only, GRU's h, LSTM's c
CLOSED_GATE = {3: 0, 4: 1}  # GRU's update gate z, LSTM's forget gate f
CLOSED = -1000.0  # sigmoid(-1000) is exactly 0 in every float dtype
BETA = 0.5  # the recurrent probe's bias: h > 0 at every step


def _layout_error(name, shapes, units, in_dim) -> ValueError:
    return ValueError(
        f"layer_cls ({name}) has weights {shapes}, not a Keras recurrent layout for units={units}, "
        f"input_dim={in_dim}: expected kernel ({in_dim}, k*units), recurrent_kernel ({units}, k*units), "
        "bias (k*units,) (GRU with reset_after: (2, 3*units)) with k = 1 (SimpleRNN), 3 (GRU: z, r, h) "
        "or 4 (LSTM: i, f, c, o)"
    )


def layout(weights, units: int, in_dim: int, name: str = "layer_cls") -> int:
    """The number of gate blocks k of a Keras recurrent layer's weights (1, 3 or 4), or a
    ValueError naming what was expected."""
    shapes = [tuple(np.shape(w)) for w in weights]
    if len(shapes) != 3 or len(shapes[0]) != 2 or shapes[0][0] != in_dim or shapes[0][1] % units:
        raise _layout_error(name, shapes, units, in_dim)
    k = shapes[0][1] // units
    bias_ok = shapes[2] == (k * units,) or (k == 3 and shapes[2] == (2, 3 * units))
    if k not in KINDS or shapes[1] != (units, k * units) or not bias_ok:
        raise _layout_error(name, shapes, units, in_dim)
    return k


class RecurrentProbe:
    """The layers, weights and calls behind verify_recurrent's checks."""

    def __init__(self, layer_cls, dropout, recurrent_dropout, dtype, seed, units, steps, batch, mode="eager"):
        self.layer_cls, self.dropout, self.recurrent_dropout = layer_cls, dropout, recurrent_dropout
        self.dtype, self.seed, self.units, self.steps, self.batch = dtype, seed, units, steps, batch
        self.samples, self.mode, self.compiled = 0, mode, {}
        self.layer = self.make(dropout, recurrent_dropout, seed)
        self.framework = _framework_of(self.layer)
        from ..backends import get_backend

        self.backend = get_backend(self.framework)
        if mode == "function" and self.framework != "tensorflow":
            raise ValueError(
                f"mode ('function') runs the layer in tf.function: {_name(self.layer)} runs on "
                f"{self.framework}, not TensorFlow"
            )
        self.build(self.layer, batch)
        self.k = layout(self.layer.get_weights(), units, units, _name(self.layer))
        self.kind = KINDS[self.k]
        rng = np.random.default_rng([seed, 0x12EC])
        # x in [0.5, 2]: never 0, so a zero output means a dropped input
        self.x = np.asarray(round_to(rng.uniform(0.5, 2.0, (batch, steps, units)), dtype)).astype(_np_dtype(dtype))
        self.zeros = np.zeros((batch, steps, units), _np_dtype(dtype))

    # -- layers and weights ---------------------------------------------------------------
    def make(self, dropout, recurrent_dropout, seed):
        # 16-bit: Keras's mixed policy (float32 weights, 16-bit compute), as models use it; a
        # bfloat16 policy cannot even build on TensorFlow (its orthogonal initializer needs a QR)
        policy = f"mixed_{self.dtype}" if self.dtype in ("float16", "bfloat16") else self.dtype
        layer = construct(
            self.layer_cls,
            dict(
                units=self.units,
                dropout=dropout,
                recurrent_dropout=recurrent_dropout,
                return_sequences=True,
                dtype=policy,
            ),
            seed,
            "layer_cls(units=, dropout=, recurrent_dropout=, seed=, return_sequences=, dtype=)",
        )
        if not callable(layer) or not hasattr(layer, "get_weights"):
            raise TypeError(f"layer_cls ({self.layer_cls!r}) returned {type(layer).__name__}, not a Keras layer")
        return layer

    def build(self, layer, batch):
        try:
            layer(self.native(np.zeros((batch, self.steps, self.units), _np_dtype(self.dtype))), training=False)
        except Exception as exc:
            words = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()[0][:200]
            raise TypeError(
                f"{_name(layer)} could not be built and called in {self.dtype}: {type(exc).__name__}: {words}"
            ) from None

    def native(self, a):
        return self.backend.native(np.ascontiguousarray(a))

    def weights(self, probe: str, recurrent_scale: float = 1.0):
        """The weights of the input, recurrent or cross probe (``recurrent`` module docstring)."""
        u, k = self.units, self.k
        shapes = [np.shape(w) for w in self.layer.get_weights()]
        kernel, rec, bias = (np.zeros(s, np.float64) for s in shapes)
        block = slice(BLOCK[k] * u, (BLOCK[k] + 1) * u)
        eye = np.eye(u)
        if probe in ("input", "cross"):
            kernel[:, block] = eye
        if probe == "cross":
            rec[:, block] = eye
            (bias[0] if bias.ndim == 2 else bias)[block] = BETA
        elif probe == "recurrent":
            rec[:, block] = eye * recurrent_scale
            (bias[0] if bias.ndim == 2 else bias)[block] = BETA
        if k in CLOSED_GATE:
            gate = slice(CLOSED_GATE[k] * u, (CLOSED_GATE[k] + 1) * u)
            (bias[0] if bias.ndim == 2 else bias)[gate] = CLOSED
        return [np.asarray(w).astype(_np_dtype(self.variable_dtype(self.layer))) for w in (kernel, rec, bias)]

    @staticmethod
    def variable_dtype(layer):
        return str(getattr(layer.get_weights()[0], "dtype", "float32"))

    def set(self, layer, probe, recurrent_scale=1.0):
        layer.set_weights(self.weights(probe, recurrent_scale))

    def call(self, layer, x, training):
        y = self.runner(layer, training)(self.native(x))
        out = self.backend.to_numpy(y)
        if out.shape != x.shape:
            raise TypeError(
                f"the layer returned shape {list(out.shape)} for input {list(x.shape)}: build it with "
                "return_sequences=True"
            )
        self.samples += out.size
        return np.asarray(out, np.float64)

    def runner(self, layer, training):
        """layer(x, training=...) eagerly, or inside one tf.function per layer and flag (its masks
        then come from the traced graph: the seed generator's state is a variable)."""

        def run(t):
            return layer(t, training=training) if training is not None else layer(t)

        if self.mode == "eager":
            return run
        key = (id(layer), training)
        if key not in self.compiled:
            import tensorflow as tf

            self.compiled[key] = (layer, tf.function(run))  # the layer kept alive: ids stay unique
        return self.compiled[key][1]

    # -- masks ------------------------------------------------------------------------------
    def input_mask(self, layer, x=None):
        x = self.x if x is None else x
        return self.call(layer, x, True) != 0

    def base(self):
        """The recurrent probe's output for h_{t-1} = 0: the same weights, recurrent kernel 0."""
        layer = self.make(0.0, 0.0, self.seed)
        self.build(layer, self.batch)
        layer.set_weights(self.weights("recurrent", 0.0))
        return self.call(layer, self.zeros, False)

    def recurrent_mask(self, layer, base):
        y = self.call(layer, self.zeros, True)
        return (y != base)[:, 1:, :]

    def cross_masks(self, layer, base):
        """Both masks of one call of the cross probe (kernel and recurrent kernel the identity into
        the candidate block, its bias 0.5, x_0 > 0 and x_t = 0 after): y_0 = f(x_0 * m_in + 0.5)
        reads the input mask at step 0 (h_{-1} = 0), y_t = f(h_{t-1} * m_rec + 0.5) the recurrent
        mask at step t >= 1 (h > 0, no input); a dropped unit gives f(0.5), ``base``.  Returns
        (input mask (batch, units), recurrent masks (batch, steps - 1, units))."""
        x = np.zeros_like(self.x)
        x[:, 0] = self.x[:, 0]
        kept = self.call(layer, x, True) != base
        return kept[:, 0], kept[:, 1:]


def construct(layer_cls, kwargs: dict, seed, form: str):
    """layer_cls(**kwargs, seed=seed).  Keras 2's SimpleRNN and MultiHeadAttention take no seed:
    they are made without one after ``tf.random.set_seed(seed)``, so a run still replays."""
    try:
        return layer_cls(**kwargs, seed=seed)
    except Exception as exc:
        first = exc
    if "seed" in str(first) and seed is not None:
        import tensorflow as tf

        tf.random.set_seed(seed)
        try:
            return layer_cls(**kwargs)
        except Exception:  # noqa: BLE001 - the first error is the one to report
            pass
    raise TypeError(f"{form} raised {type(first).__name__}: {first}") from None


def _framework_of(layer) -> str:
    module = type(layer).__module__
    for cls in type(layer).__mro__:
        if cls.__module__.startswith("tf_keras"):
            return "tensorflow"
        if cls.__module__.startswith("keras"):
            module = cls.__module__
            break
    if module.startswith("keras"):
        import keras

        return keras.backend.backend()
    return "tensorflow"


def _np_dtype(dtype: str):
    if dtype == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return np.dtype(dtype)


def _name(layer) -> str:
    return type(layer).__qualname__


def _cls_name(layer_cls, layer) -> str:
    """The name a reader knows: the class, or the factory's own name (corpus: "RNN(cell)")."""
    name = getattr(layer_cls, "__qualname__", "") or _name(layer)
    return _name(layer) if "<lambda>" in name else name
