"""verify() and verify_alpha_dropout(): configure, pick the backend, run the battery."""

from __future__ import annotations

from ..backends import backend_names, detect_backend, get_backend
from ..report import Check, Report
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
    ("tensorflow": TF's stateless uniform; "tensorflow-xla": XLA's (jit_compile) stream);
    "auto" is the backend's own (none for numpy); None skips that check (an RNG of its own:
    the black-box threshold checks carry the proof).  ``discrepancy`` (default 1% of
    min(keep, 1 - keep)) is the keep-probability error the rate check detects with probability
    >= 1 - false_pass_rate.  The keep probability expected is the backend's dtype-exact one
    (``expected_keep_probability`` for TensorFlow); ``strict_nominal=True`` demands 1 - rate.
    ``max_calls`` bounds the calls of the main sequence and of the noise-shape probe (tiny
    shapes): a run cut short says so in a finding and in the keep-fraction check's detail.
    ``backward`` (default: where the backend can differentiate fn) checks the gradient of two
    calls against their own outputs: non-zero exactly where kept, the upstream gradient times
    the scale.  ``recompute=True`` wraps fn in the backend's rematerialisation
    (``tf.recompute_grad``; or name one: "keras.remat") for those calls.
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
    try:
        backend, x_np, first = pick_backend(cfg, kind)
        findings.append(settle(cfg, backend))
        if first is None:
            backend.start(cfg)
        checks = Run(cfg, backend, kind, findings, x_np=x_np, first_output=first).run()
    except ContractError as exc:
        checks = [Check("contract", False, detail=str(exc), reproduce=cfg.reproduce())]
    passed = all(c.passed is not False for c in checks)
    return Report(passed, checks, findings, cfg.samples, cfg.seed, cfg.as_dict())


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
    where = (
        f"fn(x, {cfg.rate!r}, noise_shape={list(ns) if ns else None})"
        if cfg.stateful
        else f"fn(x, {cfg.rate!r}, seed={list(seed)}, noise_shape={list(ns) if ns else None})"
    )
    hint = (
        f"with backend=None the first call gets numpy inputs, to tell the framework from fn's output; "
        f"pass backend= ({', '.join(repr(n) for n in backend_names())})"
    )
    try:
        y = cfg.fn(x_np, cfg.rate, noise_shape=ns) if cfg.stateful else cfg.fn(x_np, cfg.rate, seed, noise_shape=ns)
    except Exception as exc:
        # a framework's fn may refuse numpy (TensorFlow 2.12 and ml_dtypes' bfloat16): the loaded
        # frameworks' own arrays next; that call is not kept either
        for name in loaded_frameworks():
            backend = get_backend(name)
            try:
                x, s = backend.native(x_np), backend.seed(seed)
                cfg.fn(x, cfg.rate, noise_shape=ns) if cfg.stateful else cfg.fn(x, cfg.rate, s, noise_shape=ns)
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
