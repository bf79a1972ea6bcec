"""A sequential rate test: draw until the verdict is clear, with the fixed-n test's error rates.

Two one-sided sequential probability ratio tests, keep_prob against keep_prob - discrepancy and
against keep_prob + discrepancy, watched after every batch.  Their guarantees come from
Ville's inequality (a likelihood ratio is a non-negative martingale), so they hold at any
stopping time, with no normal approximation and no overshoot correction:

* fail when a likelihood ratio reaches sides / alpha_seq: false-fail <= alpha_seq;
* a side is cleared (for good) when its ratio falls to beta / 2: a wrong keep probability at
  that side's alternative clears it with probability <= beta / 2;
* truncation: at ``n_max`` draws the exact fixed-n test at level alpha_term, sized to catch
  the discrepancy with false-pass beta / 2, decides.

alpha_seq + alpha_term = false_fail_rate; the false-pass rate is at most beta.  Under the null
the test stops after about a quarter of the fixed-n test's draws, under the alternative after
about half (benchmarks/sequential.py measures it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._checks import (
    MAX_COUNT,
    MAX_COUNT_TEXT,
    check_binomial_p,
    check_callable,
    check_count,
    check_open_unit,
    check_positive,
    show,
)
from .binomial import rate_test
from .design import _alternatives, _region, min_num_samples_for_rate_test

__all__ = ["SequentialRateTest", "SequentialResult", "sequential_rate_test"]

_TERMINAL_SHARE = 0.1  # share of the false-fail budget kept for the truncation test


@dataclass(frozen=True)
class SequentialResult:
    passed: bool
    kept: int
    n: int
    n_max: int
    keep_prob: float
    discrepancy: float
    reason: str
    pvalue: float  # exact two-sided p-value of all the draws (for the report; not the verdict)

    @property
    def statistic(self) -> float:
        return self.kept / self.n if self.n else float("nan")


class SequentialRateTest:
    """Feed batches with ``update(kept, n)`` until ``verdict`` is "pass" or "fail"."""

    def __init__(self, keep_prob, discrepancy, *, false_fail_rate=1e-6, false_pass_rate=1e-3):
        self.keep_prob = check_binomial_p(keep_prob, "keep_prob", closed=False)
        self.discrepancy = check_positive(discrepancy, "discrepancy")
        self.false_fail_rate = check_open_unit(false_fail_rate, "false_fail_rate")
        self.false_pass_rate = check_open_unit(false_pass_rate, "false_pass_rate")
        p = self.keep_prob
        self._alts = _alternatives(p, self.discrepancy)
        for name in ("false_fail_rate", "false_pass_rate"):
            if getattr(self, name) < 1e-300:  # subnormal: the truncation test's share of it underflows to 0
                raise ValueError(f"{name} ({getattr(self, name)!r}) must be >= 1e-300")
        alpha_term = self.false_fail_rate * _TERMINAL_SHARE
        self._alpha_term = alpha_term
        alpha_seq = self.false_fail_rate - alpha_term
        self._log_fail = math.log(len(self._alts) / alpha_seq)
        self._log_clear = math.log(self.false_pass_rate / 2)
        self.n_max = min_num_samples_for_rate_test(
            p, self.discrepancy, false_fail_rate=alpha_term, false_pass_rate=self.false_pass_rate / 2
        )
        # per-draw log likelihood-ratio increments for a kept and a dropped draw, per side
        self._steps = [(_log_ratio(q, p), _log_ratio(1 - q, 1 - p)) for q in self._alts]
        self._cleared = [False] * len(self._alts)
        self.kept = 0
        self.n = 0
        self.verdict = "continue"
        self.reason = ""

    def remaining(self) -> int:
        return max(0, self.n_max - self.n)

    def log_likelihood_ratios(self) -> list[float]:
        return [_llr(self.kept, self.n - self.kept, s) for s in self._steps]

    def update(self, kept, n) -> str:
        """Add a batch of ``kept`` out of ``n`` informative draws; return the verdict so far."""
        if self.verdict != "continue":
            raise RuntimeError(f"the test has already ended ({self.verdict})")
        n = check_count(n, "n")
        kept = check_count(kept, "kept")
        if kept > n:
            raise ValueError(f"kept ({show(kept)}) must be <= n ({show(n)})")
        if self.n + n > MAX_COUNT:  # the binomial layer's limit (the truncation test is exact)
            raise ValueError(
                f"n ({show(n)}) would bring the test to {show(self.n + n)} draws, more than {MAX_COUNT_TEXT} (the "
                "exact binomial functions compute in double precision)"
            )
        self.kept += kept
        self.n += n
        for i, llr in enumerate(self.log_likelihood_ratios()):
            if self._cleared[i]:
                continue
            if llr >= self._log_fail:
                q = self._alts[i]
                self.verdict = "fail"
                self.reason = (
                    f"likelihood ratio for keep {q:.6g} against {self.keep_prob:.6g} "
                    f"reached e^{llr:.1f} >= e^{self._log_fail:.1f} after {self.n} draws"
                )
                return self.verdict
            if llr <= self._log_clear:
                self._cleared[i] = True
        if all(self._cleared):
            self.verdict = "pass"
            self.reason = f"every alternative ruled out after {self.n} draws"
        elif self.n >= self.n_max:
            region = _region(self.n, self.keep_prob, self._alpha_term)
            self.verdict = "fail" if region.rejects(self.kept) else "pass"
            self.reason = (
                f"truncated at {self.n} draws: exact test at level {self._alpha_term:.3g} "
                f"{'rejects' if self.verdict == 'fail' else 'accepts'}"
            )
        return self.verdict

    def stop(self) -> str:
        """End early (a draw budget ran out): the exact test at level alpha_term decides on the
        draws so far.  The false-fail rate still holds; the false-pass rate is only that of
        this smaller n (see min_discrepancy_detectable)."""
        if self.verdict != "continue":
            return self.verdict
        if self.n == 0:
            raise RuntimeError("no draws yet: nothing to decide on")
        region = _region(self.n, self.keep_prob, self._alpha_term)
        self.verdict = "fail" if region.rejects(self.kept) else "pass"
        self.reason = (
            f"stopped early at {self.n} of up to {self.n_max} draws: exact test at level "
            f"{self._alpha_term:.3g} {'rejects' if self.verdict == 'fail' else 'accepts'}"
        )
        return self.verdict

    def result(self) -> SequentialResult:
        if self.verdict == "continue":
            raise RuntimeError("the test has not ended: call update() until verdict != 'continue'")
        # an ended test holds draws: update() cannot end on none, stop() refuses to
        pvalue = rate_test(self.kept, self.n, self.keep_prob).pvalue
        return SequentialResult(
            self.verdict == "pass", self.kept, self.n, self.n_max, self.keep_prob, self.discrepancy, self.reason, pvalue
        )


def _log_ratio(a: float, b: float) -> float:
    return math.log(a / b) if a > 0 else -math.inf


def _llr(kept: int, dropped: int, steps) -> float:
    up, down = steps
    total = 0.0
    for count, step in ((kept, up), (dropped, down)):
        if count:
            total += count * step
    return total


def sequential_rate_test(
    draw, keep_prob, discrepancy, *, false_fail_rate=1e-6, false_pass_rate=1e-3, batch=None
) -> SequentialResult:
    """Run the sequential test with ``draw(m) -> (kept, n)`` supplying about m new draws.

    ``batch`` defaults to n_max / 64: small enough that stopping wastes little, large enough
    that the per-call overhead of the sampler stays small.
    """
    check_callable(draw, "draw")
    test = SequentialRateTest(keep_prob, discrepancy, false_fail_rate=false_fail_rate, false_pass_rate=false_pass_rate)
    size = check_count(batch, "batch", minimum=1) if batch is not None else max(1, test.n_max // 64)
    while test.verdict == "continue":
        got = draw(min(size, test.remaining()))
        try:
            kept, n = got
        except (TypeError, ValueError):
            raise TypeError(f"draw(m) must return (kept, n), not {show(got)}") from None
        kept, n = check_count(kept, "draw(m)'s kept"), check_count(n, "draw(m)'s n")
        if n == 0:
            raise RuntimeError("draw returned no informative draws")
        test.update(kept, n)
    return test.result()
