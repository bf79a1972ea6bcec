"""verify_gaussian_dropout(): Gaussian dropout has no mask: y = x * n with n ~ Normal(1, rate /
(1 - rate)) independent per element and per call.

Checks on n = y / x, each exact under normality: mean 1 (t-test), variance rate/(1 - rate)
(chi-square), normal shape (Kolmogorov-Smirnov; not in bfloat16, whose 8-bit noise is visibly
discrete at these n), neighbour, row and successive-call correlation 0 (Pearson's r over
disjoint pairs), equal means across positions (one-way ANOVA).  Holm over the seven.
Corpus: ``gaussian_wrong_variance`` (stddev rate instead of sqrt(rate / (1 - rate))) fails the
variance check; ``gaussian_shared_across_batch`` fails row_independence.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special, stats

from .._checks import check_callable, check_count, check_dtype, check_open_unit, check_positive, check_rate
from ..backends import detect_backend, get_backend
from ..report import Check, Finding, Report
from ..structure import holm_bonferroni
from .checks.homogeneity import GROUPS
from .config import DEFAULT_SHAPE, _validate_shape, check_backend_name, name_of
from .kinds import positive_input
from .runner import ContractError, read_output

_NAMES = [
    "gaussian_mean",
    "gaussian_variance",
    "gaussian_shape",
    "neighbour_independence",
    "row_independence",
    "stateful_fresh",
    "homogeneity_blocks",
]


def verify_gaussian_dropout(
    fn,
    *,
    rate,
    dtype="float32",
    shape=None,
    seed=0,
    backend=None,
    false_fail_rate=1e-6,
    false_pass_rate=1e-3,
    discrepancy=None,
    max_calls=2_000,
) -> Report:
    """Gaussian dropout (stateful contract ``fn(x, rate, noise_shape=None)``): y = x * n with
    n ~ Normal(1, rate / (1 - rate)) independent per element and per call.

    ``discrepancy`` (default 1% of the noise's standard deviation) is the mean error detected
    with probability >= 1 - false_pass_rate; the variance check detects 2x that, relative.
    ``backend`` as for verify() (None: the type of the first output decides).
    """
    check_callable(fn, "fn")
    rate = check_rate(rate)
    if rate == 0:
        raise ValueError("rate (0.0) must be > 0 for Gaussian dropout (the noise variance is rate/(1-rate))")
    dtype = check_dtype(dtype)
    seed = check_count(seed, "seed")
    alpha = check_open_unit(false_fail_rate, "false_fail_rate")
    beta = check_open_unit(false_pass_rate, "false_pass_rate")
    max_calls = check_count(max_calls, "max_calls", minimum=2)
    backend = check_backend_name(backend)
    shape = DEFAULT_SHAPE if shape is None else _validate_shape(shape, "shape")
    sd = math.sqrt(rate / (1 - rate))
    delta = 0.01 * sd if discrepancy is None else check_positive(discrepancy, "discrepancy")
    z = -special.ndtri(alpha / len(_NAMES) / 2) - special.ndtri(beta)
    n_mean = math.ceil((z * sd / delta) ** 2)
    n_var = math.ceil(2 * (z / (2 * delta / sd)) ** 2)
    config = {
        "fn": name_of(fn),
        "rate": rate,
        "dtype": dtype,
        "shape": list(shape),
        "seed": seed,
        "kind": "gaussian",
        "false_fail_rate": alpha,
        "false_pass_rate": beta,
        "discrepancy": delta,
    }
    x_np = positive_input(shape, dtype, seed)  # n = y / x
    per = int(np.prod(shape))
    calls = min(max_calls, max(2, math.ceil(max(n_mean, n_var) / per)))
    from ..backends import seed_globals

    seeded = seed_globals(seed)  # a stateful fn: the noise replays in any process
    findings = [
        Finding("seeded", f"before the first call: {', '.join(seeded)} (stateful contract: a run replays)", seeded)
    ]
    try:
        noise = _draw_noise(fn, rate, dtype, x_np, calls, backend)
    except ContractError as exc:
        return Report(False, [Check("contract", False, detail=str(exc))], findings, 0, seed, config)
    checks = _noise_checks(noise, rate, dtype, shape, delta, beta, n_mean)
    pchecks = [c for c in checks if c.pvalue is not None]
    holm = holm_bonferroni([c.pvalue for c in pchecks], alpha)
    for c, rejected, level in zip(pchecks, holm.rejected, holm.thresholds, strict=True):
        c.level, c.passed = level, not rejected
    passed = all(c.passed is not False for c in checks)
    return Report(passed, checks, findings, noise.size, seed, config)


def unchanged_share_bound(rate: float, dtype: str) -> float:
    """An upper bound on the share of positions a correct Gaussian dropout leaves unchanged.

    y = x * n with n = fl(1 + sd z), sd = sqrt(rate / (1 - rate)).  x * (1 + ULP) and
    x * (1 - ULP) are never x, so y == x needs n in {1, 1 - ULP/2}, hence |z| < ULP / sd (ULP the
    spacing of floats at 1 in ``dtype``).  A continuous z gives that probability at most
    2 phi(0) ULP / sd; a generator's z is discrete, and the two levels at the window's edges may
    add their mass: at most 2^-(precision - 1) each where the uniform behind z has at least
    precision - 1 bits (JAX's bfloat16 normal: 128 equally likely values, 2^-7 each).  Measured
    (Keras 3.15 on TensorFlow 2.21 and JAX 0.10, 1-5M draws): at most a third of this bound in
    float32, float16 and bfloat16 at rates 0.01 and 0.3 (bfloat16 at 0.01: 2.3% against 7.8%)."""
    info = np.finfo(np.float64) if dtype == "float64" else _finfo(dtype)
    ulp, precision = float(info.eps), int(info.nmant) + 1
    sd = math.sqrt(rate / (1 - rate))
    return min(1.0, 2 * stats.norm.pdf(0) * ulp / sd + 2 * 2.0 ** -(precision - 1))


def _finfo(dtype: str):
    import ml_dtypes

    return ml_dtypes.finfo(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.finfo(np.dtype(dtype))


def _draw_noise(fn, rate, dtype, x_np, calls, backend_name) -> np.ndarray:
    """n = y / x for ``calls`` calls, as float64, shape (calls, *x.shape)."""
    backend = get_backend(backend_name) if backend_name is not None else None
    xv = x_np.astype(np.float64)
    noises = []
    for _ in range(calls):
        x = x_np if backend is None else backend.native(x_np)
        try:
            y = fn(x, rate, noise_shape=None)
        except Exception as exc:
            raise ContractError(f"fn(x, {rate!r}) raised {type(exc).__name__}: {exc}") from None
        if backend is None:  # the first output tells the framework
            name = detect_backend(y)
            if name is None:
                raise ContractError(
                    f"fn(x, {rate!r}) returned {type(y).__name__}, which no backend reads; pass backend="
                )
            backend = get_backend(name)
        yv = read_output(backend, y, f"fn(x, {rate!r})", x_np.shape, dtype)
        noises.append(yv.astype(np.float64) / xv)
    return np.stack(noises)


def _noise_checks(noise, rate, dtype, shape, delta, beta, n_mean) -> list[Check]:
    var = rate / (1 - rate)
    sd = math.sqrt(var)
    flat = noise.ravel()
    n = flat.size
    checks = []
    t = stats.ttest_1samp(flat, 1.0)
    checks.append(
        Check(
            "gaussian_mean",
            True,
            "statistical",
            float(t.pvalue),
            None,
            n,
            observed=f"{flat.mean():.6g}",
            expected="1",
            detail=f"t-test; detects a mean off by {delta:.3g} with false-pass <= {beta:g} "
            f"(sized for {n_mean:,} draws)",
        )
    )
    s2 = float(flat.var(ddof=1))
    chi = (n - 1) * s2 / var
    p_var = float(2 * min(stats.chi2.cdf(chi, n - 1), stats.chi2.sf(chi, n - 1)))
    checks.append(
        Check(
            "gaussian_variance",
            True,
            "statistical",
            min(1.0, p_var),
            None,
            n,
            observed=f"{s2:.6g}",
            expected=f"{var:.6g} = rate/(1-rate)",
            detail="chi-square test of the variance (exact under normality)",
        )
    )
    if dtype == "bfloat16":
        checks.append(
            Check(
                "gaussian_shape",
                None,
                "statistical",
                detail="bfloat16 noise has 8 significant bits: discrete at this n, not tested",
            )
        )
    else:
        ks = stats.kstest(flat[:1_000_000], "norm", args=(1.0, sd))
        checks.append(
            Check(
                "gaussian_shape",
                True,
                "statistical",
                float(ks.pvalue),
                None,
                min(n, 1_000_000),
                observed=f"KS D = {ks.statistic:.4g}",
                expected=f"Normal(1, {var:.4g})",
                detail="Kolmogorov-Smirnov against the stated normal",
            )
        )
    checks += _correlation_checks(noise, shape)
    per_pos = noise.reshape(noise.shape[0], -1)
    g = min(GROUPS, per_pos.shape[1])
    if g >= 2:
        groups = np.array_split(np.arange(per_pos.shape[1]), g)
        f = stats.f_oneway(*[per_pos[:, idx].ravel() for idx in groups])
        checks.append(
            Check(
                "homogeneity_blocks",
                True,
                "statistical",
                float(f.pvalue),
                None,
                n,
                observed=f"F = {f.statistic:.4g}",
                expected=f"equal means across {g} blocks",
                detail="one-way ANOVA",
            )
        )
    return checks


def _correlation_checks(noise, shape) -> list[Check]:
    def corr_check(name, a, b, what):
        a, b = a.ravel(), b.ravel()
        r, p = stats.pearsonr(a, b)
        return Check(
            name,
            True,
            "statistical",
            float(p),
            None,
            a.size,
            observed=f"r = {r:.4g}",
            expected="0 (independent)",
            detail=f"Pearson correlation over {a.size:,} {what}",
        )

    out = []
    length = shape[-1] - shape[-1] % 2
    if length >= 2:
        out.append(
            corr_check(
                "neighbour_independence", noise[..., 0:length:2], noise[..., 1:length:2], "disjoint neighbour pairs"
            )
        )
    else:
        out.append(Check("neighbour_independence", None, "statistical", detail="last axis too short"))
    rows = shape[0] - shape[0] % 2
    if len(shape) > 1 and rows >= 2:
        out.append(
            corr_check(
                "row_independence", noise[:, 0:rows:2], noise[:, 1:rows:2], "disjoint pairs of rows of the batch"
            )
        )
    else:
        out.append(Check("row_independence", None, "statistical", detail="no batch of rows"))
    out.append(corr_check("stateful_fresh", noise[:-1], noise[1:], "positions of successive calls"))
    return out


__all__ = ["verify_gaussian_dropout"]
