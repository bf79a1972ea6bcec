"""scale: every kept value of every call is x scaled by 1/(1 - rate) with a formula a correct
implementation uses, bit for bit, at that call's rate.

Detects kept values scaled wrongly, even by one ULP: no scale, a scale computed in another
precision, a rate rounded before the scale, values perturbed after the mask; and a scale that
is right at the configured rate only (the rate sweep's calls are checked at their own rates).
Only this check catches: ``corpus.scale_one_ulp_off`` (every kept value one ULP high).
Test: exact (no false-fail rate).  For each call, y's bits against the backend's formulas
(TensorFlow: ``x * fl(1/(1-rate))`` or ``x / fl(1 - fl(rate))``) in the dtype's own arithmetic:
dropped positions hold 0 and never match a non-zero x's scaled value, so a call matches when
the positions that differ are exactly its dropped ones.  A call no formula matches keeps its
kept values, which must then be the correctly rounded ``x / (1 - rate)``; a failure names the
closest formula and its largest ULP distance.  Tested in
tests/test_verify.py and tests/test_precision.py (the formulas against real TensorFlow).

Why there is no separate mean check: with every kept value exact and the kept set tested for
its rate, its structure and its independence from x (value_independence, call_independence),
E[y] is fixed; the design's bias against E[x] is reported as the mean_bias finding, with the
ratio measured on fn's own outputs.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from ...precision import (
    _scaled_native,
    apply_scale,
    exact_scale,
    scale_bound,
    scale_error,
    smallest_normal,
    ulp_distance,
    within_scale_bound,
)
from ...report import Check, Finding
from . import Family
from ._common import abs_sum, as_float64

GATHER = 200_000  # kept values kept per rate from failing calls, for the detail
MEAN_ELEMENTS = 1_000_000  # elements of the main calls in the measured mean ratio


def formula_text(f) -> str:
    return {
        "multiply": f"x * {f.factor!r} (fl(1/(1-rate)))",
        "divide": f"x / {f.factor!r} (1 - fl(rate))",
        "exact": "x / (1 - rate) correctly rounded",
    }[f.formula]


class Scale(Family):
    name = "scale"
    names = ("scale",)
    observes = frozenset({"main", "seed_other", "seed_repeat", "seed_far", "threshold", "probe", "backward", "long"})

    def __init__(self, run):
        super().__init__(run)
        self.rates = {}  # rate -> {"formula", "values", "calls", "xs", "ys", "gathered"}
        self.wants = {}  # (rate, formula, id of x) -> expected bits
        self.abs_total, self.mean_calls = 0.0, 0
        run.scale_formula = None

    def observe(self, call) -> None:
        st = self.rates.setdefault(
            call.rate,
            {
                "formula": None,
                "values": 0,
                "calls": 0,
                "bad": 0,
                "bound": 0,
                "worst": 0.0,
                "xs": [],
                "ys": [],
                "gathered": 0,
            },
        )
        st["calls"] += 1
        st["values"] += call.kept_elements
        if call.purpose == "main" and self.mean_calls * call.y.size < MEAN_ELEMENTS:
            self.abs_total += abs_sum(call.y)
            self.mean_calls += 1
        formulas = self.run.backend.scale_formulas(call.rate, self.cfg.dtype)
        if st["formula"] in formulas:  # the one that matched before, first
            formulas.remove(st["formula"])
            formulas.insert(0, st["formula"])
        uint = self.run.fmt.uint
        y_bits = call.y.view(uint)
        dropped = call.y.size - call.kept_elements
        for f in formulas:
            # x != 0, so a dropped position (y = +-0) always differs from x's scaled value
            if np.count_nonzero(y_bits ^ self.want(call.rate, f, call.x_np)) == dropped:
                if st["formula"] is None:
                    st["formula"] = f
                return
        kept = call.mask if call.mask.shape == call.y.shape else self.run.kept_elements(call.y)
        xs, ys = call.x_np[kept], call.y[kept]
        if self.cfg.exact_scale:  # no backend formula: the correctly rounded quotient, bit for bit
            exact = exact_scale(call.rate, self.cfg.dtype)
            sub = slice(0, 20_000) if self.cfg.dtype == "float64" else slice(None)  # float64: exact fractions
            if np.array_equal(apply_scale(xs[sub], exact), as_float64(ys[sub])):
                if st["formula"] is None:
                    st["formula"] = exact
                return
        elif within_scale_bound(xs, ys, call.rate, self.cfg.dtype).all():  # the contract: the rounding bound
            st["bound"] += 1
            st["worst"] = max(st["worst"], self.worst_error(xs, ys, call.rate))
            return
        st["bad"] += 1
        if st["gathered"] < GATHER:  # keep the kept values for the failure's detail
            st["xs"].append(xs)
            st["ys"].append(ys)
            st["gathered"] += xs.size

    def worst_error(self, xs, ys, rate) -> float:
        """The largest error in units of u among results in the dtype's normal range (below it
        rounding errors are absolute, and a relative error says nothing)."""
        normal = np.abs(as_float64(ys)) >= smallest_normal(self.cfg.dtype)
        err = scale_error(xs[normal], ys[normal], rate, self.cfg.dtype)
        return float(err.max()) if err.size else 0.0

    def want(self, rate, f, x_np) -> np.ndarray:
        key = (rate, f, x_np.size, x_np.ctypes.data)
        if key not in self.wants:
            self.wants[key] = _scaled_native(x_np, f).view(self.run.fmt.uint)
        return self.wants[key].reshape(x_np.shape)

    def conclude(self):
        cfg = self.cfg
        checked = sum(st["values"] for st in self.rates.values())
        calls = sum(st["calls"] for st in self.rates.values())
        # the rate asked for first, then the rate sweep's (which the detail names as such)
        order = sorted(self.rates.items(), key=lambda item: (item[0] != cfg.rate, item[0]))
        failures = [self.failure(rate, st) for rate, st in order if st["bad"]]
        if failures:
            return [failures[0] if len(failures) == 1 else self.merge(failures)]
        own = self.rates.get(cfg.rate, {}).get("formula")
        bounded = sum(st["bound"] for st in self.rates.values())
        if own is None and not bounded:
            return [Check("scale", None, detail="no kept values to check")]
        rates = ", ".join(f"{r:g}" for r in sorted(self.rates))
        b = scale_bound(cfg.rate, cfg.dtype)
        if bounded:  # the contract, not one framework's formula
            worst = max(st["worst"] for st in self.rates.values())
            named = ", ".join(formula_text(f) for f in self.run.backend.scale_formulas(cfg.rate, cfg.dtype))
            self.run.findings.append(
                Finding(
                    "scale_formula",
                    f"{cfg.dtype}: kept values are x/(1-rate) within the rounding bound (largest error {worst:.3g} u, "
                    f"bound {b.units:.3g} u, u = 2^{math.log2(b.unit_roundoff):.0f}) in {bounded} of {calls} calls; "
                    f"not bit-identical to {self.run.backend.name}'s formulas ({named}): exact_scale=True "
                    "(CLI --exact-scale) makes that a failure",
                    "bound",
                )
            )
            return [
                Check(
                    "scale",
                    True,
                    samples=checked,
                    observed=f"every kept value within {worst:.3g} u of x/(1-rate)",
                    expected=f"within the rounding bound, {b.units:.3g} u (u = {b.unit_roundoff:.3g}), at each rate",
                    detail=f"{checked:,} kept values of {calls} calls at rates {rates}; {bounded} calls within the "
                    "bound, the rest bit-identical to a formula",
                )
            ]
        self.run.scale_formula = own
        self.run.findings.append(
            Finding(
                "scale_formula",
                f"{cfg.dtype}: kept values are {formula_text(own)} (formula {own.formula!r}), bit for bit",
                own.formula,
            )
        )
        self.mean_finding(own)
        return [
            Check(
                "scale",
                True,
                samples=checked,
                observed=f"every kept value = {formula_text(own)}",
                expected="one reference formula, bit for bit, at each call's rate"
                if cfg.exact_scale
                else f"within the rounding bound, {b.units:.3g} u, at each call's rate",
                detail=f"{checked:,} kept values of {calls} calls at rates {rates}; formula {own.formula!r}",
            )
        ]

    def failure(self, rate, st) -> Check:
        """The calls at ``rate`` outside the contract: the closest formula and its distance, and
        (by default) how far outside the rounding bound the kept values lie."""
        cfg = self.cfg
        xs, ys = np.concatenate(st["xs"]), np.concatenate(st["ys"])
        got = as_float64(ys)
        formulas = self.run.backend.scale_formulas(rate, cfg.dtype) + [exact_scale(rate, cfg.dtype)]
        results = []
        # float64's correctly rounded quotient takes exact fractions: every formula is then compared on
        # the same first 20,000 values, so the closest one is chosen on equal terms
        sub = slice(0, 20_000) if cfg.dtype == "float64" else slice(None)
        for f in formulas:
            want = apply_scale(xs[sub], f)
            mismatch = int(np.count_nonzero(want != got[sub]))
            d = ulp_distance(want.astype(np.float64), got[sub], cfg.dtype)
            results.append((f, mismatch, int(d.max()), got[sub].size))
        f, mismatch, ulp, n = min(results, key=lambda r: (r[2], r[1]))
        with np.errstate(all="ignore"):
            ratio = got / as_float64(xs)
        finite = ratio[np.isfinite(ratio)]
        span = f"[{finite.min():.9g}, {finite.max():.9g}]" if finite.size else "no finite value"
        closest = f"closest formula {f.formula!r}: {mismatch:,} of {n:,} differ, largest distance {ulp} ULP"
        at = f"at rate {rate:g}" + ("" if rate == cfg.rate else " (the rate sweep's, used to test nesting)")
        if cfg.exact_scale:
            observed = f"{mismatch:,}/{n:,} differ from the closest formula ({f.formula}) {at}"
            expected = "x*fl(1/(1-rate)), x/(1-fl(rate)) or round(x/(1-rate))"
            head = f"{at}, {st['bad']} of {st['calls']} calls: no formula matches every kept value; "
        else:
            b = scale_bound(rate, cfg.dtype)
            outside = ~within_scale_bound(xs, ys, rate, cfg.dtype)
            err = scale_error(xs[outside], ys[outside], rate, cfg.dtype)
            observed = (
                f"{int(outside.sum()):,}/{xs.size:,} kept values outside the rounding bound {at} "
                f"(up to {float(err.max()):.3g} u)"
            )
            expected = f"y/x = 1/(1-rate) within {b.units:.3g} u (u = {b.unit_roundoff:.3g})"
            head = (
                f"{at}, {st['bad']} of {st['calls']} calls have kept values outside the rounding bound "
                f"of x/(1-rate) ({b.units:.3g} u); "
            )
        return Check(
            "scale",
            False,
            samples=sum(s["values"] for s in self.rates.values()),
            observed=observed,
            expected=expected,
            detail=f"{head}{closest}; y/x ranges over {span} where 1/(1-rate) = {1 / (1 - rate):.9g}",
            reproduce=cfg.reproduce(f"rate {rate:g}"),
        )

    @staticmethod
    def merge(failures) -> Check:
        first = failures[0]
        first.detail += "; also " + "; ".join(f.observed for f in failures[1:])
        return first

    def mean_finding(self, formula) -> None:
        """E[y]/E[x] of the design, keep / (1 - rate) times the formula's factor against
        1/(1 - rate), before each value's own rounding (which depends on x, not on fn); and the
        same ratio measured on fn's main outputs."""
        cfg, x_np = self.cfg, self.run.x_np
        if cfg.strict_nominal or not self.mean_calls:
            return
        ax_sum = abs_sum(x_np)
        ideal = Fraction(1) / (1 - Fraction(cfg.rate))
        factor = {"multiply": Fraction(formula.factor), "divide": 1 / Fraction(formula.factor)}.get(
            formula.formula, ideal
        )
        design = float(Fraction(cfg.keep) / (1 - Fraction(cfg.rate)) * factor / ideal)
        if abs(design - 1) < 1e-6:  # not worth a line (float32's keep probability is off by 6e-8)
            return
        parts = []
        if cfg.keep != 1 - cfg.rate:
            parts.append(f"keep {cfg.keep:.10g} instead of {1 - cfg.rate:.10g}")
        if abs(float(factor / ideal) - 1) > 1e-12:  # beyond the double rounding of rate itself
            parts.append(f"kept values scaled by {float(factor):.8g} instead of 1/(1-rate) = {float(ideal):.8g}")
        measured = self.abs_total / (self.mean_calls * ax_sum)
        self.run.findings.append(
            Finding(
                "mean_bias",
                f"{cfg.dtype} at rate {cfg.rate}: with this keep probability and this scale factor "
                f"E[y]/E[x] = {design:.8g} before each value's rounding, biased by {design - 1:+.3g} relative "
                f"({'; '.join(parts)})",
                design - 1,
                measured=(
                    f"sum|y|/sum|x| = {measured:.6g} over {self.mean_calls * x_np.size:,} elements of fn's outputs"
                ),
            )
        )
