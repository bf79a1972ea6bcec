"""verify_layer(make_layer): a dropout layer as a model uses it, not only its forward call.

Most dropout bugs in the wild are about *when* a layer drops: at inference, not inside fit, never
again after one evaluation call, the same mask on every replica.  verify_layer runs the whole
battery on the layer's ``training=True`` calls (the stateful contract: rate, scale, structure,
independence across calls, the backward pass through the layer), then these checks, each an
entry of the report:

* ``inference_identity`` (exact): ``training=False``, ``training`` omitted outside fit,
  ``model.predict`` and ``model.evaluate`` on a model holding the layer return x bit for bit
  (evaluate: a mean squared error of exactly 0);
* ``mode_transitions``: training, then inference, then training again: the keep rate of the calls
  after the switch (exact binomial test);
* ``fit``: the keep rate of the layer's output inside ``model.fit`` (a model that records it);
* ``instances``: two layers from ``make_layer(rate, None)``, and two in one model, draw independent
  masks (Fisher's exact test); two made with one seed drawing identical masks is a finding;
* ``replicas`` (``replicas=N``): the layer in ``tf.distribute.MirroredStrategy`` over N logical
  CPUs: the masks of different replicas must be independent (exact p-values against independence
  and against identity in the detail);
* ``config_round_trip``: ``get_config``/``from_config`` and a saved and reloaded ``.keras`` model keep
  rate, noise shape and seed, and the reloaded layer still drops at its rate and is the identity at
  inference.

Frameworks: Keras layers on the backend Keras runs on (TensorFlow: every check; JAX: replicas not
run), tf_keras layers; PyTorch modules (``layers_torch``: ``train()``/``eval()`` are the flag) and
Flax NNX modules (``layers_flax``: ``eval()``/``train()`` and ``deterministic=``), each probe
reading the checks above for its framework.  Gaussian dropout has no rate: the statistical
entries bound the share of positions left unchanged (``gaussian.unchanged_share_bound``: noise
that rounds to exactly 1, up to 2.3% of positions in bfloat16).

Budget: the battery gets half of ``false_fail_rate``, the layer's statistical entries share the
other half (Bonferroni), so a correct layer fails with probability <= false_fail_rate.
Corpus: ``corpus.keras_layer_defects()`` (drops at inference, an omitted training flag taken as
training, rate 0 after an inference call, the first mask on every call).  Tested in tests/test_layers.py.
"""

from __future__ import annotations

import importlib
import re

from .._checks import check_callable, check_count, check_dtype, check_flag, check_open_unit, check_rate
from ..report import Report
from .config import DEFAULT_SHAPE, _validate_shape
from .layer_probe import LayerProbe, _is_flax, _is_torch, _make, _name

# The probe of each framework whose layers are not Keras layers: module and class, imported on
# first use (the probe modules import layer_probe, never this module).
PROBES = {"torch": (".layers_torch", "TorchLayerProbe"), "flax": (".layers_flax", "FlaxLayerProbe")}

LAYER_STATISTICAL = ("mode_transitions", "fit", "instances", "config_round_trip")


def use_logical_cpus(n: int) -> None:
    """Split the CPU into n logical devices for the replicas check; call it before TensorFlow runs
    anything (TensorFlow fixes its devices at the first op)."""
    n = check_count(n, "n", minimum=2)
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError as exc:
        raise RuntimeError(f"use_logical_cpus({n}) must run before TensorFlow's first op: {exc}") from None


def verify_layer(
    make_layer,
    *,
    rate,
    dtype="float32",
    shape=None,
    noise_shape=None,
    seed=0,
    kind=None,
    false_fail_rate=1e-6,
    false_pass_rate=1e-3,
    discrepancy=None,
    replicas=None,
    exact_scale=False,
) -> Report:
    """Prove or refute a dropout layer: ``make_layer(rate, seed)`` returns a fresh layer (Keras 3,
    tf_keras, a torch.nn.Module, a flax.nnx.Module, or any object called as
    ``layer(x, training=...)``) computing in ``dtype``.
    ``shape`` and ``noise_shape``: the input and the noise shape the layer applies by itself
    (SpatialDropout: taken from the class name when omitted).  ``kind``: "dropout", "alpha" or
    "gaussian" (default: from the class name).  ``exact_scale``: as ``verify``'s."""
    check_callable(make_layer, "make_layer")
    exact_scale = check_flag(exact_scale, "exact_scale")
    rate = check_rate(rate)
    dtype = check_dtype(dtype)
    seed = check_count(seed, "seed")
    alpha = check_open_unit(false_fail_rate, "false_fail_rate")
    check_open_unit(false_pass_rate, "false_pass_rate")
    if replicas is not None:
        replicas = check_count(replicas, "replicas", minimum=2)
    layer = _make(make_layer, rate, seed)
    kind_given = kind
    kind = kind or _kind_of(layer)
    if kind not in ("dropout", "alpha", "gaussian"):
        raise ValueError(f"kind ({kind!r}) must be 'dropout', 'alpha' or 'gaussian'")
    shape, noise_shape = _geometry(layer, shape, noise_shape)
    probe = _probe_class(layer)(make_layer, rate, dtype, shape, noise_shape, seed, kind)
    probe.exact_scale = exact_scale
    battery = probe.battery(alpha / 2, false_pass_rate, discrepancy)
    entries = list(LAYER_STATISTICAL) + (["replicas"] if replicas else [])
    level = alpha / 2 / len(entries)
    checks = [
        probe.guarded("inference_identity", probe.inference_identity, layer),
        *(
            probe.guarded(name, getattr(probe, name), level)
            for name in ("mode_transitions", "fit", "instances", "config_round_trip")
        ),
    ]
    if replicas:
        checks.append(probe.guarded("replicas", probe.replicas, replicas, level))
    for c in checks:
        if c.kind == "statistical" and c.pvalue is not None:
            c.level, c.passed = level, c.pvalue > level and c.passed is not False
    all_checks = battery.checks + checks
    line = _reproduce_line(make_layer, rate, dtype, shape, noise_shape, seed, kind_given, replicas, exact_scale, alpha)
    for c in all_checks:  # the battery's lines name verify() on an internal wrapper: replay the layer instead
        c.reproduce = line + _after_call(c.reproduce) if c.reproduce else line
    config = dict(
        battery.config, fn=_name(layer), kind=kind, replicas=replicas, false_fail_rate=alpha, api="verify_layer"
    )
    return Report(
        all(c.passed is not False for c in all_checks),
        all_checks,
        battery.findings + probe.findings,
        battery.samples + probe.samples,
        seed,
        config,
    )


def _reproduce_line(make_layer, rate, dtype, shape, noise_shape, seed, kind, replicas, exact_scale, alpha) -> str:
    """verify_layer(...) as the user calls it: make_layer by its importable name where it has one."""
    qual = getattr(make_layer, "__qualname__", "") or ""
    module = getattr(make_layer, "__module__", "") or ""
    name = f"{module}.{qual}" if qual and "<" not in qual and module not in ("", "__main__") else (qual or "make_layer")
    if "<" in name:  # a lambda or a local function: the reader substitutes their own factory
        name = "make_layer"
    opts = [f"rate={rate!r}", f"dtype={dtype!r}", f"shape={list(shape)}", f"seed={seed}"]
    if noise_shape is not None:
        opts.append(f"noise_shape={list(noise_shape)}")
    if kind is not None:  # given by the caller (the class name decides otherwise)
        opts.append(f"kind={kind!r}")
    if replicas:
        opts.append(f"replicas={replicas}")
    if exact_scale:
        opts.append("exact_scale=True")
    if alpha != 1e-6:
        opts.append(f"false_fail_rate={alpha!r}")
    return f"verify_layer({name}, {', '.join(opts)})"


def _after_call(line: str) -> str:
    """What follows a reproduce line's verify(...) call ("; seeds [...]"), or ""."""
    depth = 0
    for i, ch in enumerate(line):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == ")" and depth == 0:
            return line[i + 1 :]
    return ""


def _probe_class(layer):
    """The probe for the layer's framework: torch modules, Flax NNX modules, Keras layers (on the
    backend Keras runs on; tf_keras and other objects: TensorFlow)."""
    for framework, is_it in (("torch", _is_torch), ("flax", _is_flax)):
        if is_it(layer):
            module, cls = PROBES[framework]
            return getattr(importlib.import_module(module, __package__), cls)
    from .recurrent_probe import _framework_of

    framework = _framework_of(layer)
    if framework == "tensorflow":
        return LayerProbe
    return type(f"LayerProbe_{framework}", (LayerProbe,), {"framework": framework, "reference": None})


def _kind_of(layer) -> str:
    name = type(layer).__name__
    return "alpha" if "Alpha" in name else "gaussian" if "Gaussian" in name else "dropout"


def _geometry(layer, shape, noise_shape):
    """Channel dropout draws once per (batch, channel): Keras's SpatialDropoutNd on channels-last
    inputs, PyTorch's DropoutNd and FeatureAlphaDropout on channels-first ones."""
    name = type(layer).__name__
    found = re.fullmatch(r"SpatialDropout(\d)D", name) or re.fullmatch(r"Dropout(\d)d", name)
    dims = int(found.group(1)) if found else 1 if name == "FeatureAlphaDropout" else 0
    first = _is_torch(layer)
    if shape is None:
        if dims:  # few elements per unit: the draws are the (batch, channel) units
            spatial = (4,) if name == "FeatureAlphaDropout" else (2,) * dims
            return (
                ((64, 64) + spatial, (64, 64) + (1,) * len(spatial))
                if first
                else ((64,) + spatial + (64,), (64,) + (1,) * dims + (64,))
            )
        return DEFAULT_SHAPE, noise_shape
    shape = _validate_shape(shape, "shape")
    if dims and noise_shape is None:
        noise_shape = (
            (shape[:2] + (1,) * (len(shape) - 2)) if first else ((shape[0],) + (1,) * (len(shape) - 2) + (shape[-1],))
        )
    return shape, noise_shape


__all__ = ["verify_layer", "use_logical_cpus"]
