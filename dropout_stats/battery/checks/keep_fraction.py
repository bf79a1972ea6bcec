"""keep_fraction: the share of kept units is the keep probability a correct implementation has.

Detects a wrong rate: a rate off by 1% of min(rate, 1 - rate), a threshold compared the wrong
way, a rate rounded to a coarse grid.  The keep probability expected is the backend's
dtype-exact one (TensorFlow's bfloat16 keeps 102/128 at rate 0.2), or 1 - rate with
``strict_nominal``.
Only this check catches: ``corpus.rate_offset`` with reference=None (drops where U < rate +
0.002 at every rate: the scale is TensorFlow's, the flips between rates are right, every
structure check is right; only the rate is 1% off).
Test: a sequential exact test (two SPRTs with Ville boundaries, truncated by the exact binomial
test; sequential.py) at alpha / m of the run's false-fail budget, which detects
``discrepancy`` with false-pass rate <= false_pass_rate; it also drives the main sequence: calls
go on until it decides and the other checks' minimum sizes are met.  Every fresh call at the
configured rate feeds it (the probe's units, the seed checks' calls, the rate sweep's), so the
main sequence stops sooner.
Tested in tests/test_verify.py (corpus) and tests/test_sequential.py (error rates).
"""

from __future__ import annotations

from ...binomial import proportion_ci
from ...design import SampleSizeTooLarge, min_discrepancy_detectable, min_num_samples_for_rate_test
from ...report import Check, Finding
from ...sequential import SequentialRateTest
from ..config import MIN_CALLS
from . import Family


class KeepFraction(Family):
    name = "keep_fraction"
    names = ("keep_fraction",)

    def __init__(self, run):
        super().__init__(run)
        self.test = None
        self.drawn = 0

    def statistical(self):
        return ["keep_fraction"]

    def _design(self):
        if self.test is None:
            cfg, a = self.cfg, self.run.alpha_seq
            try:
                self.test = SequentialRateTest(cfg.keep, cfg.delta, false_fail_rate=a, false_pass_rate=cfg.beta)
            except SampleSizeTooLarge:  # a keep probability near 0 or 1 with its default discrepancy
                raise ValueError(
                    f"rate ({cfg.rate!r}): testing the keep probability {cfg.keep:.15g} for a discrepancy of "
                    f"{cfg.delta:.3g} (discrepancy=; by default 1% of min(keep, 1 - keep)) would take more than "
                    "1e15 draws; pass a larger discrepancy"
                ) from None
            # the structure checks need enough draws to see a 4x larger effect
            self.min_n = min_num_samples_for_rate_test(
                cfg.keep,
                min(4 * cfg.delta, 0.5 * max(cfg.keep, 1 - cfg.keep)),
                false_fail_rate=a,
                false_pass_rate=cfg.beta,
            )
        return self.test

    def more(self) -> bool:
        test = self._design()
        if self.drawn == 0 and self.run.main_calls >= MIN_CALLS:  # every unit of mixed fate: more would be too
            return False
        return test.verdict == "continue" or self.drawn < self.min_n or self.run.main_calls < MIN_CALLS

    def on_call(self, call) -> None:
        # every fresh draw at the configured rate is evidence, whichever check asked for it;
        # units of mixed fate are not draws (noise_shape_consistency fails them)
        if not call.fresh or call.inconsistent:
            return
        test = self._design()
        self.drawn += call.mask.size
        if test.verdict == "continue":
            test.update(call.kept, call.mask.size)

    def conclude(self):
        cfg, test, run = self.cfg, self.test, self.run
        alpha_seq = run.alpha_seq
        if test.n == 0:  # every call's units had mixed fate (only with a noise shape): no draw to count
            return [
                Check(
                    "keep_fraction",
                    None,
                    "statistical",
                    detail=f"no draws: every call had units with kept and dropped elements "
                    f"(noise_shape {list(cfg.noise_shape)} ignored, see noise_shape_consistency)",
                )
            ]
        truncated = run.main_calls >= cfg.max_calls and test.n < test.n_max
        if test.verdict == "continue":
            test.stop()
            run.findings.append(
                Finding(
                    "sample_size",
                    f"shape {list(cfg.shape)} gives {run.units} draws per call: max_calls ({cfg.max_calls}) "
                    f"calls gave {test.n:,} draws of the {test.n_max:,} the design may need; the keep-fraction check "
                    "detects less than the requested discrepancy (its detail says how much)",
                    test.n,
                )
            )
        res = test.result()
        # the exact interval at the test's level (1 - 1e-15 at most: 1 - 1e-30 is 1.0 in floats)
        ci = proportion_ci(res.kept, res.n, confidence_level=1 - max(alpha_seq, 1e-15))
        # the sequential design guarantees the discrepancy; only a run cut short by max_calls
        # detects less, and then the detail says how much
        weaker = ""
        if truncated:
            detectable = min_discrepancy_detectable(
                cfg.keep, res.n, false_fail_rate=alpha_seq, false_pass_rate=cfg.beta
            )
            weaker = f"; cut short by max_calls, the {res.n:,} draws used detect only +-{detectable:.3g}"
        fixed_n = min_num_samples_for_rate_test(
            cfg.keep, cfg.delta, false_fail_rate=alpha_seq, false_pass_rate=cfg.beta
        )
        return [
            Check(
                "keep_fraction",
                res.passed,
                "statistical",
                res.pvalue,
                alpha_seq,
                res.n,
                observed=f"{res.kept}/{res.n} = {res.kept / res.n:.6g}",
                expected=f"{cfg.keep:.10g}" + (" (1 - rate)" if cfg.strict_nominal else f" (exact for {cfg.dtype})"),
                interval=(ci.low, ci.high),
                values={"kept": res.kept, "n": res.n, "fraction": res.kept / res.n, "expected": cfg.keep},
                detail=(
                    f"sequential test: {res.reason}; designed to catch keep {cfg.keep:.6g} +- {cfg.delta:.3g} "
                    f"with false-pass <= {cfg.beta:g} (fixed-n would need {fixed_n:,})" + weaker
                ),
                reproduce=cfg.reproduce(),
            )
        ]
