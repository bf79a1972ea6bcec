"""noise_shape_consistency and noise_shape_units: a noise shape makes broadcast units, one draw
each.

Detects ``noise_shape`` ignored or misapplied (elements of one unit kept and dropped apart),
and units that are not one draw at the keep probability.  Without an explicit noise shape the
battery probes it: a 4-D input with noise shape (batch, 1, 1, channels) (the default shape's
elements reshaped, so the probe costs no new input).
Only these catch: ``corpus.ignores_noise_shape`` (noise_shape_consistency).
Tests: consistency is exact (any unit with mixed fate fails, on every call with a noise shape;
the mechanism check compares the probe's first units with the reference stream); units is the
exact binomial test of the probe's 65,536 kept units, in the run's Holm family (with an
explicit noise shape the keep-fraction check already counts units: not applicable, no share of
the budget).  Consistent probe units also feed the keep-fraction test.  Tested in tests/test_verify.py.
"""

from __future__ import annotations

import math

from ...binomial import rate_test
from ...report import Check
from . import Family

PROBE_UNITS = 1 << 16  # units the noise-shape probe draws


class NoiseShape(Family):
    name = "noise_shape"
    names = ("noise_shape_consistency", "noise_shape_units")
    observes = frozenset({"main", "probe", "seed_other", "seed_repeat", "seed_far", "threshold", "backward", "long"})

    def __init__(self, run):
        super().__init__(run)
        self.inconsistent, self.units = 0, 0  # over every call with the configured noise shape
        self.tally = {"inconsistent": 0, "kept": 0, "n": 0}

    def applies(self) -> bool:
        return self.cfg.probe is not None or self.cfg.noise_shape is not None

    def statistical(self):
        return ["noise_shape_units"] if self.cfg.noise_shape is None else []  # the probe's units

    def before_main(self) -> None:
        cfg, run = self.cfg, self.run
        if cfg.noise_shape is not None:
            return
        shape, noise = cfg.probe
        # every probe shape config.py makes holds the main input's values: a reshape costs nothing
        x, x_np = run.backend.reshape(run.x, shape), run.x_np.reshape(shape)
        # the rate is keep_fraction's job (the probe's units feed it); this checks that units
        # are one draw each: 2**16 units suffice for the exact binomial test to see a gross error
        self.calls = min(math.ceil(PROBE_UNITS / math.prod(noise)), cfg.max_calls)
        for i in range(self.calls):
            run.call("probe", cfg.rate, run.seed_pair(i, offset=2), noise, x=x, x_np=x_np, index=i, fresh=True)

    def observe(self, call) -> None:
        if call.noise_shape is None:
            return
        if call.purpose != "probe":
            self.inconsistent += call.inconsistent
            self.units += call.mask.size
            return
        t = self.tally
        t["inconsistent"] += call.inconsistent
        t["kept"] += call.kept
        t["n"] += call.mask.size

    def conclude(self):
        cfg = self.cfg
        if cfg.noise_shape is not None:
            return [
                self.consistency(self.inconsistent, self.units, cfg.noise_shape),
                Check(
                    "noise_shape_units",
                    None,
                    "statistical",
                    detail="the keep_fraction check counts the units (one draw per broadcast unit)",
                ),
            ]
        shape, noise = cfg.probe
        kept, n = self.tally["kept"], self.tally["n"]
        check = self.consistency(self.tally["inconsistent"], n, noise)
        r = rate_test(kept, n, cfg.keep)
        units = Check(
            "noise_shape_units",
            True,
            "statistical",
            r.pvalue,
            None,
            n,
            values={"kept": kept, "n": n, "fraction": kept / n, "expected": cfg.keep},
            observed=f"{kept}/{n} units kept = {kept / n:.6g}",
            expected=f"{cfg.keep:.10g}",
            detail=f"x {list(shape)}, noise_shape {list(noise)}: one draw per unit, {self.calls} "
            f"call{'s' if self.calls > 1 else ''}",
            reproduce=cfg.reproduce(f"x of shape {list(shape)}, noise_shape={list(noise)}"),
        )
        return [check, units]

    def consistency(self, inconsistent: int, units: int, noise_shape) -> Check:
        return Check(
            "noise_shape_consistency",
            inconsistent == 0,
            samples=units,
            values={"inconsistent": inconsistent, "units": units},
            observed=f"{inconsistent} of {units:,} units with mixed fate",
            expected="every element of a broadcast unit kept or dropped together",
            detail=""
            if inconsistent == 0
            else f"noise_shape {list(noise_shape)} ignored or misapplied: {inconsistent} units have kept "
            "and dropped elements",
            reproduce=self.cfg.reproduce(f"noise_shape={list(noise_shape)}"),
        )
