"""dropout-stats explain: why Dropout(rate) on N units does not zero exactly rate*N of them."""

from __future__ import annotations

from ._common import EXIT_OK, UsageError, wrap100
from .plots import explain_plot

LEVEL = 1e-3  # the exact test's level for --observed, and the band the plot draws


def framework_keep(framework: str, rate: float, dtype: str):
    """(exact keep, why it is not 1 - rate in words or "") of ``framework``'s own dropout."""
    from fractions import Fraction

    from ..backends import keep_model

    model = keep_model(framework)
    ref = model.default_reference
    return Fraction(model.keep_fraction(rate, dtype, ref)), model.keep_note(rate, dtype, ref)


EXACT_MAX = 10**15  # scipy's binomial quantiles are exact and fast up to here, and fail beyond
MAX_UNITS = 2**63 - 1  # the largest count an int64 holds: frameworks and numpy count no further


class Zeros:
    """The number of zeros of one call, Binomial(units, drop), without an array of ``units``
    elements: scipy's exact distribution up to ``EXACT_MAX`` units; beyond, Poisson where the
    variance is small, else the normal with the Cornish-Fisher skew term, its offsets added to
    the exact mean in integers (within about a count)."""

    def __init__(self, units: int, drop: float):
        import math
        from fractions import Fraction

        from scipy import stats

        self.n, self.p = units, drop
        self.exact = units <= EXACT_MAX
        self.mean = Fraction(units) * Fraction(drop)  # exact: a float mean is off by thousands at 1e18
        self.std = math.sqrt(units * drop * (1 - drop))
        self._flip = drop > 0.5
        if self.exact:
            self.method, self._dist = "exact", stats.binom(units, drop)
        elif min(drop, 1 - drop) * units < 1e4:  # rare zeros (or rare kept ones): Poisson
            self.method, self._dist = "Poisson", stats.poisson(units * min(drop, 1 - drop))
        else:
            self.method, self._dist = "normal", None

    def ppf(self, q: float) -> int:
        """The smallest count whose cumulative probability reaches ``q``."""
        return self._quantile(q, lower=True)

    def isf(self, q: float) -> int:
        """The count with probability ``q`` above it."""
        return self._quantile(q, lower=False)

    def _quantile(self, q: float, lower: bool) -> int:
        import math

        if self.method == "exact":
            return int(self._dist.ppf(q) if lower else self._dist.isf(q))
        if self.method == "Poisson":  # zeros = n - Poisson(n * keep) when the kept ones are rare
            if self._flip:
                return self.n - int(self._dist.isf(q) if lower else self._dist.ppf(q))
            return int(self._dist.ppf(q) if lower else self._dist.isf(q))
        from fractions import Fraction

        from scipy.stats import norm

        z = float(norm.ppf(q) if lower else norm.isf(q))
        skew = (1 - 2 * self.p) / self.std
        offset = Fraction(self.std * (z + skew * (z * z - 1) / 6))
        return max(0, min(self.n, math.ceil(self.mean + offset - Fraction(1, 2))))

    def pmf(self, k: int) -> float:
        import math

        if self.method == "exact":
            return float(self._dist.pmf(k))
        if self.method == "Poisson":
            return float(self._dist.pmf(self.n - k if self._flip else k))
        z = float(k - self.mean) / self.std
        return math.exp(-z * z / 2) / (self.std * math.sqrt(2 * math.pi))

    def mode(self) -> int:
        """The most likely count, floor((n + 1) p) from the exact value of p (the lower of two
        equal ones), without an array of n + 1 probabilities; in scipy's range the first largest
        of the pmf next to it, as an argmax over all counts would find."""
        from fractions import Fraction

        m = Fraction(self.n + 1) * Fraction(self.p)
        mode = min(self.n, max(0, int(m) - (1 if m.denominator == 1 else 0)))
        if self.method != "exact":
            return mode
        near = [k for k in (mode - 1, mode, mode + 1) if 0 <= k <= self.n]
        pmf = [self.pmf(k) for k in near]
        return near[pmf.index(max(pmf))]


def _fixed3(x) -> str:
    """A Fraction with 3 decimals, exactly rounded (a float has no digits to spare at 1e18)."""
    from fractions import Fraction

    thousandths = round(Fraction(x) * 1000)
    sign, thousandths = ("-" if thousandths < 0 else ""), abs(thousandths)
    return f"{sign}{thousandths // 1000}.{thousandths % 1000:03d}"


def explain_text(
    units: int, rate: float, dtype: str = "float32", observed: int | None = None, framework: str = "tensorflow"
) -> str:
    from decimal import Decimal

    from .._checks import check_count, check_rate
    from .._floats import dtype_name

    units = check_count(units, "units", minimum=1)
    if units > MAX_UNITS:
        shown = units if units < 10**30 else f"{Decimal(units):.3e}"
        raise ValueError(f"units ({shown}) must be <= 2**63 - 1 ({MAX_UNITS}), the most units an int64 counts")
    rate = check_rate(rate)
    dtype = dtype_name(dtype)
    if observed is not None:
        observed = check_count(observed, "observed")
        if observed > units:
            raise ValueError(f"observed ({observed}) must be <= units ({units})")
    from .. import min_num_samples_for_rate_test, proportion_ci, rate_test  # scipy: after the checks

    keep_frac, note = framework_keep(framework, rate, dtype)
    drop = 1 - float(keep_frac)
    dist = Zeros(units, drop)
    unit_word = "unit" if units == 1 else "units"
    lines = wrap100(
        f"Dropout(rate={rate}) on {units} {unit_word} in {dtype} ({framework}): each unit is dropped independently "
        f"with probability {drop:.10g}, so the number of zeros is Binomial({units}, {drop:.6g})."
    )
    if abs(float(keep_frac) - (1 - rate)) > 1e-6 * (1 - rate):
        lines += wrap100(
            f"  ({framework} in {dtype} keeps {keep_frac} = {float(keep_frac):.10g}, not 1 - rate = "
            f"{1 - rate:.10g}: {note})"
        )
    mode = dist.mode()  # the most likely count at this dtype's rate
    lo95, hi95 = dist.ppf(0.025), dist.isf(0.025)
    lo999, hi999 = dist.ppf(0.0005), dist.isf(0.0005)

    def span(lo, hi):
        return f"exactly {lo} zero{'' if lo == 1 else 's'}" if lo == hi else f"{lo} to {hi} zeros"

    lines.append(f"  mean {_fixed3(dist.mean)} zeros, standard deviation {dist.std:.3f}")
    # the central ranges hold at least these shares (a discrete count: often more)
    lines += wrap100(f"  at least 95% of calls give {span(lo95, hi95)}; at least 99.9% give {span(lo999, hi999)}")
    if not dist.exact:
        lines += wrap100(
            f"  (beyond {EXACT_MAX:.0e} units these counts come from the {dist.method} approximation, "
            "within a few counts)"
        )
    p_mode = dist.pmf(mode)
    lines += wrap100(
        f"  P(exactly {mode} zero{'' if mode == 1 else 's'}) = {p_mode:.4f}, the most likely count"
        + (": the 'expected' count is the exception, not the rule" if p_mode < 0.5 else "")
    )
    first, last = max(0, lo999), hi999
    if last - first + 1 <= 40:  # a table per count only where the counts are few
        ks = range(first, last + 1)
        pmf = [dist.pmf(k) for k in ks]
        scale = 40 / max(pmf) if max(pmf) > 0 else 0
        lines.append("  zeros  probability")
        for k, p in zip(ks, pmf, strict=True):
            mark = " <- observed" if observed is not None and k == observed else ""
            lines.append(f"  {k:5d}  {p:.4f} {'#' * int(round(p * scale))}{mark}")
    if 0 < drop < 1:
        try:
            need = min_num_samples_for_rate_test(
                float(keep_frac), 0.01 * min(drop, 1 - drop), false_fail_rate=1e-3, false_pass_rate=1e-3
            )
            need = f"{need:,} units"
        except ValueError:  # beyond the design's search
            need = "more than 1e15 units"
        lines += wrap100(
            f"  to see the zero fraction within 1% of its value ({0.01 * min(drop, 1 - drop):.3g}) "
            f"with 99.9% confidence and 99.9% power: {need}"
        )
    if observed is not None:
        r = rate_test(observed, units, drop)
        ci = proportion_ci(observed, units, confidence_level=0.999)
        verdict = "consistent with" if r.pvalue > LEVEL else "NOT consistent with"
        lines += wrap100(
            f"{observed} zeros out of {units} is {verdict} rate {rate} at level 0.001: exact two-sided "
            f"p = {r.pvalue:.4g} {'>' if r.pvalue > LEVEL else '<='} 0.001 (at this level a correct dropout is "
            f"called inconsistent in at most 1 call in 1000); 99.9% interval for the zero fraction "
            f"[{ci.low:.4f}, {ci.high:.4f}]"
        )
    return "\n".join(lines)


def cmd_explain(args) -> int:
    try:
        print(explain_text(args.units, args.rate, args.dtype, args.observed, args.framework))
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    if args.plot:
        explain_plot(args, args.plot)
    return EXIT_OK
