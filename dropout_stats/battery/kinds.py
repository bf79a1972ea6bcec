"""Kinds of dropout the mask battery verifies: plain dropout (dropped units hold 0, kept ones
x / (1 - rate)) and alpha dropout (dropped units hold a * alpha' + b, kept ones a * x + b).
A kind makes the input, reads the kept set from an output, and names its check families."""

from __future__ import annotations

import numpy as np

from .._floats import FORMATS, round_to
from ..backends import make_input_array
from ..report import Check
from .checks import FAMILIES
from .checks._common import as_float64

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def positive_input(shape, dtype: str, seed: int) -> np.ndarray:
    """|x| of the battery's input: the sign bits cleared."""
    x = make_input_array(shape, dtype, seed)
    fmt = FORMATS[dtype]
    return (x.view(fmt.uint) & fmt.uint(fmt.abs_mask)).view(x.dtype)


class Dropout:
    families = FAMILIES
    bounded_scale = True  # kept values: x / (1 - rate) within precision.scale_bound

    def make_input(self, shape, dtype: str, seed: int) -> np.ndarray:
        return make_input_array(shape, dtype, seed)

    def kept_elements(self, y_np, fmt) -> np.ndarray:
        if y_np.dtype.name == "bfloat16":  # ml_dtypes compares slowly: use the bits
            return (y_np.view(fmt.uint) & fmt.uint(fmt.abs_mask)) != 0
        return y_np != 0  # -0.0 == 0; NaN != 0

    def gradient_formulas(self, run, rate: float):
        """(label, upstream -> the gradient a correct implementation gives at a kept position, the
        ScaleFormula it applies or None): the backward check decides a multiply/divide formula in
        the dtype's own arithmetic first."""
        from ..precision import apply_scale, exact_scale

        formulas = run.backend.scale_formulas(rate, run.cfg.dtype) + [exact_scale(rate, run.cfg.dtype)]
        symbol = {"multiply": "*", "divide": "/"}
        return [
            (
                f"{symbol[f.formula]} {f.factor!r}" if f.formula in symbol else "/ (1 - rate) correctly rounded",
                lambda u, f=f: apply_scale(u, f),
                f,
            )
            for f in formulas
        ]

    def degenerate(self, run) -> list[Check]:
        """Keep probability 1 (everything kept, unchanged) or 0 (everything dropped)."""
        cfg = run.cfg
        c = run.call("main", cfg.rate, run.seed_pair(0), cfg.noise_shape)
        kept = c.mask
        if cfg.keep == 1.0:
            same = np.array_equal(c.y.view(run.fmt.uint), run.x_np.view(run.fmt.uint))
            return [
                Check(
                    "keep_fraction",
                    bool(same),
                    observed=f"{int(kept.sum())}/{kept.size} kept",
                    expected="all kept, unchanged (keep probability 1)",
                    samples=kept.size,
                    detail="" if same else "rate 0 must return x unchanged",
                    reproduce=cfg.reproduce(),
                )
            ]
        none = not kept.any()
        return [
            Check(
                "keep_fraction",
                bool(none),
                observed=f"{int(kept.sum())}/{kept.size} kept",
                expected=f"none kept: fl(rate) in {cfg.dtype} is >= 1",
                samples=kept.size,
                detail="" if none else "the rate rounds to 1 in this dtype: everything must drop",
                reproduce=cfg.reproduce(),
            )
        ]


class AlphaDropout(Dropout):
    """Dropped positions hold a * alpha' + b and kept ones a * x + b, with alpha' = -SELU_ALPHA *
    SELU_SCALE, a = ((1 - rate)(1 + rate alpha'^2))^(-1/2), b = -a alpha' rate (Klambauer et al.
    2017).  Inputs are positive, so a * x + b never equals the dropped value."""

    bounded_scale = False  # its affine family checks a * x + b, fused or not

    def __init__(self, rate: float, dtype: str):
        from .checks.affine import alpha_families

        self.families = alpha_families(FAMILIES)
        ap = -SELU_ALPHA * SELU_SCALE
        self.a = ((1 - rate) * (1 + rate * ap**2)) ** -0.5
        self.b = -self.a * ap * rate
        self.dtype = dtype
        self.a_d, self.b_d, self.ap_d = (float(round_to(v, dtype)) for v in (self.a, self.b, ap))
        self.dropped_value = self.affine(np.array([self.ap_d]))[0]
        # a * alpha' + b as frameworks round it: Keras's two roundings, a fused multiply-add, and
        # PyTorch's b - fl(SELU_ALPHA * SELU_SCALE * a) (ATen forms alpha * a in double first)
        torch_form = (
            round_to(self.b_d - float(round_to(-ap * self.a, dtype)), dtype)
            if dtype != "float64"
            else self.b_d - (-ap * self.a)
        )
        self.dropped_values = np.unique(
            np.array([self.dropped_value, self.fused(np.array([self.ap_d]))[0], float(torch_form)], dtype=np.float64)
        )

    def make_input(self, shape, dtype, seed):
        return positive_input(shape, dtype, seed)

    def kept_elements(self, y_np, fmt) -> np.ndarray:
        return ~np.isin(as_float64(y_np), self.dropped_values)

    def gradient_formulas(self, run, rate: float):
        """d(a x + b)/dx = a: the upstream gradient times a, rounded once."""
        return [(f"* a ({self.a_d!r})", lambda u: round_to(as_float64(u) * self.a_d, self.dtype), None)]

    def affine(self, xv: np.ndarray) -> np.ndarray:
        """fl(fl(a * x) + b) in the dtype, as Keras computes ``a * x + b``."""
        d = self.dtype
        if d == "float64":
            return (xv * self.a_d) + self.b_d
        return round_to(round_to(xv * self.a_d, d) + self.b_d, d)

    def fused(self, xv: np.ndarray) -> np.ndarray:
        """fl(a * x + b) with one rounding (XLA fuses the multiply-add)."""
        d = self.dtype
        if d == "float64":
            from fractions import Fraction as F

            a, b = F(self.a_d), F(self.b_d)
            return np.array([float(a * F(float(v)) + b) for v in xv], dtype=np.float64)
        # a*x has <= 48 significant bits and b's last bit lies within them: exact in float64
        return round_to(xv * self.a_d + self.b_d, d)
