"""threshold_nesting and threshold_flips: the mask is a threshold of one uniform per unit.

Detects a mask that is not one uniform draw per unit compared with the rate: a different draw
per rate, another rule at some rates, a uniform too coarse for the rate.  One seed, a sweep of
rates (rate / 2, rate, (1 + rate) / 2) on the input's first rows (about 65,000 elements): a unit
kept at a higher rate must be kept at every lower one (nesting), and the share of units that flip between two rates must
be keep(lower) - keep(higher) (flips).  This is the black-box proof of the ``U >= rate``
mechanism when no reference stream applies (reference=None, another framework's RNG).
Only these catch: ``corpus.redraws_above_half`` (a fresh uniform for rates above 0.5: right at
the configured rate, a different mask at the higher one).
Tests: nesting is exact (any violation fails); flips is the exact binomial test per rate pair,
Bonferroni inside, in the run's Holm family.  Stateless contract only.  Tested in
tests/test_verify.py.
"""

from __future__ import annotations

import numpy as np

from ...binomial import rate_test
from ...report import Check, Finding
from . import Family


class Threshold(Family):
    name = "threshold"
    names = ("threshold_nesting", "threshold_flips")
    observes = frozenset({"threshold"})

    def __init__(self, run):
        super().__init__(run)
        self.masks = {}

    def applies(self) -> bool:
        return not self.cfg.stateful

    def statistical(self):
        rates = self.rates()
        required = self.cfg.threshold_required  # reported only: no share of the budget
        return ["threshold_flips"] if required and self.cfg.rate in rates and len(rates) >= 2 else []

    def rates(self) -> list[float]:
        cfg, run = self.cfg, self.run
        rates = sorted({cfg.rate, cfg.rate / 2, cfg.rate + (1 - cfg.rate) / 2})
        return [r for r in rates if 0 < run.keep_of(r) < 1]

    def before_main(self) -> None:
        cfg, run = self.cfg, self.run
        rates = self.rates()
        if cfg.rate not in rates or len(rates) < 2:
            return
        self.masks = {r: [] for r in rates}
        x, x_np, ns = run.small_input()
        for r in rates:  # one seed, every rate: the call at the configured rate is a fresh draw too
            run.call("threshold", r, run.seed_pair(0, offset=4), ns, x=x, x_np=x_np, fresh=True)

    def observe(self, call) -> None:
        self.masks[call.rate].append(call.mask)

    def conclude(self):
        cfg = self.cfg
        if not self.masks:
            return [
                Check("threshold_nesting", None, detail="no rate sweep possible here"),
                Check("threshold_flips", None, "statistical", detail="no rate sweep"),
            ]
        rates = sorted(self.masks)
        keep = {r: self.run.keep_of(r) for r in rates}
        violations, total = 0, 0
        flips_p, details = [], []
        for lo, hi in zip(rates, rates[1:], strict=False):
            flips, size = 0, 0
            for a, b in zip(self.masks[lo], self.masks[hi], strict=True):
                kept_lo, kept_hi, both = (int(np.count_nonzero(v)) for v in (a, b, a & b))
                violations += kept_hi - both  # kept at the higher rate, dropped at the lower
                flips += kept_lo - both
                size += a.size
            share = float(keep[lo] - keep[hi])
            r = rate_test(flips, size, share)
            flips_p.append(r.pvalue)
            total += size
            details.append(f"{lo:.4g}->{hi:.4g}: {flips}/{size} flipped, expected share {share:.6g}")
        nesting = Check(
            "threshold_nesting",
            violations == 0,
            samples=total,
            values={"violations": violations},
            observed=f"{violations} positions kept at a higher rate but dropped at a lower one",
            expected="kept(higher rate) is a subset of kept(lower rate) for one seed",
            detail="" if violations == 0 else "the mask is not a threshold of one uniform draw per position",
            reproduce=cfg.reproduce(f"rates {rates}, seed {list(self.run.seed_pair(0, offset=4))}"),
        )
        flips = Check(
            "threshold_flips",
            True,
            "statistical",
            min(1.0, min(flips_p) * len(flips_p)),
            None,
            total,
            observed=f"{len(details)} rate pair{'s' if len(details) > 1 else ''}",
            expected="flip share = keep(lower) - keep(higher)",
            detail="exact binomial test per rate pair (Bonferroni inside): " + "; ".join(details),
            reproduce=cfg.reproduce(),
        )
        if cfg.threshold_required:
            return [nesting, flips]
        return self.reported(nesting, flips, rates)

    def reported(self, nesting, flips, rates) -> list:
        """Not required (no reference and mechanism="auto", or mechanism=None): the verdicts become a
        finding, and the entries say so."""
        cfg = self.cfg
        pvalue, violations = flips.pvalue, nesting.values["violations"]
        nests = violations == 0 and pvalue > cfg.alpha
        how = (
            "mechanism=None"
            if cfg.mechanism is None
            else "no reference stream: pass mechanism='threshold' (CLI --mechanism threshold) to require it"
        )
        self.run.findings.append(
            Finding(
                "threshold_mechanism",
                (
                    f"the masks at rates {', '.join(f'{r:g}' for r in rates)} (one seed) nest: consistent with one "
                    "uniform per unit compared with the rate"
                    if nests
                    else f"the masks at rates {', '.join(f'{r:g}' for r in rates)} (one seed) do not nest "
                    f"({violations:,} positions kept at a higher rate but dropped at a lower one; "
                    f"flips p = {pvalue:.3g}): "
                    "each rate draws its own mask (a Bernoulli draw per rate, as numpy's binomial), which is correct "
                    "dropout but not the threshold mechanism"
                )
                + f" (reported, not required: {how})",
                nests,
            )
        )
        note = f"reported, not required ({how}); rates {', '.join(f'{r:g}' for r in rates)}, used to test nesting"
        nesting.passed, nesting.detail = None, f"{note}: {nesting.observed}"
        flips = Check(
            "threshold_flips",
            None,
            observed=flips.observed,
            expected=flips.expected,
            samples=flips.samples,
            detail=f"{note}: exact p = {pvalue:.3g}; {flips.detail}",
        )
        return [nesting, flips]
