"""Exact inference for a keep probability from k kept draws out of n.

``rate_test`` is the exact binomial test (scipy.stats.binomtest's p-values, whose two-sided
form sums every outcome no more likely than the one observed; _exact finds that set faster).
``proportion_ci`` gives Clopper–Pearson ("exact", guaranteed coverage), Wilson and Jeffreys
intervals.

n is at most 2**53 (``_checks.MAX_COUNT``): scipy computes in doubles, which hold no larger count
(past it scipy's answers are nan, wrong, a numpy TypeError or never come).  A keep probability
is 0 or at least 1e-290 (below, scipy's binomial pmf raises OverflowError).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from ._checks import check_binomial_p, check_choice, check_counts, check_open_unit, check_probability
from ._exact import beta_quantile, binom_two_sided_pvalue

__all__ = ["ProportionInterval", "RateTestResult", "proportion_ci", "rate_test"]

_METHODS = ("exact", "wilson", "jeffreys")
_ALTERNATIVES = ("two-sided", "less", "greater")


@dataclass(frozen=True)
class ProportionInterval:
    """A confidence interval for a proportion; unpacks as ``low, high``."""

    low: float
    high: float
    confidence_level: float
    method: str

    def __iter__(self):
        return iter((self.low, self.high))

    def __contains__(self, p) -> bool:
        p = check_probability(p, "p")
        return self.low <= p <= self.high

    def __repr__(self) -> str:
        return (
            f"ProportionInterval(low={self.low!r}, high={self.high!r}, "
            f"confidence_level={self.confidence_level!r}, method={self.method!r})"
        )


def proportion_ci(
    k, n, *, confidence_level: float = 0.95, method: str = "exact", alternative: str = "two-sided"
) -> ProportionInterval:
    """Confidence interval for a binomial proportion.

    method: "exact" (Clopper–Pearson, coverage >= confidence_level for every p and n),
    "wilson" (score interval without continuity correction, as scipy), or "jeffreys"
    (Beta(1/2, 1/2) posterior quantiles, with low = 0 at k = 0 and high = 1 at k = n).
    ``alternative`` gives one-sided intervals as in scipy ("less": [0, high]).
    """
    k, n = check_counts(k, n)
    cl = check_open_unit(confidence_level, "confidence_level")
    check_choice(method, "method", _METHODS)
    check_choice(alternative, "alternative", _ALTERNATIVES)
    tail = (1 - cl) / 2 if alternative == "two-sided" else 1 - cl
    want_low = alternative != "less"
    want_high = alternative != "greater"
    if method == "wilson":
        z = -special.ndtri(tail)
        p = k / n
        denom = 2 * (n + z * z)
        center = (2 * n * p + z * z) / denom
        delta = z / denom * np.sqrt(4 * n * p * (1 - p) + z * z)
        low = center - delta if (want_low and k > 0) else 0.0
        high = center + delta if (want_high and k < n) else 1.0
    else:
        a = 0.0 if method == "exact" else 0.5
        low = beta_quantile(k + a, n - k + 1 - a, tail) if (want_low and k > 0) else 0.0
        # the upper quantile from the complement: betaincinv(..., 1 - tail) rounds 1 - tail first,
        # which moved a 1 - 1e-15 interval's high end by 1.2e-5 relative
        high = beta_quantile(k + 1 - a, n - k + a, tail, upper=True) if (want_high and k < n) else 1.0
    return ProportionInterval(float(low), float(high), cl, method)


@dataclass(frozen=True, repr=False)
class RateTestResult:
    """Result of ``rate_test``, shaped like scipy's BinomTestResult."""

    k: int
    n: int
    keep_prob: float
    alternative: str
    statistic: float  # observed keep fraction k / n
    pvalue: float

    def proportion_ci(self, confidence_level: float = 0.95, method: str = "exact") -> ProportionInterval:
        return proportion_ci(
            self.k, self.n, confidence_level=confidence_level, method=method, alternative=self.alternative
        )

    def __repr__(self) -> str:
        return (
            f"RateTestResult(k={self.k}, n={self.n}, keep_prob={self.keep_prob!r}, "
            f"alternative={self.alternative!r}, statistic={self.statistic!r}, pvalue={self.pvalue!r})"
        )


def rate_test(kept, n, keep_prob, *, alternative: str = "two-sided") -> RateTestResult:
    """Exact binomial test that ``kept`` of ``n`` draws came from keep probability ``keep_prob``.

    Two-sided p-values sum every outcome whose probability is at most that of the observed
    one (scipy's rule, with its 1e-7 relative tolerance): the p-values are scipy's.
    """
    k, n = check_counts(kept, n, k_name="kept")
    p = check_binomial_p(keep_prob, "keep_prob")
    check_choice(alternative, "alternative", _ALTERNATIVES)
    if alternative == "two-sided":
        pvalue = binom_two_sided_pvalue(k, n, p)
    else:
        pvalue = float(stats.binomtest(k, n, p, alternative=alternative).pvalue)
    return RateTestResult(k, n, p, alternative, k / n, pvalue)
