"""Alpha dropout's value check: ``scale`` (dropped units hold a * alpha' + b, kept ones a * x + b,
bit for bit).

Detects a wrong affine correction (a, b computed from another rate, an offset added twice)
and values perturbed after the mask.
Only this check catches: ``corpus.alpha_wrong_offset`` (b computed as if the rate were
rate / 2: the mask is right, every kept value is off).
Test: exact (no false-fail rate): every kept value against fl(fl(a x) + b) (two roundings, as
Keras computes it eagerly) and fl(a x + b) (one rounding: XLA fuses the multiply-add).
Tested in tests/test_verify.py and tests/test_adapters.py.
"""

from __future__ import annotations

import numpy as np

from ...precision import ulp_distance
from ...report import Check, Finding
from ._common import as_float64
from .scale import Scale

SCALE_VALUES = 200_000  # kept values checked (whole calls' worth)


class AffineScale(Scale):
    observes = frozenset({"main", "probe", "backward"})

    def __init__(self, run):
        super().__init__(run)
        self.xs, self.ys, self.count = [], [], 0

    def observe(self, call) -> None:
        if self.count >= SCALE_VALUES:
            return
        kept = call.mask if call.mask.shape == call.y.shape else self.run.kept_elements(call.y)
        self.xs.append(call.x_np[kept])
        self.ys.append(call.y[kept])
        self.count += call.kept_elements

    def conclude(self):
        return [self.affine_check(np.concatenate(self.xs), np.concatenate(self.ys))]

    def affine_check(self, xs, ys) -> Check:
        cfg, kind = self.cfg, self.run.kind
        got, xv = as_float64(ys), as_float64(xs)
        if cfg.dtype == "float64":
            got, xv = got[:20_000], xv[:20_000]
        results = []
        for label, want in (("two roundings", kind.affine(xv)), ("fused", kind.fused(xv))):
            mismatch = int(np.count_nonzero(want != got))
            if mismatch == 0:
                self.run.findings.append(
                    Finding(
                        "affine_formula",
                        f"{cfg.dtype}: kept values are a*x + b with "
                        + (
                            "one rounding (a fused multiply-add)"
                            if label == "fused"
                            else "two roundings (multiply, then add)"
                        ),
                        label,
                    )
                )
                return Check(
                    "scale",
                    True,
                    samples=int(xv.size),
                    observed=f"every kept value = a*x + b ({label})",
                    expected=f"kept: a*x + b with a = {kind.a_d!r}, b = {kind.b_d!r}; dropped: "
                    f"{' or '.join(repr(float(v)) for v in kind.dropped_values)}",
                    detail=f"{xv.size:,} kept values",
                )
            results.append((label, mismatch, int(ulp_distance(want, got, cfg.dtype).max())))
        label, mismatch, ulp = min(results, key=lambda r: (r[2], r[1]))
        return Check(
            "scale",
            False,
            samples=int(xv.size),
            observed=f"{mismatch:,} of {xv.size:,} kept values differ from a*x + b ({label})",
            expected=f"kept: a*x + b with a = {kind.a_d!r}, b = {kind.b_d!r}",
            detail=f"neither two roundings nor a fused multiply-add matches; closest ({label}) is off by "
            f"up to {ulp} ULP",
            reproduce=cfg.reproduce(),
        )


def alpha_families(families):
    return [AffineScale if f is Scale else f for f in families]
