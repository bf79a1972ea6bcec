"""The plots: the audit's keep fractions against their acceptance band, explain's distribution of
zeros.  matplotlib is imported only here, and only when a plot is asked for."""

from __future__ import annotations

from ._common import RUN, UsageError, versions_text
from .files import replace_atomically


def require_matplotlib():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'dropout-stats[plot]'") from None
    return plt


def _save_figure(fig, path: str) -> None:
    """The figure as a PNG at ``path``, whole or not at all; then "wrote PATH" on stdout."""
    target = replace_atomically(path, "--plot", ".png", lambda f: fig.savefig(f, format="png", dpi=110))
    RUN.wrote(target)
    print(target.wrote())


def audit_plot(results, path, rate, versions: dict) -> None:
    """Each run's keep fraction as a z-score against its draws (one band for every dtype and
    rate), marked by the check's verdict, with the region where an exact fixed-n test at the
    check's level accepts; runs without a keep fraction are named, not dropped."""
    import math

    import numpy as np

    from ..design import rejection_region_for_rate_test

    plt = require_matplotlib()
    points, skipped = [], []
    for i, (a, d, r) in enumerate(results):
        c = next((c for c in r.checks if c.name == "keep_fraction" and c.values), None)
        if c is None:
            skipped.append(f"{a.entry_point}[{a.mode}] {d}")
            continue
        n, keep = c.values["n"], c.values["expected"]
        z = (c.values["fraction"] - keep) / math.sqrt(keep * (1 - keep) / n)
        points.append((n * (1 + 0.04 * ((i % 7) - 3)), z, c.passed, c.level))  # spread runs of equal n
    if not points:
        raise UsageError("--plot: no run has a keep fraction to plot")
    fig, ax = plt.subplots(figsize=(9, 6))
    level = float(np.median([p[3] for p in points]))
    ns = np.unique(
        np.logspace(
            math.log10(min(p[0] for p in points) / 1.5), math.log10(max(p[0] for p in points) * 1.5), 40
        ).astype(np.int64)
    )
    keep = 1 - rate
    lo, hi = [], []
    for n in ns:  # the exact acceptance region, in z units
        reg = rejection_region_for_rate_test(int(n), keep, false_fail_rate=level)
        sd = math.sqrt(keep * (1 - keep) / n)
        lo.append(((reg.low + 1) / n - keep) / sd)
        hi.append(((reg.high - 1) / n - keep) / sd)
    ax.fill_between(
        ns,
        lo,
        hi,
        color="tab:blue",
        alpha=0.15,
        lw=0,
        label=f"where an exact fixed-n test at the check's level ({level:.1g}) accepts",
    )
    for ok, style, color, label in ((True, "o", "tab:green", "passed"), (False, "X", "tab:red", "failed")):
        sel = [p for p in points if p[2] is ok]
        if sel:
            ax.scatter(
                [p[0] for p in sel],
                [p[1] for p in sel],
                marker=style,
                color=color,
                s=22,
                alpha=0.6,
                label=f"{label} ({len(sel)} runs; the sequential test decides)",
            )
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xscale("log")
    ax.set_xlabel("draws the keep-fraction check used (runs of equal size spread slightly)")
    ax.set_ylabel("(observed - expected) / standard error")
    ax.set_title(
        f"dropout-stats audit, {versions_text(versions)}, rate {rate}: keep fraction of {len(points)} runs", fontsize=10
    )
    if skipped:
        ax.text(
            0.01,
            0.01,
            f"not plotted: {len(skipped)} runs without a mask ({skipped[0].split('[')[0]}: "
            "noise variance checked instead)",
            transform=ax.transAxes,
            fontsize=8,
            color="dimgray",
        )
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=1, frameon=False)
    fig.subplots_adjust(bottom=0.24)
    _save_figure(fig, path)
    plt.close(fig)


def explain_plot(args, path) -> None:
    """The distribution of zeros: its bars, the counts the exact test at level 0.001 accepts (the
    level the verdict uses), the mean, and the observed count (wherever it lies) with its exact
    p-value and the verdict.  Over more than ``BARS`` counts the distribution is a curve on a
    grid and the accepted counts the interval found by bisection: never an array of --units."""
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    from .. import rate_test
    from .explain import EXACT_MAX, LEVEL, Zeros, framework_keep

    plt = require_matplotlib()
    framework = getattr(args, "framework", "tensorflow")
    n = args.units
    drop = 1 - float(framework_keep(framework, args.rate, args.dtype)[0])
    dist = Zeros(n, drop)
    d_lo, d_hi = dist.ppf(1e-4), dist.isf(1e-4)
    lo, hi = d_lo, d_hi
    if args.observed is not None:
        lo, hi = min(lo, args.observed), max(hi, args.observed)

    def accepts(k: int) -> bool:
        return rate_test(int(k), n, drop).pvalue > LEVEL

    fig, ax = plt.subplots(figsize=(8, 5))
    if hi - lo + 1 <= BARS:  # a bar per count, each tested
        ks = np.arange(lo, hi + 1)
        accepted = np.array([accepts(k) for k in ks], dtype=bool)
        a_lo, a_hi = ks[accepted].min(), ks[accepted].max()
        pmf = np.array([dist.pmf(int(k)) for k in ks])
        span = f"{a_lo} zeros" if a_lo == a_hi else f"{a_lo} to {a_hi} zeros"
        ax.bar(ks[accepted], pmf[accepted], color="tab:blue", label=f"consistent at level 0.001: {span}")
        if (~accepted).any():
            ax.bar(ks[~accepted], pmf[~accepted], color="lightsteelblue", label=_REJECTED)
    else:
        mode = dist.mode()
        if dist.exact:  # the accepted counts are an interval around the mode: its ends by bisection
            a_lo, a_hi = _edge(accepts, d_lo, mode, up=False), _edge(accepts, mode, d_hi, up=True)
        else:  # beyond scipy's exact range, the approximation's own quantiles at the level
            a_lo, a_hi = dist.ppf(LEVEL / 2), dist.isf(LEVEL / 2)
        grid = np.unique(np.concatenate([np.linspace(float(d_lo), float(d_hi), 801), np.linspace(lo, hi, 201)]))
        pmf = np.array([dist.pmf(int(round(x))) for x in grid])
        inside = (grid >= a_lo) & (grid <= a_hi)
        span = f"{a_lo} to {a_hi} zeros" + (" (normal approximation)" if n > EXACT_MAX else "")
        ax.fill_between(grid, pmf, where=inside, color="tab:blue", lw=0, label=f"consistent at level 0.001: {span}")
        ax.fill_between(grid, pmf, where=~inside, color="lightsteelblue", lw=0, label=_REJECTED)
        ax.plot(grid, pmf, color="tab:blue", lw=0.8)
    mean = float(dist.mean)
    ax.axvline(mean, color="black", lw=1, ls="--", label=f"mean {mean:.2f}")
    if args.observed is not None:
        p = rate_test(args.observed, n, drop).pvalue
        verdict = "consistent" if p > LEVEL else "NOT consistent"
        ax.axvline(
            args.observed,
            color="tab:red",
            lw=2,
            label=f"observed {args.observed}: exact p = {p:.3g}, {verdict} at level 0.001",
        )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(lo - 1, hi + 1)  # whole counts on the axis, even for one bar (rate 0)
    ax.set_xlabel("zeros in one call")
    ax.set_ylabel("probability")
    ax.set_title(
        f"Dropout({args.rate}) on {n} unit{'s' if n != 1 else ''} in {args.dtype} ({framework}): "
        f"zeros ~ Binomial({n}, {drop:.4g})",
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    fig.subplots_adjust(bottom=0.25)
    _save_figure(fig, path)
    plt.close(fig)


BARS = 400  # explain's plot draws a bar per count up to this many counts
_REJECTED = "rejected at level 0.001 (at most 1 in 1000 calls of a correct dropout)"


def _edge(accepts, a: int, b: int, up: bool) -> int:
    """The last accepted count going up from ``a`` to ``b`` (``up``), or down from ``b`` to
    ``a``, where ``accepts`` holds on one side of the edge only (about 2 log2(b - a) tests)."""
    inner, outer = (a, b) if up else (b, a)
    if not accepts(inner):
        return inner
    if accepts(outer):
        return outer
    while abs(outer - inner) > 1:
        mid = (inner + outer) // 2
        if accepts(mid):
            inner = mid
        else:
            outer = mid
    return inner


def calibrate_plot(result: dict, pvalues: dict, path: str) -> None:
    """Per check with p-values: their histogram (20 bins, the uniform's height dashed) and a QQ
    plot against uniform (below the diagonal: more small p-values than uniform), three checks to
    a row; the title says the false-alarm bound."""
    import numpy as np

    plt = require_matplotlib()
    checks = [c for c in result["checks"] if c["pvalues"]]
    if not checks:
        raise UsageError("--plot: no check produced p-values")
    cols = 3
    rows = -(-len(checks) // cols)
    fig, axes = plt.subplots(rows, 2 * cols, figsize=(4.2 * cols, 2.3 * rows + 0.8), squeeze=False)
    probs = np.linspace(0, 1, 201)
    for i, c in enumerate(checks):
        a = pvalues[c["name"]]
        hist, qq = axes[i // cols][2 * (i % cols)], axes[i // cols][2 * (i % cols) + 1]
        hist.hist(a, bins=20, range=(0, 1), color="tab:blue", alpha=0.75)
        hist.axhline(a.size / 20, color="k", ls="--", lw=0.8)
        hist.set_title(f"{c['name']} ({c['verdict']})", fontsize=8, loc="left")
        hist.tick_params(labelsize=7)
        qq.plot(probs, np.quantile(a, probs), color="tab:blue" if c["verdict"] != "TOO MANY SMALL" else "tab:red")
        qq.plot([0, 1], [0, 1], color="k", ls="--", lw=0.8)
        qq.set_xlim(0, 1)
        qq.set_ylim(0, 1)
        qq.set_title(f"QQ, n = {a.size:,}", fontsize=8, loc="left")
        qq.tick_params(labelsize=7)
    for j in range(len(checks), rows * cols):
        axes[j // cols][2 * (j % cols)].axis("off")
        axes[j // cols][2 * (j % cols) + 1].axis("off")
    fa = result["false_alarms"]
    fig.suptitle(
        f"{result['target']}: false alarms {fa['text']}; p-values per check (histogram; QQ against uniform)",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    _save_figure(fig, path)
    plt.close(fig)
