"""dropout-stats verify: verify() on a user's MODULE:FUNCTION."""

from __future__ import annotations

import importlib
import os
import sys

from ._common import EXIT_FAILED, EXIT_OK, RUN, UsageError, check_design, quiet_imports, quiet_tensorflow
from .files import save_text


def _load_function(spec: str):
    if ":" not in spec:
        raise UsageError(f"FUNCTION ({spec}) must be MODULE:FUNCTION, e.g. mypkg.layers:dropout")
    module_name, _, attr = spec.partition(":")
    sys.path.insert(0, os.getcwd())
    try:
        with quiet_imports():
            module = importlib.import_module(module_name)
    except Exception as exc:
        raise UsageError(f"could not import {module_name!r}: {type(exc).__name__}: {exc}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"{module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UsageError(f"{spec} ({type(obj).__name__}) is not callable")
    return obj


def _check_signature(fn, stateful: bool) -> None:
    import inspect

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    params = list(sig.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    varargs = any(p.kind == p.VAR_POSITIONAL for p in params)
    need = 2 if stateful else 3
    contract = "fn(x, rate, noise_shape=None)" if stateful else "fn(x, rate, seed, noise_shape=None)"
    if len(positional) < need and not varargs:
        raise UsageError(
            f"{getattr(fn, '__name__', fn)}{sig} does not follow the contract {contract}"
            + ("" if stateful else " (pass --stateful for tf.nn.dropout's contract)")
        )


def _check_backend_installed(backend) -> None:
    """--backend names a framework this installation has: else the extra to install, before the
    user's module (and a framework) loads."""
    import importlib.util

    if backend in (None, "numpy"):
        return
    if importlib.util.find_spec(backend) is None:
        extras = ["tensorflow", "keras-jax"] if backend == "keras" else [backend]
        install = " or ".join(f'"dropout_stats[{e}]"' for e in extras)
        raise UsageError(f"--backend ({backend}) is not installed here: pip install {install}")


def _check_not_the_module(spec: str, json_path) -> None:
    """--json must not replace the module being verified (a top-level module's file is found
    without importing anything)."""
    import importlib.util

    module_name = spec.partition(":")[0]
    if json_path is None or not module_name or "." in module_name:
        return
    sys.path.insert(0, os.getcwd())
    try:
        found = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return
    finally:
        sys.path.remove(os.getcwd())
    if found is not None and found.origin and os.path.exists(json_path):
        if os.path.samefile(found.origin, json_path):
            raise UsageError(f"--json ({json_path}) is the module being verified ({found.origin})")


def cmd_verify(args) -> int:
    _check_not_the_module(args.function, args.json)
    _check_backend_installed(args.backend)
    check_design(
        args.rate, args.false_fail_rate
    )  # a rate no sample size can test: refused before the user's module loads
    quiet_tensorflow()  # before the user's module imports TensorFlow: its start-up lines stay away
    RUN.where = f"loading {args.function}"
    fn = _load_function(args.function)
    RUN.where = f"verifying {args.function}"
    _check_signature(fn, args.stateful)
    from ..battery import verify

    try:
        report = verify(
            fn,
            rate=args.rate,
            dtype=args.dtype,
            shape=args.shape,
            noise_shape=args.noise_shape,
            seed=args.seed,
            stateful=args.stateful,
            false_fail_rate=args.false_fail_rate,
            backend=args.backend,
            reference=None if args.no_reference else "auto",
            backward=False if args.no_backward else None,
            recompute=args.recompute,
            exact_scale=args.exact_scale,
            call_timeout=args.call_timeout,
            drift=args.drift,
            mechanism=None if args.mechanism == "none" else args.mechanism,
        )
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    print(report)
    if args.json:
        save_text(args.json, report.to_json(indent=1), "--json")
    return EXIT_OK if report.passed else EXIT_FAILED
