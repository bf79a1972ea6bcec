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


def explain_text(
    units: int, rate: float, dtype: str = "float32", observed: int | None = None, framework: str = "tensorflow"
) -> str:
    import numpy as np
    from scipy import stats

    from .. import min_num_samples_for_rate_test, proportion_ci, rate_test
    from .._checks import check_count, check_rate
    from .._floats import dtype_name

    units = check_count(units, "units", minimum=1)
    rate = check_rate(rate)
    dtype = dtype_name(dtype)
    keep_frac, note = framework_keep(framework, rate, dtype)
    drop = 1 - float(keep_frac)
    dist = stats.binom(units, drop)
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
    mode = int(np.argmax(dist.pmf(np.arange(units + 1))))  # the most likely count at this dtype's rate
    lo95, hi95 = dist.ppf(0.025), dist.isf(0.025)
    lo999, hi999 = dist.ppf(0.0005), dist.isf(0.0005)

    def span(lo, hi):
        return f"exactly {lo:.0f} zero{'' if lo == 1 else 's'}" if lo == hi else f"{lo:.0f} to {hi:.0f} zeros"

    lines.append(f"  mean {dist.mean():.3f} zeros, standard deviation {dist.std():.3f}")
    lines.append(f"  95% of calls give {span(lo95, hi95)}; 99.9% give {span(lo999, hi999)}")
    p_mode = dist.pmf(mode)
    lines += wrap100(
        f"  P(exactly {mode} zero{'' if mode == 1 else 's'}) = {p_mode:.4f}, the most likely count"
        + (": the 'expected' count is the exception, not the rule" if p_mode < 0.5 else "")
    )
    ks = np.arange(max(0, int(lo999)), int(hi999) + 1)
    pmf = dist.pmf(ks)
    scale = 40 / pmf.max() if pmf.max() > 0 else 0
    if len(ks) <= 40:
        lines.append("  zeros  probability")
        for k, p in zip(ks, pmf, strict=True):
            mark = " <- observed" if observed is not None and k == observed else ""
            lines.append(f"  {k:5d}  {p:.4f} {'#' * int(round(p * scale))}{mark}")
    if 0 < drop < 1:
        need = min_num_samples_for_rate_test(
            float(keep_frac), 0.01 * min(drop, 1 - drop), false_fail_rate=1e-3, false_pass_rate=1e-3
        )
        lines += wrap100(
            f"  to see the zero fraction within 1% of its value ({0.01 * min(drop, 1 - drop):.3g}) "
            f"with 99.9% confidence and 99.9% power: {need:,} units"
        )
    if observed is not None:
        observed = check_count(observed, "observed")
        if observed > units:
            raise ValueError(f"observed ({observed}) must be <= units ({units})")
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
        print(f"wrote {args.plot}")
    return EXIT_OK
