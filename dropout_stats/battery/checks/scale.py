"""scale: every kept value is x scaled by 1/(1 - rate) with a formula a correct implementation
uses, bit for bit.

Detects kept values scaled wrongly, even by one ULP: no scale, a scale computed in another
precision, a rate rounded before the scale, values perturbed after the mask.
Only this check catches: ``corpus.scale_one_ulp_off`` (every kept value one ULP high).
Test: exact (no false-fail rate).  The backend's formulas (TensorFlow: ``x * fl(1/(1-rate))``
or ``x / fl(1 - fl(rate))``) are compared with every position of the first whole calls in
the dtype's own arithmetic, and with the kept values gathered from later calls up to 200,000;
only when none matches is the correctly rounded ``x / (1 - rate)`` tried, and the failure
names the closest formula and its largest ULP distance.  Tested in tests/test_verify.py and
tests/test_precision.py (the formulas against real TensorFlow).
"""
from __future__ import annotations

import numpy as np

from ...precision import _scaled_native, apply_scale, exact_scale, ulp_distance
from ...report import Check, Finding
from . import Family
from ._common import as_float64

SCALE_VALUES = 200_000              # kept values checked bit for bit against each formula
SCALE_WHOLE_ELEMENTS = 1 << 20      # of which from whole stored calls (the rest gathered)


def formula_text(f) -> str:
    return {"multiply": f"x * {f.factor!r} (fl(1/(1-rate)))", "divide": f"x / {f.factor!r} (1 - fl(rate))",
            "exact": "x / (1 - rate) correctly rounded"}[f.formula]


class Scale(Family):
    name = "scale"
    names = ("scale",)

    def __init__(self, run):
        super().__init__(run)
        self.calls = []        # (y, kept) of the first whole calls
        self.whole = 0         # their elements
        self.xs, self.ys = [], []  # kept values of later calls
        self.count = 0         # kept values so far (the check stops at SCALE_VALUES)
        run.scale_formula = None

    def observe(self, call) -> None:
        if self.count >= SCALE_VALUES:
            return
        y, m = call.y, call.mask
        kept = m if m.shape == y.shape else self.run.kept_elements(y)  # m is per element then
        if self.whole < SCALE_WHOLE_ELEMENTS:  # whole calls: compared without a gather
            self.calls.append((y, kept))
            self.whole += y.size
        else:  # many calls at a high rate: keep only the kept values, memory stays small
            self.xs.append(call.x_np[kept])
            self.ys.append(y[kept])
        self.count += call.kept if kept is m else int(np.count_nonzero(kept))

    def conclude(self):
        """Every position of whole calls against the backend's formulas in the dtype's own
        arithmetic, counting the kept positions that differ (and the kept values gathered from
        later calls).  Only when no formula matches does the full check run on the gathered
        values (the correctly rounded formula, ULP distances, the failure's detail)."""
        cfg, x_np = self.cfg, self.run.x_np
        empty = x_np.ravel()[:0]
        xs_more = np.concatenate(self.xs) if self.xs else empty
        ys_more = np.concatenate(self.ys) if self.ys else empty
        n = self.count  # kept values in the whole calls plus the gathered ones
        if n:
            bits = cfg.dtype == "bfloat16"

            def same(want, y):
                return want == (y.view(np.uint16) if bits else y)

            for f in self.run.backend.scale_formulas(cfg.rate, cfg.dtype):
                want = _scaled_native(x_np, f)
                if (all(not np.any(kept & ~same(want, y)) for y, kept in self.calls)
                        and bool(np.all(same(_scaled_native(xs_more, f), ys_more)))):
                    return [self.passed(f, n)]
        xs = [x_np[kept] for _, kept in self.calls] + [xs_more]
        ys = [y[kept] for y, kept in self.calls] + [ys_more]
        return [self.full_check(np.concatenate(xs), np.concatenate(ys))]

    def passed(self, f, n: int) -> Check:
        self.run.scale_formula = f
        self.run.findings.append(Finding("scale_formula", f"{self.cfg.dtype}: kept values are {formula_text(f)} "
                                         f"(formula {f.formula!r})", f.formula))
        return Check("scale", True, samples=n, observed=f"every kept value = {formula_text(f)}",
                     expected="one reference formula, bit for bit", detail=f"{n:,} kept values; formula {f.formula!r}")

    def full_check(self, xs: np.ndarray, ys: np.ndarray) -> Check:
        cfg = self.cfg
        if xs.size == 0:
            return Check("scale", None, detail="no kept values to check")
        got = as_float64(ys)
        formulas = self.run.backend.scale_formulas(cfg.rate, cfg.dtype) + [exact_scale(cfg.rate, cfg.dtype)]
        results = []
        for f in formulas:
            sub = slice(None) if (f.formula != "exact" or cfg.dtype != "float64") else slice(0, 20_000)
            want = apply_scale(xs[sub], f)
            mismatch = int(np.count_nonzero(want != got[sub]))
            if mismatch == 0:
                return self.passed(f, int(xs.size))
            d = ulp_distance(want.astype(np.float64), got[sub], cfg.dtype)
            results.append((f, mismatch, int(d.max()), got[sub].size))
        f, mismatch, ulp, n = min(results, key=lambda r: (r[2], r[1]))
        ratio = got / as_float64(xs)
        return Check(
            "scale", False, samples=int(xs.size),
            observed=f"{mismatch:,}/{n:,} differ from the closest formula ({f.formula})",
            expected="x*fl(1/(1-rate)), x/(1-fl(rate)) or round(x/(1-rate))",
            detail=(f"no formula matches every kept value; closest {f.formula!r}: {mismatch:,} of {n:,} "
                    f"differ, largest distance {ulp} ULP; y/x ranges over [{ratio.min():.9g}, {ratio.max():.9g}] "
                    f"where 1/(1-rate) = {1 / (1 - cfg.rate):.9g}"),
            reproduce=cfg.reproduce())
