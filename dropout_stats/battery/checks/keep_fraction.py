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

from ...binomial import proportion_ci, rate_test
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
        self.tests = None  # [(label, keep, SequentialRateTest)], one per distinct keep of cfg.keep_models
        self.drawn = 0

    def statistical(self):
        return ["keep_fraction"]

    def _design(self):
        if self.tests is None:
            cfg, a = self.cfg, self.run.alpha_seq
            models = cfg.keep_models or [("", lambda r: cfg.keep)]
            distinct = {}
            for label, keep_of in models:
                keep = float(keep_of(cfg.rate))
                if 0 < keep < 1 or not distinct:  # a model that keeps all or none at a rate keeping some: not it
                    distinct.setdefault(keep, label)
            # the run passes when any model's test passes: each at the full level (a correct
            # implementation has one of these keeps: its own test fails with probability <= a),
            # each at false-pass beta / m (a wrong keep passes some test with probability <= beta)
            beta = cfg.beta / len(distinct)
            try:
                self.tests = [
                    (label, keep, SequentialRateTest(keep, cfg.delta, false_fail_rate=a, false_pass_rate=beta))
                    for keep, label in distinct.items()
                ]
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
        return self.tests

    @property
    def verdict(self) -> str:
        verdicts = [t.verdict for _, _, t in self._design()]
        return "pass" if "pass" in verdicts else "continue" if "continue" in verdicts else "fail"

    def more(self) -> bool:
        self._design()
        if self.drawn == 0 and self.run.main_calls >= MIN_CALLS:  # every unit of mixed fate: more would be too
            return False
        return self.verdict == "continue" or self.drawn < self.min_n or self.run.main_calls < MIN_CALLS

    def on_call(self, call) -> None:
        # every fresh draw at the configured rate is evidence, whichever check asked for it;
        # units of mixed fate are not draws (noise_shape_consistency fails them)
        if not call.fresh or call.inconsistent:
            return
        tests = self._design()
        self.drawn += call.mask.size
        if self.verdict == "continue":
            for _, _, test in tests:
                if test.verdict == "continue":
                    test.update(call.kept, call.mask.size)

    def conclude(self):
        cfg, run = self.cfg, self.run
        alpha_seq = run.alpha_seq
        tests = self._design()
        if tests[0][2].n == 0:  # every call's units had mixed fate (only with a noise shape): no draw to count
            return [
                Check(
                    "keep_fraction",
                    None,
                    "statistical",
                    detail=f"no draws: every call had units with kept and dropped elements "
                    f"(noise_shape {list(cfg.noise_shape)} ignored, see noise_shape_consistency)",
                )
            ]
        results = []
        for label, keep, test in tests:
            if test.verdict == "continue":
                test.stop()
            results.append((label, keep, test, test.result()))
        first = results[0][2]
        truncated = run.main_calls >= cfg.max_calls and first.n < first.n_max
        if truncated:
            run.findings.append(
                Finding(
                    "sample_size",
                    f"shape {list(cfg.shape)} gives {run.units} draws per call: max_calls ({cfg.max_calls}) "
                    f"calls gave {first.n:,} draws of the {first.n_max:,} the design may need; the keep-fraction check "
                    "detects less than the requested discrepancy (its detail says how much)",
                    first.n,
                )
            )
        passed = [r for r in results if r[3].passed]
        # the model reported: the first passing one in the documented order (the backend's own, an
        # exact Bernoulli draw, then the uniform grids), not the best fit: models a few ULP apart
        # are indistinguishable, and the report should not name one by chance
        label, keep, test, res = passed[0] if passed else results[0]
        if len(results) > 1 and passed:
            cfg.keep = keep  # the later checks (agreement p^2 + q^2, units, flips) use the model that fits
            run.keep_model = dict(cfg.keep_models)[label]
            run.findings.append(
                Finding(
                    "keep_model",
                    f"the kept fraction {res.kept / res.n:.6g} is consistent with {label}: keep {keep:.10g} at rate "
                    f"{cfg.rate} in {cfg.dtype} (exact p = {res.pvalue:.3g}); {len(passed)} of the {len(results)} "
                    "distinct keeps of documented correct mechanisms fit, and the first in their order is named",
                    keep,
                )
            )
        # the exact interval at the test's level (1 - 1e-15 at most: 1 - 1e-30 is 1.0 in floats)
        ci = proportion_ci(res.kept, res.n, confidence_level=1 - max(alpha_seq, 1e-15))
        # the sequential design guarantees the discrepancy; only a run cut short by max_calls
        # detects less, and then the detail says how much
        weaker = ""
        if truncated:
            detectable = min_discrepancy_detectable(keep, res.n, false_fail_rate=alpha_seq, false_pass_rate=cfg.beta)
            weaker = f"; cut short by max_calls, the {res.n:,} draws used detect only +-{detectable:.3g}"
        fixed_n = min_num_samples_for_rate_test(keep, cfg.delta, false_fail_rate=alpha_seq, false_pass_rate=cfg.beta)
        if len(results) == 1:
            expected = f"{keep:.10g}" + (" (1 - rate)" if cfg.strict_nominal else f" (exact for {cfg.dtype})")
            how = f"designed to catch keep {keep:.6g} +- {cfg.delta:.3g} with false-pass <= {cfg.beta:g}"
        else:
            keeps = sorted({k for _, k, _, _ in results})
            expected = f"one of {len(keeps)} documented correct keeps, {keeps[0]:.10g} to {keeps[-1]:.10g}"
            how = (
                f"{len(results)} documented correct keeps tested, the run passing if one passes; designed to catch a "
                f"keep {cfg.delta:.3g} away from all of them with false-pass <= {cfg.beta:g}"
            )
        reason = res.reason if passed or len(results) == 1 else "every correct keep rejected; " + res.reason
        if not passed and not cfg.strict_nominal and keep != 1 - cfg.rate:
            nominal = rate_test(res.kept, res.n, 1 - cfg.rate).pvalue
            if nominal > alpha_seq:  # an RNG of its own that keeps 1 - rate: correct, and the report says how
                reason += (
                    f"; the draws fit 1 - rate = {1 - cfg.rate:.10g} (exact p = {nominal:.3g}): an RNG of its own "
                    "keeps that; reference=None (CLI --no-reference) accepts every documented correct keep, "
                    "strict_nominal=True demands 1 - rate"
                )
        return [
            Check(
                "keep_fraction",
                bool(passed),
                "statistical",
                res.pvalue,
                alpha_seq,
                res.n,
                observed=f"{res.kept}/{res.n} = {res.kept / res.n:.6g}",
                expected=expected,
                interval=(ci.low, ci.high),
                values={"kept": res.kept, "n": res.n, "fraction": res.kept / res.n, "expected": keep},
                detail=f"sequential test: {reason}; {how} (fixed-n would need {fixed_n:,})" + weaker,
                reproduce=cfg.reproduce(),
            )
        ]
