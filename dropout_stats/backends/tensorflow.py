"""The TensorFlow backend: ``fn(x, rate, seed, noise_shape=None)`` as
``tf.nn.experimental.stateless_dropout`` (seed an int32 tensor of shape [2]), or
``fn(x, rate, noise_shape=None)`` as ``tf.nn.dropout`` for the stateful contract.

Model of a correct implementation (measured on TF 2.12 to 2.21, see precision.py and
reference.py): U drawn in x's dtype on that dtype's grid (under XLA bfloat16 is a float32 uniform
truncated), kept where ``U >= fl(rate)``; kept values ``x * fl(1/(1-rate))`` for a Python-float
rate or ``x / fl(1 - fl(rate))`` for a tensor rate.  Two reference streams: "tensorflow"
(``stateless_uniform``) and "tensorflow-xla" (the same under jit_compile, a different stream for
float32, bfloat16 and float64).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from .._floats import FORMATS
from ..precision import expected_keep_fraction, expected_scale
from . import Backend


class TensorFlowBackend(Backend):
    name = "tensorflow"
    # tensorflow-float32: the uniform drawn in float32, stateless_uniform's default dtype, whatever
    # x's dtype: what `tf.random.stateless_uniform(tf.shape(x), seed) >= rate` gives a 16-bit x
    references = ("tensorflow", "tensorflow-xla", "tensorflow-float32")
    default_reference = "tensorflow"
    differentiable = True
    seed_form = "an int32 tensor of shape [2]"

    def __init__(self):
        from .. import reference as ref  # imports TensorFlow

        self.ref = ref
        self.tf = ref.tf

    def native(self, x: np.ndarray):
        if x.dtype.name == "bfloat16":  # from the bits: TF < 2.13 has its own numpy bfloat16 type
            return self.tf.bitcast(self.tf.constant(x.view(np.uint16)), self.tf.bfloat16)
        return self.tf.constant(x)

    def reshape(self, x, shape):
        return self.tf.reshape(x, list(shape))

    def seed(self, pair):
        return self.ref.as_seed(pair)

    def keep_fraction(self, rate, dtype, reference) -> Fraction:
        if reference == "tensorflow-float32":
            return expected_keep_fraction(rate, "float32")
        return expected_keep_fraction(rate, dtype, xla=reference == "tensorflow-xla")

    def variants(self, reference, dtype) -> tuple:
        """Streams as documented as ``reference`` for this dtype: a 16-bit x's mask may come from
        TensorFlow's uniform in float32 (stateless_uniform's default dtype)."""
        if reference == "tensorflow" and dtype in ("float16", "bfloat16"):
            return ("tensorflow-float32",)
        return ()

    def keep_note(self, rate, dtype, reference) -> str:
        if reference == "tensorflow-float32":
            return "TF's uniform drawn in float32 (its default dtype) has 8388608 levels, the rate rounded to float32"
        fmt = FORMATS[dtype]
        xla = reference == "tensorflow-xla"
        levels = fmt.xla_uniform_levels if xla else fmt.uniform_levels
        return f"TF's uniform has {levels} levels and the rate rounds to {dtype}"

    def scale_formulas(self, rate, dtype) -> list:
        return [expected_scale(rate, dtype), expected_scale(rate, dtype, rate_is_tensor=True)]

    @property
    def recompute_wrappers(self) -> tuple:
        try:
            import keras
        except ImportError:  # pragma: no cover - Keras ships with TensorFlow
            keras = None
        return ("tf.recompute_grad",) + (("keras.remat",) if hasattr(keras, "remat") else ())

    def vjp(self, f, x, cotangent):
        tf = self.tf
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = f(x)
        if not isinstance(y, tf.Tensor) or not y.dtype.is_floating:
            return y, None
        try:
            return y, tape.gradient(y, x, output_gradients=cotangent)
        except Exception as exc:  # no gradient defined, a numpy step inside, ...
            return y, f"{type(exc).__name__}: {exc}"

    def recompute(self, f, wrapper: str):
        if wrapper == "tf.recompute_grad":
            return self.tf.recompute_grad(f)
        import keras

        return keras.remat(f)

    def reference_keep(self, shape, seed_pair, dtype, rate, reference) -> np.ndarray:
        if reference == "tensorflow-float32":
            return self.ref.reference_keep(shape, seed_pair, "float32", rate)
        return self.ref.reference_keep(shape, seed_pair, dtype, rate, xla=reference == "tensorflow-xla")

    def other_reference(self, reference):
        return "tensorflow" if reference == "tensorflow-xla" else "tensorflow-xla"

    def reference_text(self, reference, dtype) -> str:
        if reference == "tensorflow-float32":
            return "tf.random.stateless_uniform(shape, seed) (float32) >= fl32(rate)"
        return super().reference_text(reference, dtype)

    def stream_note(self, reference, other) -> str:
        which = "XLA's (jit_compile)" if other == "tensorflow-xla" else "eager"
        return (
            f"the mask equals {which} stream instead: under XLA TensorFlow draws a different uniform than "
            f"eagerly (float32, bfloat16, float64) unless rng_alg='philox'; use reference={other!r}"
        )
