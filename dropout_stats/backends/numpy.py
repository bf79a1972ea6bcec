"""The numpy backend: ``fn(x, rate, seed, noise_shape=None)`` takes and returns numpy arrays,
``seed`` a tuple of two Python ints (the pair TensorFlow gets as a tensor).  It needs no
framework, so verify() runs with only numpy and scipy installed.

Model of a correct implementation: U drawn in float64 (``Generator.random``), kept where
``U >= rate``: the keep probability is 1 - rate (to float64's 1e-16) in every dtype; kept
values ``x * fl(1/(1-rate))``, ``x / fl(1 - rate)`` (numpy 2 rounds a Python-float divisor to
x's dtype first), ``x / fl(1 - fl(rate))`` or the correctly rounded quotient.  No reference
stream: the black-box checks carry the proof.
"""

from __future__ import annotations

from fractions import Fraction

from .._floats import round_to
from ..precision import ScaleFormula, expected_scale
from . import Backend


class NumpyBackend(Backend):
    name = "numpy"

    def keep_fraction(self, rate, dtype, reference) -> Fraction:
        return Fraction(1.0 - rate)

    def scale_formulas(self, rate, dtype) -> list:
        formulas = [
            expected_scale(rate, dtype),
            expected_scale(rate, dtype, rate_is_tensor=True),
            ScaleFormula("divide", dtype, rate, float(round_to(1.0 - rate, dtype))),
        ]
        return list(dict.fromkeys(formulas))  # equal formulas once, in order
