"""Assertions for dropout in a test suite, with numpy.testing-style failure messages.

Each statistical assertion states its false-fail rate and what its sample can detect; the
message on failure gives observed k / n, the fraction, the expected value, the exact interval,
the p-value, the smallest discrepancy this n could detect, and the seed to replay.
"""

from __future__ import annotations

import numpy as np

from ._checks import check_open_unit, check_rate
from ._floats import to_numpy
from .binomial import proportion_ci, rate_test
from .counts import _normalise_noise_shape, informative_and_kept, mask_counts
from .design import min_discrepancy_detectable
from .precision import apply_scale, exact_scale, expected_keep_probability, expected_scale, ulp_distance

__all__ = [
    "assert_keep_fraction",
    "assert_mask_is_uniform_threshold",
    "assert_scaled_by_inverse_keep",
    "assert_dropout",
]

_records: list[dict] = []


def drain_records() -> list[dict]:
    """The assertions made since the last call (read by the pytest plugin)."""
    out = list(_records)
    _records.clear()
    return out


def _record(**kw) -> None:
    _records.append({k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v)) for k, v in kw.items()})


def _header(title: str, false_fail_rate, extra: str = "") -> str:
    line = title  # the first line carries the verdict: pytest's short summary shows only it
    if false_fail_rate is not None:
        line += f" (false-fail rate {false_fail_rate:g}{', ' + extra if extra else ''})"
    return line


def assert_keep_fraction(
    x, y, rate, *, noise_shape=None, dtype=None, false_fail_rate=1e-9, false_pass_rate=1e-3, seed=None, xla=False
) -> None:
    """The kept fraction of y (from x) is consistent with ``rate``: exact two-sided binomial test
    at level false_fail_rate against TF's dtype-exact keep probability."""
    __tracebackhide__ = True
    rate = check_rate(rate)
    alpha = check_open_unit(false_fail_rate, "false_fail_rate")
    beta = check_open_unit(false_pass_rate, "false_pass_rate")
    c = mask_counts(x, y, noise_shape=noise_shape)
    dt = dtype or to_numpy(y, "y").dtype.name
    keep = expected_keep_probability(rate, dt, xla=xla)
    if c.n == 0:
        raise AssertionError(
            _header("Dropout keep fraction: no informative draws", None)
            + f"\n {c}\n x is zero, subnormal or non-finite everywhere"
        )
    r = rate_test(c.kept, c.n, keep)
    ci = proportion_ci(c.kept, c.n, confidence_level=1 - alpha)
    detectable = (
        min_discrepancy_detectable(keep, c.n, false_fail_rate=alpha, false_pass_rate=beta)
        if 0 < keep < 1
        else float("nan")
    )
    passed = r.pvalue > alpha
    _record(
        what=f"keep fraction, rate {rate}, {dt}",
        passed=passed,
        n=c.n,
        observed=f"{c.kept}/{c.n}",
        interval=f"[{ci.low:.6g}, {ci.high:.6g}]",
        pvalue=f"{r.pvalue:.3g}",
        level=alpha,
        seed=seed,
    )
    if not passed:
        raise AssertionError(
            "\n".join(
                [
                    _header(
                        "Dropout keep fraction is not consistent with the rate",
                        alpha,
                        f"false-pass rate {beta:g} at a discrepancy of {detectable:.3g}",
                    ),
                    f" observed: {c.kept} kept / {c.n} draws = {c.kept / c.n:.8g}"
                    + (f" ({c.excluded} excluded: x zero, subnormal or non-finite)" if c.excluded else ""),
                    f" expected: {keep:.10g} ({dt}, rate {rate})",
                    f" interval: [{ci.low:.8g}, {ci.high:.8g}] (exact, confidence {1 - alpha:.10g})",
                    f" p-value:  {r.pvalue:.4g} <= {alpha:g}",
                    f" this n detects a keep-probability error of {detectable:.4g} or more",
                    f" seed:     {seed}",
                ]
            )
        )


def assert_mask_is_uniform_threshold(x, y, rate, seed, *, noise_shape=None, xla=False) -> None:
    """The kept set equals TF's ``stateless_uniform(noise_shape or shape, seed, dtype) >= rate``
    bit for bit (exact: no false-fail rate)."""
    __tracebackhide__ = True
    from .reference import reference_keep

    rate = check_rate(rate)
    informative, kept = informative_and_kept(x, y)
    dt = to_numpy(y, "y").dtype.name
    pair = np.asarray(to_numpy(seed, "seed")).ravel()
    if pair.size != 2 or not np.issubdtype(pair.dtype, np.integer):
        raise ValueError(f"seed ({seed!r}) must be two integers, as for stateless_dropout")
    shape = _normalise_noise_shape(noise_shape, kept.shape) if noise_shape is not None else kept.shape
    want = reference_keep(shape, [int(v) for v in pair], dt, rate, xla=xla)
    # only informative positions say anything about the mask (zero, subnormal, NaN/inf x do not)
    axes = tuple(i for i, (d, s) in enumerate(zip(shape, kept.shape, strict=True)) if d == 1 and s != 1)
    unit_kept = np.any(kept & informative, axis=axes, keepdims=True)
    unit_seen = np.any(informative, axis=axes, keepdims=True)
    mismatch = unit_seen & (want != unit_kept)
    n_bad = int(np.count_nonzero(mismatch))
    _record(
        what=f"mask == uniform >= {rate}",
        passed=n_bad == 0,
        n=int(unit_seen.sum()),
        observed=f"{n_bad} mismatches",
        interval=None,
        pvalue="exact",
        level=None,
        seed=str(seed),
    )
    if n_bad:
        first = np.argwhere(mismatch)[:5].tolist()
        raise AssertionError(
            "\n".join(
                [
                    _header("Dropout mask is not stateless_uniform >= rate", None),
                    f" mismatches: {n_bad} of {want.size} positions (first at {first})",
                    f" reference: tf.random.stateless_uniform({list(shape)}, seed={seed}, dtype={dt}) >= {rate}",
                ]
            )
        )


def assert_scaled_by_inverse_keep(x, y, rate, *, rate_is_tensor=None) -> None:
    """Every kept value is x scaled by one of TF's formulas exactly (x * fl(1/(1-rate)), or
    x / (1 - fl(rate)) for a tensor rate, or the correctly rounded x / (1 - rate))."""
    __tracebackhide__ = True
    rate = check_rate(rate)
    informative, kept_bits = informative_and_kept(x, y)
    xa, ya = to_numpy(x, "x"), to_numpy(y, "y")
    dt = ya.dtype.name
    kept = informative & kept_bits
    xs = xa[kept]
    got = ya[kept].astype(np.float64)
    options = [
        expected_scale(rate, dt, rate_is_tensor=False),
        expected_scale(rate, dt, rate_is_tensor=True),
        exact_scale(rate, dt),
    ]
    if rate_is_tensor is not None:
        options = [expected_scale(rate, dt, rate_is_tensor=rate_is_tensor)]
    worst = None
    for f in options:
        want = apply_scale(xs, f)
        bad = want != got
        if not bad.any():
            _record(
                what=f"scale ({f.formula})",
                passed=True,
                n=int(xs.size),
                observed="bit-exact",
                interval=None,
                pvalue="exact",
                level=None,
                seed=None,
            )
            return
        d = ulp_distance(want, got, dt)
        if worst is None or d.max() < worst[1].max():
            worst = (f, d, want, bad)
    f, d, want, bad = worst
    order = np.argsort(-d)[:5]
    _record(
        what="scale",
        passed=False,
        n=int(xs.size),
        observed=f"{int(bad.sum())} mismatches",
        interval=None,
        pvalue="exact",
        level=None,
        seed=None,
    )
    ratio = got / np.asarray(xs, dtype=np.float64)
    lines = [
        _header(
            f"Kept values are not x / (1 - rate) by any reference formula: {int(bad.sum())} of {xs.size} differ", None
        ),
        f" closest formula: {f.formula}; max ULP distance: {int(d.max())}",
        f" y / x ranges over [{float(ratio.min()):.9g}, {float(ratio.max()):.9g}] where 1 / (1 - rate) = "
        f"{1 / (1 - rate):.9g}",
        " largest differences (x, got, expected, ULP):",
    ]
    for i in order:
        lines.append(f"   {float(xs[i])!r}, {float(got[i])!r}, {float(want[i])!r}, {int(d[i])}")
    raise AssertionError("\n".join(lines))


def assert_dropout(fn, **verify_kwargs):
    """Run verify() and fail with its table when any check fails; returns the Report."""
    __tracebackhide__ = True
    from .battery import verify

    report = verify(fn, **verify_kwargs)
    k = next((c for c in report.checks if c.name == "keep_fraction"), None)
    failed = ", ".join(c.name for c in report.failures)
    _record(
        what=f"verify rate {report.config.get('rate')} {report.config.get('dtype')}"
        + (f" (FAILED: {failed})" if failed else ""),
        passed=report.passed,
        n=k.samples if k else report.samples,
        observed=k.observed if k else "",
        interval=f"[{k.interval[0]:.6g}, {k.interval[1]:.6g}]" if k and k.interval else None,
        pvalue=f"{k.pvalue:.3g}" if k and k.pvalue is not None else None,
        level=report.config.get("false_fail_rate"),
        seed=report.seed,
    )
    if not report.passed:
        raise AssertionError(
            _header(f"Dropout implementation failed verification: {failed}", report.config.get("false_fail_rate"))
            + "\n"
            + str(report)
        )
    return report
