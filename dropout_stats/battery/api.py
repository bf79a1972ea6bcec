"""verify() and verify_alpha_dropout(): configure, pick the backend, run the battery."""

from __future__ import annotations

from ..backends import backend_names, detect_backend, get_backend, seed_globals
from ..report import Check, Finding, Report
from .config import configure, settle
from .kinds import AlphaDropout, Dropout
from .runner import ContractError, Run, read_output


def verify(
    fn,
    *,
    rate,
    dtype="float32",
    shape=None,
    noise_shape=None,
    seed=0,
    stateful=False,
    backend=None,
    reference="auto",
    backward=None,
    recompute=False,
    false_fail_rate=1e-6,
    false_pass_rate=1e-3,
    discrepancy=None,
    strict_nominal=False,
    max_calls=20_000,
    exact_scale=False,
    mechanism="auto",
    call_timeout=300.0,
    drift=None,
) -> Report:
    """Prove or refute a dropout implementation.

    ``fn`` follows ``tf.nn.experimental.stateless_dropout``: ``fn(x, rate, seed, noise_shape=None)``
    with ``seed`` in the backend's form (TensorFlow: an int32 tensor of shape [2]; numpy: a tuple
    of two ints); with ``stateful=True`` it follows ``tf.nn.dropout``: ``fn(x, rate,
    noise_shape=None)``, fresh randomness on every call.

    ``backend``: "tensorflow", "jax", "torch" or "numpy"; None picks it from the type of fn's first output
    (that first call gets numpy inputs; every later call the backend's own arrays, so a stateful
    fn has drawn once before the battery starts).
    ``reference``: a bit-exact stream of the backend to check the kept set against
    ("tensorflow": TF's stateless uniform in x's dtype, or for a 16-bit x in float32, its
    default; "tensorflow-xla": XLA's (jit_compile) stream; "jax", "torch"); "auto" is the
    backend's own (none for numpy); None skips that check for an RNG of its own: the keep is then
    any documented correct mechanism's (``precision.keep_models``) and the report says which fits.
    ``discrepancy`` (default 1% of
    min(keep, 1 - keep)) is the keep-probability error the rate check detects with probability
    at least 1 - false_pass_rate.  The keep probability expected is the backend's dtype-exact one
    (``expected_keep_probability`` for TensorFlow); ``strict_nominal=True`` demands exactly
    1 - rate, whatever the stream (a keep-fraction failure whose draws fit 1 - rate says so).
    ``max_calls`` bounds the calls of the main sequence and of the noise-shape probe (tiny
    shapes): a run cut short says so in a finding and in the keep-fraction check's detail.
    ``backward`` (default: where the backend can differentiate fn) checks the gradient of two
    calls against their own outputs: non-zero exactly where kept, the upstream gradient times
    the scale.  ``recompute=True`` wraps fn in the backend's rematerialisation
    (``tf.recompute_grad``; or name one: "keras.remat") for those calls.
    ``exact_scale``: by default a kept value passes when it is x / (1 - rate) within the rounding
    bound of a correct computation (``precision.scale_bound``: the scale in the input dtype or
    wider, one multiply or divide, a final cast), and bit-identity to a framework formula is a
    finding; ``exact_scale=True`` demands bit-identity to one of the backend's formulas (or the
    correctly rounded quotient), forward and backward.
    ``mechanism``: "threshold" requires the masks to be one uniform compared with the rate (they
    nest across rates: threshold_nesting, threshold_flips); None reports whether they do as a
    finding; "auto" (default) requires it where a reference stream is checked (the framework's
    documented mechanism) and reports it otherwise, so a correct Bernoulli mask drawn afresh
    per rate (numpy's binomial) passes.  The rate sweep's calls at rate / 2 and (1 + rate) / 2
    are labelled with their rate in every check that reads them.
    ``call_timeout``: seconds one call of fn may take before the run stops with a contract failure
    (default 300; None: no limit; a SIGALRM timer, so it applies when verify runs in the main
    thread and fn returns to Python now and then).  A run that fn ends early, by raising or
    hanging, keeps what it measured: which call, what happened, and the keep fraction of the
    draws so far, decided by the exact test.
    ``drift`` (long mode; default None: off): after the main sequence, call fn on the input's first
    rows as many times as it takes to detect a change of the keep probability by ``drift`` after
    any call in the middle half of that sequence (the ``drift`` check; a smaller drift makes more
    calls, and the ``repeats`` check then sees masks that come back that many calls later).
    """
    cfg = configure(
        fn,
        rate=rate,
        dtype=dtype,
        shape=shape,
        noise_shape=noise_shape,
        seed=seed,
        stateful=stateful,
        backend=backend,
        reference=reference,
        false_fail_rate=false_fail_rate,
        false_pass_rate=false_pass_rate,
        discrepancy=discrepancy,
        strict_nominal=strict_nominal,
        max_calls=max_calls,
        backward=backward,
        recompute=recompute,
        exact_scale=exact_scale,
        mechanism=mechanism,
        call_timeout=call_timeout,
        drift=drift,
    )
    return run_battery(cfg, Dropout())


def verify_alpha_dropout(
    fn,
    *,
    rate,
    dtype="float32",
    shape=None,
    noise_shape=None,
    seed=0,
    backend=None,
    keep_dtype="float32",
    backward=None,
    recompute=False,
    false_fail_rate=1e-6,
    false_pass_rate=1e-3,
    discrepancy=None,
    max_calls=20_000,
) -> Report:
    """verify() for alpha dropout (stateful contract): the same mask mechanism, but dropped
    positions hold a * alpha' + b and kept ones a * x + b, with alpha' = -SELU_ALPHA * SELU_SCALE,
    a = ((1 - rate)(1 + rate alpha'^2))^(-1/2), b = -a alpha' rate (Klambauer et al. 2017).

    ``keep_dtype``: the dtype of the uniform compared with the rate; Keras 3's AlphaDropout
    draws it in float32 whatever the input dtype.
    """
    cfg = configure(
        fn,
        rate=rate,
        dtype=dtype,
        shape=shape,
        noise_shape=noise_shape,
        seed=seed,
        stateful=True,
        backend=backend,
        reference=None,
        false_fail_rate=false_fail_rate,
        false_pass_rate=false_pass_rate,
        discrepancy=discrepancy,
        strict_nominal=False,
        max_calls=max_calls,
        keep_dtype=keep_dtype,
        backward=backward,
        recompute=recompute,
    )
    return run_battery(cfg, AlphaDropout(cfg.rate, cfg.dtype))


def run_battery(cfg, kind) -> Report:
    findings = []
    if not cfg.takes_noise_shape:
        findings.append(
            Finding(
                "noise_shape",
                f"{cfg.fn_name} takes no noise_shape argument: it is called as "
                f"fn(x, rate{'' if cfg.stateful else ', seed'}) and the noise-shape checks do not apply",
                None,
            )
        )
    seeded = seed_globals(cfg.seed)  # a stateful fn's draws replay in any process
    if cfg.stateful:
        findings.append(
            Finding("seeded", f"before the first call: {', '.join(seeded)} (stateful contract: a run replays)", seeded)
        )
    try:
        backend, x_np, first = pick_backend(cfg, kind)
        findings.append(settle(cfg, backend))
        if first is None:
            backend.start(cfg)
        run = Run(cfg, backend, kind, findings, x_np=x_np, first_output=first)
        checks = run.run()
    except ContractError as exc:
        checks = [Check("contract", False, detail=str(exc), reproduce=cfg.reproduce())]
        if "run" in locals() and run.evidence["n"]:
            checks.append(_partial_keep(cfg, run))
    passed = all(c.passed is not False for c in checks)
    return Report(passed, checks, findings, cfg.samples, cfg.seed, cfg.as_dict())


def _partial_keep(cfg, run) -> Check:
    """The keep fraction of the draws made before fn broke the contract: the exact test at the
    share of the budget the sequential test would have had, against each correct keep."""
    from ..binomial import proportion_ci, rate_test

    kept, n = run.evidence["kept"], run.evidence["n"]
    level = run.alpha_seq or cfg.alpha
    models = cfg.keep_models or [("", lambda r: cfg.keep)]
    keeps = sorted({float(keep_of(cfg.rate)) for _, keep_of in models})
    pvalues = [rate_test(kept, n, k).pvalue for k in keeps]
    best = max(range(len(keeps)), key=lambda i: pvalues[i])
    ci = proportion_ci(kept, n, confidence_level=1 - max(level, 1e-15))
    return Check(
        "keep_fraction",
        pvalues[best] > level,
        "statistical",
        pvalues[best],
        level,
        n,
        observed=f"{kept}/{n} = {kept / n:.6g}",
        expected=f"{keeps[best]:.10g}" + ("" if len(keeps) == 1 else f" (one of {len(keeps)} correct keeps)"),
        interval=(ci.low, ci.high),
        values={"kept": kept, "n": n, "fraction": kept / n, "expected": keeps[best]},
        detail=f"decided on the {n:,} draws made before fn broke the contract (exact test; the sequential "
        "design's discrepancy is not guaranteed on so few)",
        reproduce=cfg.reproduce(),
    )


def loaded_frameworks() -> list:
    """Backends whose framework this process has already imported (numpy aside)."""
    import sys

    modules = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
    return [name for name in backend_names() if modules.get(name) in sys.modules]


def pick_backend(cfg, kind):
    """The backend named, or the one that owns fn's first output (called with numpy inputs; for the
    numpy backend the output becomes the first main call).  Returns (backend, x as numpy or None,
    output or None)."""
    if cfg.backend_name is not None:
        return get_backend(cfg.backend_name), None, None
    x_np = kind.make_input(cfg.shape, cfg.dtype, cfg.seed)
    seed = (cfg.seed, 0)
    ns = tuple(cfg.noise_shape) if cfg.noise_shape is not None else None
    where = cfg.call_text(cfg.rate, seed, ns)
    hint = (
        f"with backend=None the first call gets numpy inputs, to tell the framework from fn's output; "
        f"pass backend= (CLI --backend), one of {', '.join(repr(n) for n in backend_names())}"
    )
    try:
        y = cfg.invoke(x_np, cfg.rate, seed, ns)
    except Exception as exc:
        # a framework's fn may refuse numpy (TensorFlow 2.12 and ml_dtypes' bfloat16): the loaded
        # frameworks' own arrays next; that call is not kept either
        for name in loaded_frameworks():
            backend = get_backend(name)
            try:
                x, s = backend.native(x_np), backend.seed(seed)
                cfg.invoke(x, cfg.rate, s, ns)
            except Exception:  # noqa: BLE001 - not this framework either
                continue
            return backend, x_np, None
        raise ContractError(f"{where} raised {type(exc).__name__}: {exc} ({hint})") from None
    name = detect_backend(y)
    if name is None:
        raise ContractError(f"{where} returned {type(y).__name__}, which no backend reads ({hint})")
    backend = get_backend(name)
    read_output(backend, y, where, x_np.shape, cfg.dtype)  # a clear error before any other call
    # numpy's output is the first main call; a framework's is not (a compiled fn traces numpy
    # inputs and a Python seed as constants: TensorFlow 2.12 under XLA then draws another stream)
    return backend, x_np, (y if name == "numpy" else None)
