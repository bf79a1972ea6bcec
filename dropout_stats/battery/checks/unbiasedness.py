"""unbiasedness: E[y] is keep x the scaled input, so the layer's output mean is what the design
says (and with ``strict_nominal``, E[x] itself).

Detects a keep rate that depends on the input value in a way that moves the mean: the units
whose |x| is large dropped more often than the others, with the overall rate right.
Only this check catches: ``corpus.drops_large_values`` (keeps the largest |x| of each row a
little less often: the keep rate, the scale and the blocks are right; only the mean moves).
Test: Bernstein's inequality on sum|y| over the first calls' units (independent terms, one mask
draw each): a valid p-value at any n, no normal approximation, in the run's Holm family.  The
expectation uses the scale formula the scale check found; the bias that design has against
E[x] is a finding.  Tested in tests/test_verify.py.
"""
from __future__ import annotations

import math

import numpy as np

from ..._floats import bfloat16_bits_to_float32
from ...precision import _scaled_native, apply_scale
from ...report import Check, Finding
from . import Family
from ._common import abs_sum, as_float64

MEAN_ELEMENTS = 1_000_000           # elements in the unbiasedness sum (whole calls)


class Unbiasedness(Family):
    name = "unbiasedness"
    names = ("unbiasedness",)

    def __init__(self, run):
        super().__init__(run)
        self.total = 0.0       # sum |y| over the first calls, in float64
        self.calls = 0

    def statistical(self):
        return ["unbiasedness"]

    def observe(self, call) -> None:
        if self.calls * call.y.size < MEAN_ELEMENTS:
            self.total += abs_sum(call.y)
            self.calls += 1

    def conclude(self):
        cfg, run = self.cfg, self.run
        x_np = run.x_np
        total, calls = self.total, self.calls
        # |y| = B * |scale(x)|: absolute values keep the terms' signs out of the way
        ax_sum = abs_sum(x_np)
        ideal_sum = ax_sum / (1 - cfg.rate)
        formula = None if cfg.strict_nominal else run.scale_formula
        if formula is None:
            scaled = np.abs(as_float64(x_np)) / (1 - cfg.rate)
        elif formula.formula != "exact":  # the dtype's own arithmetic; float32 holds it exactly
            native = _scaled_native(x_np, formula)
            native = (bfloat16_bits_to_float32(native) if cfg.dtype == "bfloat16"
                      else native.astype(np.float32) if native.dtype.itemsize < 4 else native)
            scaled = np.abs(native, out=native)
        else:
            scaled = np.abs(apply_scale(x_np, formula))
        scaled_sum = float(scaled.sum(dtype=np.float64))
        unit_weight = (scaled.sum(axis=run.axes, keepdims=True, dtype=np.float64) if run.axes else scaled).ravel()
        # not np.dot: OpenBLAS's threads spin ~0.1 s after a call, taking a core from fn's kernels
        sum_sq = float(np.square(unit_weight, dtype=np.float64).sum())
        b = float(unit_weight.max())
        p, q = cfg.keep, 1 - cfg.keep
        expected = calls * p * scaled_sum
        var = calls * p * q * sum_sq
        t = abs(total - expected)
        pvalue = min(1.0, 2 * math.exp(-t * t / (2 * (var + b * t / 3)))) if t > 0 else 1.0
        ratio = total / (calls * ax_sum)
        design_ratio = p * scaled_sum / ax_sum
        check = Check(
            "unbiasedness", True, "statistical", pvalue, None, calls * x_np.size,
            observed=f"sum|y|/sum|x| = {ratio:.6g}",
            expected=f"{design_ratio:.6g} (keep x {'1/(1-rate)' if formula is None else formula.formula + ' scale'})",
            detail="Bernstein bound on sum|y| - E[sum|y|] over independent units (valid at any n, "
                   "no normal approximation)", reproduce=cfg.reproduce())
        bias = design_ratio - 1
        if bias != 0 and not cfg.strict_nominal:
            parts_text = []
            if p != 1 - cfg.rate:
                parts_text.append(f"keep {p:.10g} instead of {1 - cfg.rate:.10g}")
            scale_ratio = scaled_sum / ideal_sum
            if scale_ratio != 1:
                parts_text.append(f"kept values {scale_ratio:.8g} x the ideal x/(1-rate)")
            run.findings.append(Finding(
                "mean_bias", f"{cfg.dtype} at rate {cfg.rate}: E[y]/E[x] = {design_ratio:.8g}, biased by "
                f"{bias:+.3g} relative ({'; '.join(parts_text)})", bias))
        return [check]
