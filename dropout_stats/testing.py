"""Assertions for dropout in a test suite, with numpy.testing-style failure messages.

Every assertion reads numpy, TensorFlow, JAX and torch arrays in float16, bfloat16, float32 and
float64 (torch's bfloat16 from its bits), x and y from any mix of them.  What a correct output
is follows the contract (``precision``): the keep probability of the framework that produced y
(TensorFlow's dtype-exact grid, JAX's float32 bernoulli, torch's and numpy's 1 - rate) when it
is known, else any documented correct mechanism (``precision.keep_models``); kept values
within the rounding bound of x / (1 - rate) (``precision.scale_bound``), bit-identity to a
framework's formula only with ``exact_scale=True``.

Each statistical assertion states its false-fail rate and what its sample can detect; the
message on failure gives observed k / n, the fraction, the expected value and why, the exact
interval, the p-value, the smallest discrepancy this n could detect, and the seed to replay.
Importing this module imports no framework.
"""

from __future__ import annotations

import importlib
from fractions import Fraction

import numpy as np

from ._checks import check_choice, check_flag, check_open_unit, check_rate
from ._floats import array_dtype_name, dtype_name, to_numpy
from .backends import _BACKENDS, detect_backend
from .binomial import proportion_ci, rate_test
from .counts import _normalise_noise_shape, informative_and_kept, mask_counts
from .design import min_discrepancy_detectable
from .precision import (
    apply_scale,
    expected_scale,
    keep_models,
    scale_bound,
    scale_error,
    smallest_normal,
    ulp_distance,
    within_scale_bound,
)
from .precision import exact_scale as exact_scale_formula

__all__ = [
    "FRAMEWORKS",
    "assert_keep_fraction",
    "assert_mask_is_uniform_threshold",
    "assert_scaled_by_inverse_keep",
    "assert_dropout",
]

FRAMEWORKS = ("tensorflow", "jax", "torch", "numpy", "any")  # assert_keep_fraction's framework=
_TITLE = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch", "numpy": "numpy"}

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


def _type_name(a) -> str:
    t = type(a)
    return f"{t.__module__}.{t.__qualname__}"


def _model(framework: str):
    """The backend's model of a correct implementation (keep_fraction, keep_note, scale_formulas:
    pure functions of their arguments) without the backend's __init__, which imports the
    framework: asserting a framework's keep on arrays read back as numpy needs no framework."""
    module, name = _BACKENDS[framework]
    cls = getattr(importlib.import_module(module, f"{__package__}.backends"), name)
    return cls.__new__(cls)


def _resolve_framework(framework, y, xla: bool) -> tuple[str, str]:
    """(the framework whose keep is expected, or "any"; why that one, in words)."""
    if framework is not None:
        check_choice(framework, "framework", (None, *FRAMEWORKS))
        how = f"framework={framework!r}"
    else:
        owner = detect_backend(y)
        if owner in (None, "numpy"):
            if xla:  # TensorFlow's XLA grid: a numpy copy of TensorFlow's output
                return "tensorflow", "xla=True: TensorFlow under XLA (y is not a framework's array)"
            return "any", (
                f"y is a {_type_name(y)}, which no framework owns, and numpy code may imitate any framework: "
                "pass framework= to test one framework's exact keep"
            )
        framework, how = owner, f"detected from y, a {_type_name(y)}"
    if xla and framework != "tensorflow":
        raise ValueError(f"xla (True) selects TensorFlow's keep under XLA, but the framework is {framework!r} ({how})")
    return framework, how


def _expected_keeps(framework: str, rate: float, dt: str, xla: bool) -> list[tuple[str, Fraction]]:
    """[(label, exact keep)]: the framework's own keep, or the distinct keeps of the documented
    correct mechanisms (the first label of each)."""
    if framework == "any":
        distinct: dict[float, tuple[str, Fraction]] = {}  # the test reads a float: equal floats once
        for label, keep_of in keep_models(dt):
            keep = Fraction(keep_of(rate))
            distinct.setdefault(float(keep), (label, keep))
        return list(distinct.values())
    model = _model(framework)
    reference = "tensorflow-xla" if xla else model.default_reference
    note = model.keep_note(rate, dt, reference) or "an exact Bernoulli(1 - rate) draw"
    label = f"{_TITLE[framework]}{' under XLA' if xla else ''}'s keep for {dt} at rate {rate}: {note}"
    return [(label, Fraction(model.keep_fraction(rate, dt, reference)))]


def assert_keep_fraction(
    x,
    y,
    rate,
    *,
    framework=None,
    xla=False,
    noise_shape=None,
    dtype=None,
    false_fail_rate=1e-9,
    false_pass_rate=1e-3,
    seed=None,
) -> None:
    """The kept fraction of y (from x) is consistent with ``rate``: an exact two-sided binomial
    test at level ``false_fail_rate`` against the keep probability of a correct implementation.

    ``framework``: whose keep is expected.  "tensorflow": TensorFlow's dtype-exact keep (its
    uniform on the dtype's grid, ``U >= fl(rate)``; bfloat16 at rate 0.2 keeps 102/128, and
    ``xla=True`` the float32 grid of 2^23 levels under jit_compile); "jax": ``jax.random.bernoulli``'s
    (a float32 uniform of 2^23 levels, ``U < fl32(1 - rate)``, in every dtype); "torch" and
    "numpy": 1 - rate; "any": any documented correct mechanism (``precision.keep_models``), each
    tested at the full ``false_fail_rate`` and at false-pass ``false_pass_rate`` / m for m
    distinct keeps, passing if one passes.  None (default): the framework that owns y (a
    TensorFlow tensor, a JAX array, a torch tensor), and "any" for numpy arrays, since numpy code
    may imitate any framework (TensorFlow with ``xla=True``).  ``xla`` applies to TensorFlow only.
    ``dtype`` overrides y's dtype for the expected keep.  The failure message says which keep
    was expected and why; ``false_pass_rate`` only sizes the discrepancy it reports as detectable.
    """
    __tracebackhide__ = True
    rate = check_rate(rate)
    alpha = check_open_unit(false_fail_rate, "false_fail_rate")
    beta = check_open_unit(false_pass_rate, "false_pass_rate")
    xla = check_flag(xla, "xla")
    framework, how = _resolve_framework(framework, y, xla)
    c = mask_counts(x, y, noise_shape=noise_shape)
    dt = dtype_name(dtype) if dtype is not None else array_dtype_name(to_numpy(y, "y"), "y")
    keeps = _expected_keeps(framework, rate, dt, xla)
    if c.n == 0:
        raise AssertionError(
            _header("Dropout keep fraction: no informative draws", None)
            + f"\n {c}\n x is zero, subnormal or non-finite everywhere"
        )
    tests = [(label, float(keep), rate_test(c.kept, c.n, float(keep)).pvalue) for label, keep in keeps]
    passed = [t for t in tests if t[2] > alpha]
    label, keep, pvalue = passed[0] if passed else max(tests, key=lambda t: t[2])
    ci = proportion_ci(c.kept, c.n, confidence_level=1 - alpha)
    _record(
        what=f"keep fraction, rate {rate}, {dt}, "
        + (f"{_TITLE[framework]}'s keep" if framework != "any" else f"{len(tests)} correct keeps")
        + (f": {label}" if passed and framework == "any" else ""),
        passed=bool(passed),
        n=c.n,
        observed=f"{c.kept}/{c.n}",
        interval=f"[{ci.low:.6g}, {ci.high:.6g}]",
        pvalue=f"{pvalue:.3g}",
        level=alpha,
        seed=seed,
    )
    if passed:
        return
    m = len(tests)
    detectable = max(
        min_discrepancy_detectable(k, c.n, false_fail_rate=alpha, false_pass_rate=beta / m) if 0 < k < 1 else 0.0
        for _, k, _ in tests
    )
    frac = c.kept / c.n
    if m == 1:
        wanted = f"{_TITLE[framework]}{' under XLA' if xla else ''}'s keep {keep:.10g}"
        expected = [f" expected: {keep:.10g} ({label}; {how})"]
    else:
        lo, hi = min(t[1] for t in tests), max(t[1] for t in tests)
        wanted = f"one of {m} documented correct keeps in [{lo:.6g}, {hi:.6g}]"
        expected = [f" expected: {wanted}, each tested at the full false-fail rate ({how})"]
        expected += [f"   {k:.10g}  p = {p:.3g}  {lab}" for lab, k, p in sorted(tests, key=lambda t: t[1])]
    raise AssertionError(
        "\n".join(
            [
                _header(
                    "Dropout keep fraction is not consistent with the rate",
                    alpha,
                    f"false-pass rate {beta:g} at a discrepancy of {detectable:.3g}",
                )
                + f": observed {frac:.6g}, expected {wanted}",
                f" observed: {c.kept} kept / {c.n} draws = {frac:.8g}"
                + (f" ({c.excluded} excluded: x zero, subnormal or non-finite)" if c.excluded else ""),
                *expected,
                f" interval: [{ci.low:.8g}, {ci.high:.8g}] (exact, confidence {1 - alpha:.10g})",
                f" p-value:  {pvalue:.4g} <= {alpha:g}" + (f" (the largest, {label})" if m > 1 else ""),
                f" this n detects a keep-probability error of {detectable:.4g} or more"
                + (f" (false-pass rate {beta:g} / {m} per keep)" if m > 1 else ""),
                f" seed:     {seed}",
            ]
        )
    )


_STREAMS = {  # frameworks with a stream of their own: (what their arrays are, that stream)
    "jax": ("a JAX array", "jax.random.bernoulli from the key (reference='jax')"),
    "torch": ("a torch tensor", "bernoulli_(1 - rate) from the generator (reference='torch')"),
}


def assert_mask_is_uniform_threshold(x, y, rate, seed, *, noise_shape=None, xla=False) -> None:
    """The kept set equals TensorFlow's stream, ``tf.random.stateless_uniform(noise_shape or
    shape, seed, dtype) >= rate``, bit for bit (exact: no false-fail rate); ``xla=True``: the
    stream under jit_compile.  TensorFlow's (and numpy copies of TensorFlow's) output only: JAX
    arrays and torch tensors raise a TypeError naming what to use instead (assert_keep_fraction
    and assert_scaled_by_inverse_keep, or verify(fn, backend=...), whose mechanism check compares
    the mask with that framework's own stream).  Needs TensorFlow for the reference."""
    __tracebackhide__ = True
    rate = check_rate(rate)
    for name, a in (("y", y), ("x", x)):  # before TensorFlow loads: a JAX-only install has none
        owner = detect_backend(a)
        if owner in _STREAMS:
            raise TypeError(
                f"{name} ({_type_name(a)}) is {_STREAMS[owner][0]}: assert_mask_is_uniform_threshold checks "
                "TensorFlow's stream (tf.random.stateless_uniform >= rate) only; for "
                f"{_TITLE[owner]} use assert_keep_fraction and assert_scaled_by_inverse_keep, or "
                f"verify(fn, backend={owner!r}), whose mechanism check compares the mask with {_STREAMS[owner][1]}"
            )
    from .reference import reference_keep

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
        what=f"mask == TensorFlow's uniform >= {rate}",
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
        jit = " under XLA" if xla else ""
        raise AssertionError(
            "\n".join(
                [
                    _header(f"Dropout mask is not TensorFlow's stateless_uniform >= rate{jit}", None)
                    + f": {n_bad} of {want.size} positions differ",
                    f" mismatches: {n_bad} of {want.size} positions (first at {first})",
                    f" reference: tf.random.stateless_uniform({list(shape)}, seed={seed}, dtype={dt}) >= {rate}{jit}",
                    " (TensorFlow's stream only: a correct dropout of another RNG fails this; assert_keep_fraction "
                    "tests any)",
                ]
            )
        )


def assert_scaled_by_inverse_keep(x, y, rate, *, exact_scale=False, rate_is_tensor=None) -> None:
    """Every kept value of y is x / (1 - rate) as a correct dropout computes it.

    By default (the contract): within the rounding bound of x / (1 - r), r the rate as declared
    or rounded to the dtype (``precision.scale_bound``: about 3 units of the dtype's roundoff u;
    every framework's formula, ``x * mask / (1 - rate)`` and ``x * (1 / (1 - rate))`` in the dtype
    or wider are inside; a scale in a narrower format, a wrong rate or a value 2 ULP off are not).
    The message gives the worst values with their error in u and the bound.

    ``exact_scale=True``: bit-identical to a framework's formula (TensorFlow's x * fl(1/(1-rate))
    and x / fl(1 - fl(rate)), the formulas of the framework that owns y (all frameworks' for
    numpy arrays), or the correctly rounded x / (1 - rate)); ``rate_is_tensor`` (with
    exact_scale=True) picks TensorFlow's formula for a Python-float (False) or tensor (True) rate.
    """
    __tracebackhide__ = True
    rate = check_rate(rate)
    exact = check_flag(exact_scale, "exact_scale")
    if rate_is_tensor is not None:
        rate_is_tensor = check_flag(rate_is_tensor, "rate_is_tensor")
        if not exact:
            raise ValueError(
                f"rate_is_tensor ({rate_is_tensor!r}) picks one of TensorFlow's formulas, for exact_scale=True; "
                "the rounding bound (exact_scale=False) holds both"
            )
    informative, kept_bits = informative_and_kept(x, y)
    xa, ya = to_numpy(x, "x"), to_numpy(y, "y")
    dt = ya.dtype.name
    kept = informative & kept_bits
    xs, ys = xa[kept], ya[kept]
    if exact:
        return _assert_exact_scale(xs, ys, rate, dt, _scale_formulas(y, rate, dt, rate_is_tensor))
    b = scale_bound(rate, dt)
    ok = within_scale_bound(xs, ys, rate, dt)
    err = scale_error(xs, ys, rate, dt)
    normal = np.abs(_float64(ys)) >= smallest_normal(dt)  # below: absolute errors, not relative
    worst = float(err[normal].max()) if normal.any() else 0.0
    n_bad = int(np.count_nonzero(~ok))
    _record(
        what=f"scale within {b.units:.3g} u of x / (1 - {rate}), {dt}",
        passed=n_bad == 0,
        n=int(xs.size),
        observed=f"worst {worst:.3g} u" if n_bad == 0 else f"{n_bad} outside",
        interval=None,
        pvalue="exact",
        level=None,
        seed=None,
    )
    if not n_bad:
        return
    bad = np.flatnonzero(~ok)
    order = bad[np.argsort(-err[bad], kind="stable")][:5]
    xv, yv = _float64(xs), _float64(ys)
    want = np.asarray(b.quotients(xs)[0], dtype=np.float64)
    with np.errstate(all="ignore"):
        ratio = yv / xv
    finite = np.isfinite(ratio)
    rates = " or ".join(f"{r!r}" for r in b.rates)
    lines = [
        _header(
            f"Kept values are not x / (1 - rate) within the rounding bound: {n_bad} of {xs.size} outside "
            f"{b.units:.3g} u ({dt}, rate {rate})",
            None,
        ),
        f" bound: |y / (x / (1 - r)) - 1| <= {b.units:.4g} u, u = 2^{int(np.log2(b.unit_roundoff))} ({dt}), "
        f"r = {rates} (the rate as declared or rounded to {dt}); precision.scale_bound",
        f" worst error {float(err[bad].max()):.4g} u"
        + (
            f"; y / x ranges over [{float(ratio[finite].min()):.9g}, {float(ratio[finite].max()):.9g}]"
            if finite.any()
            else ""
        )
        + f" where 1 / (1 - rate) = {1 / (1 - rate):.9g}",
        " worst values (x, got, x / (1 - rate), error in u):",
    ]
    for i in order:
        lines.append(f"   {float(xv[i])!r}, {float(yv[i])!r}, {float(want[i])!r}, {float(err[i]):.4g}")
    lines.append(" (exact_scale=True asks for bit-identity to a framework's formula instead)")
    raise AssertionError("\n".join(lines))


def _float64(a: np.ndarray) -> np.ndarray:
    if a.dtype.name == "bfloat16":
        return a.astype(np.float32).astype(np.float64)
    return a.astype(np.float64)


def _scale_formulas(y, rate: float, dt: str, rate_is_tensor) -> list:
    """The formulas exact_scale=True accepts, the likeliest first: TensorFlow's (today's rule),
    the formulas of the framework that owns y (every framework's for numpy arrays), the
    correctly rounded quotient.  rate_is_tensor: TensorFlow's one formula."""
    if rate_is_tensor is not None:
        return [expected_scale(rate, dt, rate_is_tensor=rate_is_tensor)]
    owner = detect_backend(y)
    frameworks = [owner] if owner in ("tensorflow", "jax", "torch") else list(_BACKENDS)
    formulas = [f for name in frameworks for f in _model(name).scale_formulas(rate, dt)]
    formulas += [
        expected_scale(rate, dt, rate_is_tensor=False),
        expected_scale(rate, dt, rate_is_tensor=True),
        exact_scale_formula(rate, dt),
    ]
    return list(dict.fromkeys(formulas))


def _assert_exact_scale(xs, ys, rate, dt, options) -> None:
    __tracebackhide__ = True
    got = _float64(ys)
    worst = None
    for f in options:
        want = apply_scale(xs, f)
        bad = want != got
        if not bad.any():
            _record(
                what=f"scale ({f.formula}), {dt}",
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
    order = np.argsort(-d, kind="stable")[:5]
    _record(
        what=f"scale bit for bit, {dt}",
        passed=False,
        n=int(xs.size),
        observed=f"{int(bad.sum())} mismatches",
        interval=None,
        pvalue="exact",
        level=None,
        seed=None,
    )
    xv = _float64(xs)
    with np.errstate(all="ignore"):
        ratio = got / xv
    finite = np.isfinite(ratio)
    lines = [
        _header(
            f"Kept values are not x / (1 - rate) by any reference formula: {int(bad.sum())} of {xs.size} differ "
            f"(exact_scale=True, {dt})",
            None,
        ),
        f" closest formula: {f.formula} (factor {f.factor!r}); max ULP distance: {int(d.max())}",
        f" formulas tried: {', '.join(f'{o.formula} {o.factor!r}' for o in options)}",
        (
            f" y / x ranges over [{float(ratio[finite].min()):.9g}, {float(ratio[finite].max()):.9g}]"
            if finite.any()
            else " y / x is not finite"
        )
        + f" where 1 / (1 - rate) = {1 / (1 - rate):.9g}",
        " largest differences (x, got, expected, ULP):",
    ]
    for i in order:
        lines.append(f"   {float(xv[i])!r}, {float(got[i])!r}, {float(want[i])!r}, {int(d[i])}")
    raise AssertionError("\n".join(lines))


def assert_dropout(fn, *, exact_scale=False, mechanism="auto", **verify_kwargs):
    """Run ``verify(fn, exact_scale=..., mechanism=..., **verify_kwargs)`` and fail with its table
    when any check fails; returns the Report.  Every keyword goes to verify (rate, dtype, shape,
    seed, backend, reference, false_fail_rate, ...): ``exact_scale=True`` demands bit-identity to
    a framework's scale formula instead of the rounding bound, ``mechanism="threshold"`` requires
    one uniform compared with the rate (None: a finding only)."""
    __tracebackhide__ = True
    from .battery import verify

    report = verify(fn, exact_scale=exact_scale, mechanism=mechanism, **verify_kwargs)
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
