"""verify_drop_path(fn, rate, shape): DropPath / stochastic depth, as timm's ``drop_path`` and
torchvision's ``stochastic_depth`` define it.

The contract: one Bernoulli(1 - rate) decision per sample (``mode="batch"``: one per call), every
element of a sample sharing its fate, kept samples x / (1 - rate) within the rounding bound
(``scale_by_keep=False``: x unchanged), decisions independent across samples and calls, x
unchanged at rate 0 and in inference, zeros at rate 1.

It is plain dropout with the noise shape (N, 1, ..., 1) (mode "batch": (1, ..., 1)), so the
battery runs on those units: fn is called through an adapter that takes the noise shape the
battery passes and ignores it, and the battery reads one unit per sample.  The families that
need many units per call are replaced (``drop_path_checks``); the keep test's default
discrepancy is a tenth of min(rate, 1 - rate) (a sample is one draw: the battery's 1% would
take millions of samples), and mode "batch" makes one call per decision, as many as that test
needs (the ``drop_path_design`` finding says how many).

``layer=True``: fn is ``make_layer(rate, seed)``; the battery runs on the layer's training calls
and verify_layer's probe adds inference_identity, mode_transitions, fit, instances and
config_round_trip (each with its framework's meaning: torch's ``train()``/``eval()``).
Budget: as verify_layer, the battery gets half of false_fail_rate, the layer's statistical
entries share the other half (Bonferroni).  Tested in tests/test_drop_path.py.
"""

from __future__ import annotations

import inspect

from .._checks import check_callable, check_choice, check_count, check_flag, check_open_unit, check_rate
from ..report import Finding, Report
from .api import run_battery
from .config import _validate_shape, configure, name_of
from .drop_path_checks import DropPathKind, takes_training
from .layers import _after_call

DEFAULT_DROP_PATH_SHAPE = (32, 16, 14, 14)  # a ResNet stage's activations: 32 samples
PROBE_SAMPLES = 128  # samples per call of the layer checks (mode "row"): 2 calls show a rate of 0
LAYER_STATISTICAL = ("mode_transitions", "fit", "instances", "config_round_trip")


def verify_drop_path(
    fn,
    rate,
    shape=DEFAULT_DROP_PATH_SHAPE,
    *,
    mode="row",
    scale_by_keep=True,
    dtype="float32",
    seed=0,
    stateful=False,
    layer=False,
    backend=None,
    backward=None,
    false_fail_rate=1e-6,
    false_pass_rate=1e-3,
    discrepancy=None,
    max_calls=20_000,
    exact_scale=False,
    call_timeout=300.0,
) -> Report:
    """Prove or refute a DropPath (stochastic depth) implementation.

    ``fn(x, rate, seed)`` with the seed in the backend's form (as ``verify``'s stateless contract);
    ``stateful=True``: ``fn(x, rate)``, the battery seeding the frameworks' global generators;
    ``layer=True``: ``fn`` is ``make_layer(rate, seed)`` returning a layer or module (as
    ``verify_layer``).  ``mode``: "row" (one decision per sample, along the first axis) or
    "batch" (one per call).  ``scale_by_keep=False``: kept values must be x bit for bit.
    ``discrepancy`` (default a tenth of min(rate, 1 - rate)): the keep-probability error the
    keep test detects with probability >= 1 - false_pass_rate.  The other arguments are
    ``verify``'s; a function with a ``training`` parameter is also called with ``training=False``
    (inference_identity), every other call leaves it out, as the contract calls fn.
    """
    check_callable(fn, "fn")
    check_choice(mode, "mode", ("row", "batch"))
    scale_by_keep = check_flag(scale_by_keep, "scale_by_keep")
    layer = check_flag(layer, "layer")
    stateful = check_flag(stateful, "stateful") or layer
    if isinstance(rate, (int, float)) and rate == 1:
        raise ValueError("rate (1.0) must be in [0, 1): every run checks rate 1 already (the rate_one entry)")
    rate = check_rate(rate)
    shape = _validate_shape(shape, "shape")
    alpha = check_open_unit(false_fail_rate, "false_fail_rate")
    seed = check_count(seed, "seed")
    if discrepancy is None and 0 < rate < 1:
        discrepancy = 0.1 * min(rate, 1 - rate)
    units = ((shape[0],) if mode == "row" else (1,)) + (1,) * (len(shape) - 1)
    probe = None
    if layer:
        call, probe, name = _layer_call(fn, rate, dtype, shape, mode, seed)
        backend = probe.framework
    else:
        call, name = _function_call(fn, stateful), name_of(fn)
    counter = {"calls": 0}

    def adapter(x, r, *seed_, noise_shape=None):  # the battery's noise shape is drop path's own units
        counter["calls"] += 1
        return call(r, x, seed_[0] if seed_ else None, None)

    cfg = configure(
        adapter,
        rate=rate,
        dtype=dtype,
        shape=shape,
        noise_shape=units if len(shape) > 1 or mode == "batch" else None,
        seed=seed,
        stateful=stateful,
        backend=backend,
        reference=None,  # no framework stream is drop path's: any correct Bernoulli draw
        false_fail_rate=alpha / 2 if layer else alpha,
        false_pass_rate=false_pass_rate,
        discrepancy=discrepancy,
        strict_nominal=False,
        max_calls=max_calls,
        backward=backward,
        exact_scale=exact_scale,
        mechanism=None,
        call_timeout=call_timeout,
    )
    cfg.fn_name, cfg.probe = name, None
    kind = DropPathKind(mode, scale_by_keep, call, not layer and takes_training(fn))
    report = run_battery(cfg, kind)
    checks, findings, samples = report.checks, report.findings, report.samples
    findings.append(_design_finding(report, mode, shape, counter["calls"], cfg))
    if not layer:
        findings.extend(_training_default(fn, report))
    else:
        extra, samples = _layer_checks(probe, fn, cfg, alpha), samples + probe.samples
        checks = [c for c in checks if c.name != "inference_identity"] + extra
        findings += probe.findings
    line = _reproduce_line(fn, rate, shape, mode, scale_by_keep, dtype, seed, stateful, layer, alpha, discrepancy)
    for c in checks:  # the battery's lines name verify() on the adapter: replay verify_drop_path instead
        c.reproduce = line + _after_call(c.reproduce) if c.reproduce else line
    config = {
        "api": "verify_drop_path",
        "fn": name,
        "rate": rate,
        "dtype": cfg.dtype,
        "shape": list(shape),
        "mode": mode,
        "scale_by_keep": scale_by_keep,
        "seed": seed,
        "stateful": stateful,
        "layer": layer,
        "false_fail_rate": alpha,
        "false_pass_rate": cfg.beta,
        "discrepancy": cfg.delta if 0 < rate < 1 else None,
        "backend": cfg.backend_name,
        "backward": cfg.backward,
        "exact_scale": cfg.exact_scale,
    }
    return Report(all(c.passed is not False for c in checks), checks, findings, samples, seed, config)


def _function_call(fn, stateful: bool):
    def call(rate, x, seed, training):
        args = (x, rate) if stateful else (x, rate, seed)
        return fn(*args) if training is None else fn(*args, training=training)

    return call


def _layer_call(make_layer, rate, dtype, shape, mode, seed):
    """The layer's training calls as a function, its probe, and its name."""
    from .._checks import check_dtype
    from .layer_probe import _make, _name
    from .layers import _probe_class

    dtype = check_dtype(dtype)
    first = _make(make_layer, rate, seed)
    if mode == "row":
        probe_shape = (max(shape[0], PROBE_SAMPLES),) + tuple(shape[1:])
        noise = (probe_shape[0],) + (1,) * (len(shape) - 1)
    else:
        probe_shape, noise = tuple(shape), (1,) * len(shape)
    probe = _probe_class(first)(make_layer, rate, dtype, probe_shape, noise, seed, "dropout")
    layers = {}

    def call(r, x, seed_, training):
        if r not in layers:
            layers[r] = _make(make_layer, r, seed + len(layers))
        return probe.forward(layers[r], x, True if training is None else training)

    return call, probe, _name(first)


def _layer_checks(probe, make_layer, cfg, alpha) -> list:
    """verify_layer's entries for the layer, levels alpha / 2 split by Bonferroni."""
    from .layer_probe import _make

    probe.keep = cfg.keep
    level = alpha / 2 / len(LAYER_STATISTICAL)
    layer = _make(make_layer, cfg.rate, cfg.seed)
    checks = [probe.guarded("inference_identity", probe.inference_identity, layer)]
    checks += [probe.guarded(name, getattr(probe, name), level) for name in LAYER_STATISTICAL]
    for c in checks:
        if c.kind == "statistical" and c.pvalue is not None:
            c.level, c.passed = level, c.pvalue > level and c.passed is not False
    return checks


def _design_finding(report, mode, shape, calls, cfg) -> Finding:
    keep = report.check("keep_fraction") if any(c.name == "keep_fraction" for c in report.checks) else None
    n = keep.values.get("n") if keep is not None and keep.values else None
    per = f"one decision per sample: {shape[0]} per call" if mode == "row" else "one decision per call"
    text = f"mode {mode!r}, {per}; {calls:,} calls of fn"
    if n:
        text += (
            f"; the keep test used {n:,} decisions, designed to detect a keep probability off by {cfg.delta:.3g} "
            f"with probability >= {1 - cfg.beta:g}"
        )
    return Finding("drop_path_design", text, {"calls": calls, "decisions": n})


def _training_default(fn, report) -> list:
    """A training parameter that defaults to False (timm's drop_path): fn(x, rate) does nothing."""
    try:
        param = inspect.signature(fn).parameters.get("training")
    except (TypeError, ValueError):
        return []
    keep = next((c for c in report.checks if c.name == "keep_fraction"), None)
    if param is None or param.default is not False or keep is None or not keep.values:
        return []
    if keep.values.get("kept") != keep.values.get("n"):
        return []
    return [
        Finding(
            "training_default",
            f"{name_of(fn)} has training=False by default and kept every draw: called as fn(x, rate) it does "
            "nothing; verify functools.partial(fn, training=True)",
            True,
        )
    ]


def _reproduce_line(fn, rate, shape, mode, scale_by_keep, dtype, seed, stateful, layer, alpha, discrepancy) -> str:
    qual, module = getattr(fn, "__qualname__", "") or "", getattr(fn, "__module__", "") or ""
    name = f"{module}.{qual}" if qual and "<" not in qual and module not in ("", "__main__") else (qual or "fn")
    if "<" in name:  # a lambda or a local function: the reader substitutes their own
        name = "make_layer" if layer else "fn"
    opts = [f"{rate!r}", f"{list(shape)}"]
    if mode != "row":
        opts.append(f"mode={mode!r}")
    if not scale_by_keep:
        opts.append("scale_by_keep=False")
    opts += [f"dtype={dtype!r}", f"seed={seed}"]
    opts += ["layer=True"] if layer else ["stateful=True"] if stateful else []
    if discrepancy is not None and discrepancy != 0.1 * min(rate, 1 - rate):
        opts.append(f"discrepancy={discrepancy!r}")
    if alpha != 1e-6:
        opts.append(f"false_fail_rate={alpha!r}")
    return f"verify_drop_path({name}, {', '.join(opts)})"


__all__ = ["verify_drop_path", "DEFAULT_DROP_PATH_SHAPE"]
