"""The JAX backend: ``fn(x, rate, key, noise_shape=None)`` under the stateless contract, ``key``
``jax.random.fold_in(jax.random.key(seed[0]), seed[1])``; the stateful contract for modules that
carry their own RNG streams (flax.nnx).

Model of a correct implementation (measured on JAX 0.10, Flax 0.12, Keras 3.15 on JAX, CPU):
``jax.random.bernoulli(key, 1 - rate, shape)`` with a Python-float probability draws a float32
uniform (2**23 levels) and keeps ``U < fl32(1 - rate)`` in every dtype (Flax's Dropout and Keras 3
on JAX draw it so); kept values ``x / (1 - rate)`` compiled by XLA: ``x * fl(1/fl(1 - rate))`` in
float16 and float32, ``x / fl(1 - rate)`` in bfloat16.  The reference stream "jax" is
``bernoulli(key, 1 - rate, shape)`` itself.  Gradients through ``jax.vjp``; rematerialisation
through ``jax.checkpoint``.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from .._floats import round_to
from ..precision import ScaleFormula, uniform_keep_fraction
from . import Backend


class JaxBackend(Backend):
    name = "jax"
    references = ("jax",)
    default_reference = "jax"
    differentiable = True
    seed_form = "a jax.random key"
    recompute_wrappers = ("jax.checkpoint",)

    def __init__(self):
        import jax
        import jax.numpy as jnp

        self.jax, self.jnp = jax, jnp

    def native(self, x: np.ndarray):
        return self.jnp.asarray(x)

    def reshape(self, x, shape):
        return self.jnp.reshape(x, tuple(shape))

    def seed(self, pair):
        return self.jax.random.fold_in(self.jax.random.key(int(pair[0])), int(pair[1]))

    def to_numpy(self, y) -> np.ndarray:
        return np.asarray(y)

    def keep_fraction(self, rate, dtype, reference) -> Fraction:
        return uniform_keep_fraction(rate, "float32", 2**23, "U < fl(1 - rate)")

    def keep_note(self, rate, dtype, reference) -> str:
        return "jax.random.bernoulli draws a float32 uniform (8388608 levels) and keeps U < fl32(1 - rate)"

    def scale_formulas(self, rate, dtype) -> list:
        keep = float(round_to(1.0 - rate, dtype))
        return list(
            dict.fromkeys(
                [
                    ScaleFormula("multiply", dtype, rate, float(round_to(1.0 / keep, dtype))),
                    ScaleFormula("divide", dtype, rate, keep),
                    ScaleFormula("multiply", dtype, rate, float(round_to(1.0 / (1.0 - rate), dtype))),
                ]
            )
        )

    def reference_keep(self, shape, seed_pair, dtype, rate, reference) -> np.ndarray:
        return np.asarray(self.jax.random.bernoulli(self.seed(seed_pair), 1.0 - rate, tuple(shape)))

    def vjp(self, f, x, cotangent):
        try:
            y, pullback = self.jax.vjp(f, x)
        except Exception as exc:  # noqa: BLE001 - not traceable: run it plainly, report the reason
            return f(x), f"{type(exc).__name__}: {str(exc)[:200]}"
        return y, pullback(cotangent)[0]

    def recompute(self, f, wrapper: str):
        return self.jax.checkpoint(f)


__all__ = ["JaxBackend"]
