"""noise_shape_consistency and noise_shape_units: a noise shape makes broadcast units, one draw
each.

Detects ``noise_shape`` ignored or misapplied (elements of one unit kept and dropped apart),
and units that are not one draw at the keep probability.  Without an explicit noise shape the
battery probes it: a 4-D input with noise shape (batch, 1, 1, channels) (the default shape's
elements reshaped, so the probe costs no new input).
Only these catch: ``corpus.ignores_noise_shape`` (noise_shape_consistency).
Tests: consistency is exact (any unit with mixed fate fails; on the probe's first call the
units are also compared with the reference stream); units is the exact binomial test of the
probe's kept units, in the run's Holm family (with an explicit noise shape the keep-fraction
check already counts units and this entry passes with p = 1).  Tested in tests/test_verify.py.
"""
from __future__ import annotations

import math

import numpy as np

from ...binomial import rate_test
from ...design import min_num_samples_for_rate_test
from ...report import Check
from . import Family


class NoiseShape(Family):
    name = "noise_shape"
    names = ("noise_shape_consistency", "noise_shape_units")
    observes = frozenset({"main", "probe"})

    def __init__(self, run):
        super().__init__(run)
        self.main_inconsistent = 0
        self.tally = {"inconsistent": 0, "kept": 0, "n": 0, "mismatches": 0}
        self.want = None

    def applies(self) -> bool:
        return self.cfg.probe is not None or self.cfg.noise_shape is not None

    def statistical(self):
        return ["noise_shape_units"]

    def after_main(self) -> None:
        cfg, run = self.cfg, self.run
        if cfg.noise_shape is not None:
            return
        shape, noise = cfg.probe
        # the probe's x holds as many values as the main one (a reshape costs nothing)
        if math.prod(shape) == run.x_np.size:
            x, x_np = run.backend.reshape(run.x, shape), run.x_np.reshape(shape)
        else:
            x_np = run.kind.make_input(shape, cfg.dtype, cfg.seed + 1)
            x = run.backend.native(x_np)
        units = int(np.prod(noise))
        calls = max(1, math.ceil(min_num_samples_for_rate_test(
            cfg.keep, min(4 * cfg.delta, 0.5 * max(cfg.keep, 1 - cfg.keep)), false_fail_rate=cfg.alpha,
            false_pass_rate=cfg.beta) / units))
        # the rate itself is keep_fraction's job; this checks units are draws: 2**18 units suffice
        self.calls = min(calls, max(1, (1 << 18) // units), cfg.max_calls)
        if not cfg.stateful and cfg.reference is not None:
            self.want = run.backend.reference_keep(noise, run.seed_pair(0, offset=2), cfg.dtype, cfg.rate,
                                                   cfg.reference)
        for i in range(self.calls):
            run.call("probe", cfg.rate, run.seed_pair(i, offset=2), noise, x=x, x_np=x_np, index=i)

    def observe(self, call) -> None:
        if call.purpose == "main":
            self.main_inconsistent += call.inconsistent
            return
        t = self.tally
        t["inconsistent"] += call.inconsistent
        t["kept"] += call.kept
        t["n"] += call.mask.size
        if call.index == 0 and self.want is not None:
            t["mismatches"] = int(np.count_nonzero(self.want != call.mask))

    def conclude(self):
        cfg, run = self.cfg, self.run
        if cfg.noise_shape is not None:
            units_n = run.main_calls * run.units
            return [self.consistency(self.main_inconsistent, units_n, cfg.noise_shape),
                    Check("noise_shape_units", True, "statistical", 1.0, None, units_n,
                          detail="units counted by the keep_fraction check (one draw per broadcast unit)")]
        shape, noise = cfg.probe
        kept, n, mismatches = self.tally["kept"], self.tally["n"], self.tally["mismatches"]
        check = self.consistency(self.tally["inconsistent"], n, noise)
        if mismatches:
            check.passed = False
            check.detail = (check.detail + "; " if check.detail else "") + (
                f"{mismatches} of {int(np.prod(noise))} units differ from stateless_uniform(noise_shape) >= rate")
        r = rate_test(kept, n, cfg.keep)
        units = Check(
            "noise_shape_units", True, "statistical", r.pvalue, None, n,
            observed=f"{kept}/{n} units kept = {kept / n:.6g}", expected=f"{cfg.keep:.10g}",
            detail=f"x {list(shape)}, noise_shape {list(noise)}: one draw per unit, {self.calls} calls",
            reproduce=cfg.reproduce(f"x of shape {list(shape)}, noise_shape={list(noise)}"))
        return [check, units]

    def consistency(self, inconsistent: int, units: int, noise_shape) -> Check:
        return Check("noise_shape_consistency", inconsistent == 0, samples=units,
                     observed=f"{inconsistent} of {units:,} units with mixed fate",
                     expected="every element of a broadcast unit kept or dropped together",
                     detail="" if inconsistent == 0 else
                     f"noise_shape {list(noise_shape)} ignored or misapplied: {inconsistent} units have kept "
                     "and dropped elements",
                     reproduce=self.cfg.reproduce(f"noise_shape={list(noise_shape)}"))
