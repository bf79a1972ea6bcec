"""dropout-stats: audit the installed frameworks' dropout, verify an implementation, explain a count.

Exit codes: 0 every check passed, 1 a check failed, 2 bad usage (a clear message, no traceback).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import re
import sys
import tempfile
import time

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    pass


# -- helpers ----------------------------------------------------------------------------------
def write_atomically(path: str, text: str) -> None:
    """Write to a temporary file beside ``path`` and rename: never a half-written report."""
    directory = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(directory):
        raise UsageError(f"--json/--plot path ({path}) is in a folder that does not exist: {directory}")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".dropout-stats-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, _umasked(0o666))  # mkstemp makes 0600: honour the umask, as open() would
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umasked(mode: int) -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def _require_matplotlib():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'dropout-stats[plot]'") from None
    return plt


def _save_figure(fig, path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(directory):
        raise UsageError(f"--plot path ({path}) is in a folder that does not exist: {directory}")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".dropout-stats-", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=110)
        os.chmod(tmp, _umasked(0o666))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:  # pragma: no cover
        pass


_TF_NOISE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\)|I\d{4} .*\] oneDNN custom operations)")


@contextlib.contextmanager
def _quiet_imports():
    """Hold back what native code writes to stderr while modules load (TensorFlow's absl start-up
    lines ignore TF_CPP_MIN_LOG_LEVEL), then pass on everything but those lines."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            for line in held.read().decode(errors="replace").splitlines():
                if not _TF_NOISE.match(line):
                    print(line, file=sys.stderr)


class Progress:
    """A bar on a terminal, plain lines otherwise."""

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.done, self.stream = total, 0, stream
        self.tty = stream.isatty()
        self.start = time.perf_counter()

    def step(self, label: str, status: str) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.start
        if self.tty:
            width = 30
            filled = int(width * self.done / self.total)
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                              f"{elapsed:5.0f}s {label[:50]:50s}")
            if self.done == self.total:
                self.stream.write("\n")
        else:
            self.stream.write(f"[{self.done}/{self.total}] {elapsed:6.1f}s {label}: {status}\n")
        self.stream.flush()


# -- audit ------------------------------------------------------------------------------------
_FRAMEWORK_NAMES = {"tensorflow": "TensorFlow", "jax": "JAX", "keras-jax": "Keras on JAX", "torch": "PyTorch"}


def _framework_versions(frameworks) -> dict:
    """{framework: version} of the frameworks audited (imported by their adapters by now)."""
    package = {"keras-jax": "keras"}
    return {fw: sys.modules[package.get(fw, fw)].__version__ for fw in frameworks
            if package.get(fw, fw) in sys.modules}


def _audit_plan(args):
    """The frameworks to audit (all installed unless named) and their (adapter, dtype) runs."""
    from .adapters import adapters, installed_frameworks

    installed = installed_frameworks()
    # Keras picks one backend per process: by default Keras is audited on TensorFlow where
    # TensorFlow is installed, on JAX (keras-jax) only where it is not or when asked
    frameworks = args.framework or [fw for fw in installed if fw != "keras-jax" or "tensorflow" not in installed]
    if "keras-jax" in frameworks and "tensorflow" in frameworks:
        raise UsageError("--framework tensorflow and keras-jax cannot run in one process: Keras picks its backend "
                         "once, at import; run two audits (--framework tensorflow, then --framework keras-jax)")
    for fw in frameworks:
        if fw not in installed:
            raise UsageError(f"--framework ({fw}) is not installed here: pip install 'dropout-stats[{fw}]'")
    if not frameworks:
        raise UsageError("no framework to audit is installed: pip install 'dropout-stats[tensorflow]' "
                         "(or [jax], [torch])")
    dtypes = args.dtypes or (["float32", "bfloat16"] if args.quick else ["float16", "bfloat16", "float32", "float64"])
    plan = []
    for fw in frameworks:
        with _quiet_imports():
            found = adapters(framework=fw, modes=("eager",) if args.quick else None)
        plan += [(a, d) for a in found for d in dtypes if d in a.dtypes]
    return frameworks, plan


def cmd_audit(args) -> int:
    _quiet_tensorflow()
    frameworks, plan = _audit_plan(args)
    if "tensorflow" in frameworks:
        from .battery.layers import use_logical_cpus

        try:
            use_logical_cpus(2)  # for the layers' replicas check: before TensorFlow's first op
        except RuntimeError:  # pragma: no cover - already initialised (the audit run from Python)
            pass
    versions = _framework_versions(frameworks)
    progress = Progress(len(plan))
    results, seconds = [], []
    for adapter, dtype in plan:
        t0 = time.perf_counter()
        report = adapter.verify(rate=args.rate, dtype=dtype, seed=args.seed, false_fail_rate=args.false_fail_rate)
        seconds.append(time.perf_counter() - t0)
        results.append((adapter, dtype, report))
        progress.step(f"{adapter.name} {dtype}", "pass" if report.passed else
                      "FAIL " + ", ".join(c.name for c in report.failures))
    print(_audit_table(results, args.rate, versions))
    modes = dict.fromkeys(a.mode for a, _ in plan)
    by_mode = {m: sum(t for (a, _, _), t in zip(results, seconds) if a.mode == m) for m in modes}
    print("\ntime by mode: " + ", ".join(f"{m} {t:.1f} s" for m, t in by_mode.items()))
    from .adapters import recompute_agreement

    recompute = {fw: recompute_agreement(fw, rate=args.rate) for fw in frameworks}
    print(_recompute_text({k: v for fw in frameworks for k, v in recompute[fw].items()}, args.rate))
    with _quiet_imports():  # Keras on JAX imports TensorFlow, where installed, to save a model
        layers = _audit_layers(args, frameworks)
    if layers:
        print(_layers_text(layers, args.rate))
    recurrent = _audit_recurrent(args, frameworks)
    if recurrent:
        print(_recurrent_text(recurrent))
    attention = _audit_attention(args, frameworks)
    if attention:
        print(_attention_text(attention))
    if args.json:
        payload = {"schema": "dropout-stats/audit/1", "frameworks": versions,
                   "tensorflow": versions.get("tensorflow"), "keras": _keras_version(),
                   "layers": [{"layer": name, "seconds": round(t, 3), "report": r.to_dict()} for name, r, t in layers],
                   "recurrent": [{"layer": name, "seconds": round(t, 3), "report": r.to_dict()}
                                 for name, r, t in recurrent],
                   "attention": [{"layer": name, "seconds": round(t, 3), "report": r.to_dict()}
                                 for name, r, t in attention],
                   "tf_keras": _tf_keras_version(), "seconds_by_mode": by_mode,
                   "rate": args.rate, "recompute": recompute,
                   "seed": args.seed, "false_fail_rate": args.false_fail_rate, "quick": bool(args.quick),
                   "facts": _tensorflow_facts() if "tensorflow" in frameworks else {},
                   "results": [{"framework": a.backend, "entry_point": a.entry_point, "mode": a.mode, "dtype": d,
                                "seconds": round(t, 3), "report": r.to_dict()}
                               for (a, d, r), t in zip(results, seconds)]}
        write_atomically(args.json, json.dumps(payload, indent=1, sort_keys=True))
        print(f"wrote {args.json}")
    if args.plot:
        _audit_plot(results, args.plot, args.rate, versions)
        print(f"wrote {args.plot}")
    ok = all(r.passed for _, _, r in results) and all(r.passed for _, r, _ in layers + recurrent + attention)
    return EXIT_OK if ok else EXIT_FAILED


def _recurrent_rates(rate: float) -> tuple:
    """(dropout, recurrent_dropout) for the audit: two different rates, so that a recurrent mask
    drawn at the input rate shows."""
    return rate, (2 * rate if 2 * rate < 0.9 else rate / 2)


def _keras_audited(frameworks):
    """keras, where the audit covers its recurrent and attention layers: Keras 2 or 3 on
    TensorFlow, Keras 3 on JAX (keras-jax); else None."""
    if not {"tensorflow", "keras-jax"} & set(frameworks):
        return None
    import keras

    return keras if keras.backend.backend() in ("tensorflow", "jax") else None


def _audit_recurrent(args, frameworks) -> list:
    """verify_recurrent on Keras's SimpleRNN, GRU and LSTM, eagerly and (TensorFlow) in tf.function."""
    from .battery.recurrent import verify_recurrent

    keras = _keras_audited(frameworks)
    if keras is None:
        return []
    r_in, r_rec = _recurrent_rates(args.rate)
    modes = ["eager"] + (["function"] if keras.backend.backend() == "tensorflow" and not args.quick else [])
    out = []
    for mode in modes:
        for cls in ("SimpleRNN", "GRU", "LSTM"):
            t0 = time.perf_counter()
            report = verify_recurrent(getattr(keras.layers, cls), dropout=r_in, recurrent_dropout=r_rec,
                                      seed=args.seed, false_fail_rate=args.false_fail_rate, mode=mode)
            on = " (JAX)" if keras.backend.backend() == "jax" else ""
            out.append((f"keras.layers.{cls}{on} [{mode}]", report, time.perf_counter() - t0))
    return out


def _audit_attention(args, frameworks) -> list:
    """verify_attention on Keras's MultiHeadAttention, Attention and AdditiveAttention (on the
    backend the audit runs Keras on), and on torch's MultiheadAttention and
    scaled_dot_product_attention."""
    from .battery.attention import verify_attention

    if args.rate == 0:
        return []
    todo = []
    keras = _keras_audited(frameworks)
    if keras is not None:
        on = " (JAX)" if keras.backend.backend() == "jax" else ""
        todo += [(f"keras.layers.{cls}{on}", getattr(keras.layers, cls))
                 for cls in ("MultiHeadAttention", "Attention", "AdditiveAttention")]
    if "torch" in frameworks:
        from .adapters.torch import attention_factories

        todo += attention_factories()
    out = []
    for name, layer_cls in todo:
        t0 = time.perf_counter()
        report = verify_attention(layer_cls, rate=args.rate, seed=args.seed, false_fail_rate=args.false_fail_rate)
        out.append((name, report, time.perf_counter() - t0))
    return out


def _attention_text(attention) -> str:
    lines = ["", *_wrap100(f"attention layers (verify_attention, float32, rate {attention[0][1].config['rate']}): "
                           "every attention probability read out exactly; its rate, heads, batch, queries, keys, "
                           "calls, scale, inference, backward")]
    for name, r, _ in attention:
        lines += _wrap100(f"  {name}: " + ("pass" if r.passed else "FAIL: " + ", ".join(c.name for c in r.failures)))
    return "\n".join(lines)


def _recurrent_text(recurrent) -> str:
    r0 = recurrent[0][1].config
    lines = ["", *_wrap100(f"recurrent layers (verify_recurrent, float32, dropout {r0['dropout']}, recurrent_dropout "
                           f"{r0['recurrent_dropout']}): each mask read out exactly through chosen weights; its rate, "
                           "time steps, batch, calls, batch shape, scale, inference, backward")]
    for name, r, _ in recurrent:
        words = "pass" if r.passed else "FAIL: " + ", ".join(c.name for c in r.failures)
        semantics = "; ".join(f.detail for f in r.findings if f.name == "time_semantics")
        lines += _wrap100(f"  {name}: {words}" + (f" ({semantics})" if semantics else ""))
    return "\n".join(lines)


def _audit_layers(args, frameworks) -> list:
    """verify_layer on every Keras dropout layer (on TensorFlow: 2 replicas), flax.nnx.Dropout and
    every torch dropout module: (name, report, seconds)."""
    from .adapters import layer_factories
    from .battery.layers import verify_layer

    layers = []
    for fw in ("tensorflow", "keras-jax", "jax", "torch"):
        if fw not in frameworks:
            continue
        for name, make in layer_factories("float32", framework=fw):
            t0 = time.perf_counter()
            report = verify_layer(make, rate=args.rate, seed=args.seed, replicas=2 if fw == "tensorflow" else None,
                                  false_fail_rate=args.false_fail_rate)
            layers.append((name, report, time.perf_counter() - t0))
    return layers


def _tensorflow_facts() -> dict:
    from .probes import all_probes

    return all_probes()


def _versions_text(versions: dict) -> str:
    return ", ".join(f"{_FRAMEWORK_NAMES.get(fw, fw)} {v}" for fw, v in versions.items())


def _layers_text(layers, rate) -> str:
    """verify_layer on every Keras dropout layer: its verdict, the layer checks, the replicas."""
    from .diagnosis import diagnose

    lines = ["", *_wrap100(f"layers in a model (verify_layer, float32, rate {rate}; Keras: 2 replicas; torch: train() "
                           "and eval() are the flag): the training flag, fit, mode switches, instances, replicas, "
                           "config round trip")]
    for name, r, _ in layers:
        if r.passed:
            lines.append(f"  {name}: pass")
        else:
            words, others = diagnose(r)
            lines += _wrap100(f"  {name}: FAIL: {words}" + (f" (also: {', '.join(others)})" if others else ""))
        replica = next((f for f in r.findings if f.name == "replicas"), None)
        if replica is not None:
            lines += _wrap100(f"    {replica.detail}; {replica.measured}")
    return "\n".join(lines)


def _recompute_text(facts: dict, rate: float) -> str:
    """Each entry point's backward mask under activation checkpointing, in words."""
    independent = rate ** 2 + (1 - rate) ** 2
    lines = ["", *_wrap100(f"backward pass under activation checkpointing (eager, rate {rate}): does the gradient "
                           f"use the output's mask? Exact binomial p-values of the agreement against the same mask "
                           f"(1) and against independent masks ({independent:.4f})")]
    for key, v in facts.items():
        if not isinstance(v, dict):
            lines += _wrap100(f"  {key}: {v}")
        elif v["p_vs_same_mask"] == 1.0:
            lines += _wrap100(f"  {key}: the forward's mask (agreement 1)")
        else:
            lines += _wrap100(f"  {key}: ANOTHER MASK, agreement {v['agreement']:.4f} (against independent: "
                              f"p = {v['p_vs_independent']:.3g}; against the same mask: p = 0)")
    return "\n".join(lines)


def _keras_version():
    try:
        import keras

        return keras.__version__
    except ImportError:  # pragma: no cover
        return None


def _tf_keras_version():
    try:
        import tf_keras

        return tf_keras.__version__
    except ImportError:
        return None


def _audit_table(results, rate, versions: dict, width: int = 100) -> str:
    """The audit for a terminal, at most ``width`` columns: a row per configuration, then the
    failures (with their diagnosis) and the findings, each grouped by the fact it states."""
    import textwrap

    def wrap(text, indent="    "):
        return textwrap.wrap(text, width, subsequent_indent=indent, break_on_hyphens=False, break_long_words=False)

    rows = [("entry point", "mode", "dtype", "verdict", "observed / expected", "draws")]
    failures = {}
    findings: dict[tuple, list] = {}
    for a, d, r in results:
        k = next((c for c in r.checks if c.name == "keep_fraction" and c.values), None)
        v = next((c for c in r.checks if c.name == "gaussian_variance" and c.pvalue is not None), None)
        keep = (f"{k.values['fraction']:.6f} / {k.values['expected']:.7g}" if k else  # keep fraction
                f"var {float(v.observed):.5g} / {float(v.expected.split(' ')[0]):.4g}" if v else "")  # noise
        rows.append((a.entry_point, a.mode, d, "pass" if r.passed else "FAIL", keep,
                     f"{k.values['n']:,}" if k else f"{v.samples:,}" if v else ""))
        if not r.passed:
            failures[(a.name, d)] = r
        for f in r.findings:
            if f.name == "keep_probability" and abs(f.value - (1 - rate)) <= 1e-6 * (1 - rate):
                continue  # float32/float64: off by an ulp of the rate, not worth a line
            if f.name == "mean_bias" and abs(f.value) <= 1e-6:
                continue
            key = (f.name, f.detail)  # the same fact, in the same words: true of every run listed
            findings.setdefault(key, []).append(f"{a.name} {d}")
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = [f"dropout-stats audit: {_versions_text(versions)}, rate {rate}",
             "(observed / expected: the keep fraction; var: GaussianDropout's noise variance)", ""]
    for i, row in enumerate(rows):
        lines.append("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines += ["", f"{len(results) - len(failures)} of {len(results)} configurations passed"]
    from .diagnosis import diagnose

    for (name, d), r in failures.items():
        words, others = diagnose(r)
        lines += wrap(f"FAIL {name} {d}: {words}" + (f" (also failing: {', '.join(others)})" if others else ""))
        for c in r.failures:
            lines += wrap(f"{c.name}: {c.detail or c.observed}", "      ")
    if findings:
        lines += ["", "findings (each true of every configuration listed under it):"]
        for (name, text), where in sorted(findings.items()):
            lines += wrap(f"- {name}: {text}", "    ")
            lines += wrap(f"    in {len(where)}: {', '.join(where[:4])}{' ...' if len(where) > 4 else ''}", "      ")
    return "\n".join(lines)


def _audit_plot(results, path, rate, versions: dict) -> None:
    """Each run's keep fraction as a z-score against its draws (one band for every dtype and
    rate), marked by the check's verdict, with the region where an exact fixed-n test at the
    check's level accepts; runs without a keep fraction are named, not dropped."""
    import math

    import numpy as np

    from .design import rejection_region_for_rate_test

    plt = _require_matplotlib()
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
    ns = np.unique(np.logspace(math.log10(min(p[0] for p in points) / 1.5),
                               math.log10(max(p[0] for p in points) * 1.5), 40).astype(np.int64))
    keep = 1 - rate
    lo, hi = [], []
    for n in ns:  # the exact acceptance region, in z units
        reg = rejection_region_for_rate_test(int(n), keep, false_fail_rate=level)
        sd = math.sqrt(keep * (1 - keep) / n)
        lo.append(((reg.low + 1) / n - keep) / sd)
        hi.append(((reg.high - 1) / n - keep) / sd)
    ax.fill_between(ns, lo, hi, color="tab:blue", alpha=0.15, lw=0,
                    label=f"where an exact fixed-n test at the check's level ({level:.1g}) accepts")
    for ok, style, color, label in ((True, "o", "tab:green", "passed"), (False, "X", "tab:red", "failed")):
        sel = [p for p in points if p[2] is ok]
        if sel:
            ax.scatter([p[0] for p in sel], [p[1] for p in sel], marker=style, color=color, s=22, alpha=0.6,
                       label=f"{label} ({len(sel)} runs; the sequential test decides)")
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xscale("log")
    ax.set_xlabel("draws the keep-fraction check used (runs of equal size spread slightly)")
    ax.set_ylabel("(observed - expected) / standard error")
    ax.set_title(f"dropout-stats audit, {_versions_text(versions)}, rate {rate}: keep fraction of {len(points)} runs",
                 fontsize=10)
    if skipped:
        ax.text(0.01, 0.01, f"not plotted: {len(skipped)} runs without a mask ({skipped[0].split('[')[0]}: "
                            "noise variance checked instead)", transform=ax.transAxes, fontsize=8, color="dimgray")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=1, frameon=False)
    fig.subplots_adjust(bottom=0.24)
    _save_figure(fig, path)
    plt.close(fig)


# -- verify -----------------------------------------------------------------------------------
def _load_function(spec: str):
    if ":" not in spec:
        raise UsageError(f"FUNCTION ({spec}) must be MODULE:FUNCTION, e.g. mypkg.layers:dropout")
    module_name, _, attr = spec.partition(":")
    sys.path.insert(0, os.getcwd())
    try:
        with _quiet_imports():
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
        raise UsageError(f"{getattr(fn, '__name__', fn)}{sig} does not follow the contract {contract}"
                         + ("" if stateful else " (pass --stateful for tf.nn.dropout's contract)"))


def cmd_verify(args) -> int:
    _quiet_tensorflow()  # before the user's module imports TensorFlow: its start-up lines stay away
    fn = _load_function(args.function)
    _check_signature(fn, args.stateful)
    from .battery import verify

    try:
        report = verify(fn, rate=args.rate, dtype=args.dtype, shape=args.shape, noise_shape=args.noise_shape,
                        seed=args.seed, stateful=args.stateful, false_fail_rate=args.false_fail_rate,
                        backend=args.backend, reference=None if args.no_reference else "auto",
                        backward=False if args.no_backward else None, recompute=args.recompute)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    print(report)
    if args.json:
        write_atomically(args.json, report.to_json(indent=1))
        print(f"wrote {args.json}")
    return EXIT_OK if report.passed else EXIT_FAILED


# -- explain ----------------------------------------------------------------------------------
def _wrap100(text: str) -> list[str]:
    import textwrap

    return textwrap.wrap(text, 100, subsequent_indent="    ", break_on_hyphens=False, break_long_words=False)


def explain_text(units: int, rate: float, dtype: str = "float32", observed: int | None = None) -> str:
    import numpy as np
    from scipy import stats

    from . import (expected_keep_fraction, min_num_samples_for_rate_test, proportion_ci, rate_test)
    from ._checks import check_count, check_rate
    from ._floats import dtype_name

    units = check_count(units, "units", minimum=1)
    rate = check_rate(rate)
    dtype = dtype_name(dtype)
    keep_frac = expected_keep_fraction(rate, dtype)
    drop = 1 - float(keep_frac)
    dist = stats.binom(units, drop)
    unit_word = "unit" if units == 1 else "units"
    lines = _wrap100(f"Dropout(rate={rate}) on {units} {unit_word} in {dtype}: each unit is dropped independently "
                     f"with probability {drop:.10g}, so the number of zeros is Binomial({units}, {drop:.6g}).")
    if abs(float(keep_frac) - (1 - rate)) > 1e-6 * (1 - rate):
        lines += _wrap100(f"  ({dtype}: TensorFlow keeps {keep_frac} = {float(keep_frac):.10g}, not 1 - rate = "
                          f"{1 - rate:.10g}: its uniform has a coarse grid in {dtype} and the rate is rounded first)")
    mode = int(np.argmax(dist.pmf(np.arange(units + 1))))  # the most likely count at this dtype's rate
    lo95, hi95 = dist.ppf(0.025), dist.isf(0.025)
    lo999, hi999 = dist.ppf(0.0005), dist.isf(0.0005)

    def span(lo, hi):
        return f"exactly {lo:.0f} zero{'' if lo == 1 else 's'}" if lo == hi else f"{lo:.0f} to {hi:.0f} zeros"

    lines.append(f"  mean {dist.mean():.3f} zeros, standard deviation {dist.std():.3f}")
    lines.append(f"  95% of calls give {span(lo95, hi95)}; 99.9% give {span(lo999, hi999)}")
    p_mode = dist.pmf(mode)
    lines += _wrap100(f"  P(exactly {mode} zero{'' if mode == 1 else 's'}) = {p_mode:.4f}, the most likely count"
                      + (": the 'expected' count is the exception, not the rule" if p_mode < 0.5 else ""))
    ks = np.arange(max(0, int(lo999)), int(hi999) + 1)
    pmf = dist.pmf(ks)
    scale = 40 / pmf.max() if pmf.max() > 0 else 0
    if len(ks) <= 40:
        lines.append("  zeros  probability")
        for k, p in zip(ks, pmf):
            mark = " <- observed" if observed is not None and k == observed else ""
            lines.append(f"  {k:5d}  {p:.4f} {'#' * int(round(p * scale))}{mark}")
    if 0 < drop < 1:
        need = min_num_samples_for_rate_test(float(keep_frac), 0.01 * min(drop, 1 - drop),
                                             false_fail_rate=1e-3, false_pass_rate=1e-3)
        lines += _wrap100(f"  to see the zero fraction within 1% of its value ({0.01 * min(drop, 1 - drop):.3g}) "
                          f"with 99.9% confidence and 99.9% power: {need:,} units")
    if observed is not None:
        observed = check_count(observed, "observed")
        if observed > units:
            raise ValueError(f"observed ({observed}) must be <= units ({units})")
        r = rate_test(observed, units, drop)
        ci = proportion_ci(observed, units, confidence_level=0.999)
        verdict = "consistent with" if r.pvalue > 1e-3 else "NOT consistent with"
        lines += _wrap100(f"{observed} zeros out of {units} is {verdict} rate {rate} at level 0.001: exact two-sided "
                          f"p = {r.pvalue:.4g} {'>' if r.pvalue > 1e-3 else '<='} 0.001 (a correct dropout gives a "
                          f"p-value this small once in 1000 calls); 99.9% interval for the zero fraction "
                          f"[{ci.low:.4f}, {ci.high:.4f}]")
    return "\n".join(lines)


def cmd_explain(args) -> int:
    try:
        print(explain_text(args.units, args.rate, args.dtype, args.observed))
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    if args.plot:
        _explain_plot(args, args.plot)
        print(f"wrote {args.plot}")
    return EXIT_OK


def _explain_plot(args, path) -> None:
    """The distribution of zeros: its bars, mean and 95% range, and the observed count (wherever it
    lies) with its exact p-value and the verdict."""
    import numpy as np
    from matplotlib.ticker import MaxNLocator
    from scipy import stats

    from . import expected_keep_probability, rate_test

    plt = _require_matplotlib()
    drop = 1 - expected_keep_probability(args.rate, args.dtype)
    dist = stats.binom(args.units, drop)
    lo, hi = int(dist.ppf(1e-4)), int(dist.isf(1e-4))
    if args.observed is not None:
        lo, hi = min(lo, args.observed), max(hi, args.observed)
    ks = np.arange(lo, hi + 1)
    lo95, hi95 = dist.ppf(0.025), dist.isf(0.025)
    fig, ax = plt.subplots(figsize=(8, 5))
    inside = (ks >= lo95) & (ks <= hi95)
    ax.bar(ks[inside], dist.pmf(ks[inside]), color="tab:blue", label=f"95% of calls: {lo95:.0f} to {hi95:.0f} zeros")
    ax.bar(ks[~inside], dist.pmf(ks[~inside]), color="lightsteelblue", label="the other 5%")
    ax.axvline(dist.mean(), color="black", lw=1, ls="--", label=f"mean {dist.mean():.2f}")
    if args.observed is not None:
        p = rate_test(args.observed, args.units, drop).pvalue
        verdict = "consistent" if p > 1e-3 else "NOT consistent"
        ax.axvline(args.observed, color="tab:red", lw=2,
                   label=f"observed {args.observed}: exact p = {p:.3g}, {verdict} at level 0.001")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("zeros in one call")
    ax.set_ylabel("probability")
    ax.set_title(f"Dropout({args.rate}) on {args.units} unit{'s' if args.units != 1 else ''} in {args.dtype}: "
                 f"zeros ~ Binomial({args.units}, {drop:.4g})", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    fig.subplots_adjust(bottom=0.25)
    _save_figure(fig, path)
    plt.close(fig)


# -- calibrate --------------------------------------------------------------------------------
def cmd_calibrate(args) -> int:
    if args.runs < 1:
        raise UsageError(f"--runs ({args.runs}) must be >= 1")
    if args.power_runs < 0:
        raise UsageError(f"--power-runs ({args.power_runs}) must be >= 0")
    _quiet_tensorflow()
    from .calibration.calibrate import calibrate_null, calibrate_power

    def progress(done, total):
        if done == total or done % max(1, total // 10) == 0:
            print(f"  {done}/{total}", file=sys.stderr, flush=True)

    null = calibrate_null(args.runs, false_fail_rate=args.false_fail_rate, seed=args.seed, progress=progress)
    print(null)
    ok = null.consistent
    if args.power_runs:
        print(f"power: each defect of the corpus, {args.power_runs} runs at false-fail 1e-6, false-pass 1e-3")
        for row in calibrate_power(args.power_runs, seed=args.seed, progress=progress):
            print(f"  {row}")
    return EXIT_OK if ok else EXIT_FAILED


# -- matrix -----------------------------------------------------------------------------------
def matrix_markdown(payloads: list[dict]) -> str:
    """One row per measured fact, one column per audit: TensorFlow releases first (oldest first),
    then the audits of the other frameworks (JAX and Flax, Keras on JAX, PyTorch)."""
    def legacy(p):
        return bool(p.get("tf_keras")) or any(r["entry_point"].startswith("tf_keras") for r in p.get("results", []))

    def order(p):
        if p.get("tensorflow"):
            return (0, [int(v) for v in p["tensorflow"].split(".")[:3] if v.isdigit()], legacy(p), "")
        return (1, [], False, " ".join(p.get("frameworks", {})))

    def label(p):
        if p.get("tensorflow"):
            return f"TF {p['tensorflow']} (Keras {p.get('keras')}" + (" + tf_keras" if legacy(p) else "") + ")"
        return " + ".join(f"{_FRAMEWORK_NAMES.get(fw, fw)} {v}" for fw, v in p.get("frameworks", {}).items())

    payloads = sorted(payloads, key=order)
    versions = [label(p) for p in payloads]
    rows: dict[tuple, dict] = {}

    def put(section, fact, column, value):
        rows.setdefault((section, fact), {})[column] = value

    for col, p in enumerate(payloads):
        facts = p.get("facts", {})
        for section, content in facts.items():
            if not isinstance(content, dict):
                if section != "tensorflow":
                    put(section, "", col, str(content))
                continue
            for fact, value in content.items():
                if isinstance(value, dict):
                    value = ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
                put(section, fact, col, _fmt(value))
        for layer in p.get("layers", []):
            rep = layer["report"]
            replica = next((f for f in rep.get("findings", []) if f["name"] == "replicas"), None)
            failed = [c["name"] for c in rep["checks"] if c["passed"] is False]
            put("layers (verify_layer, float32; Keras on TF: 2 replicas)", layer["layer"], col,
                ("pass" if rep["passed"] else f"FAIL {', '.join(failed)}")
                + (f"; replica agreement {replica['value']:.4g}" if replica else ""))
        for layer in p.get("recurrent", []):
            rep = layer["report"]
            failed = [c["name"] for c in rep["checks"] if c["passed"] is False]
            times = "; ".join(f["detail"].split(" read")[0] for f in rep.get("findings", [])
                              if f["name"] == "time_semantics")
            put("recurrent layers (verify_recurrent, float32)", layer["layer"], col,
                ("pass" if rep["passed"] else f"FAIL {', '.join(failed)}") + (f"; {times}" if times else ""))
        for layer in p.get("attention", []):
            rep = layer["report"]
            failed = [c["name"] for c in rep["checks"] if c["passed"] is False]
            put("attention layers (verify_attention, float32)", layer["layer"], col,
                "pass" if rep["passed"] else f"FAIL {', '.join(failed)}")
        by_entry: dict[str, list] = {}
        for res in p.get("results", []):
            rep = res["report"]
            name = f"{res['entry_point']} [{res['mode']}]"
            by_entry.setdefault(name, []).append((res["dtype"], rep))
        for name, items in by_entry.items():
            ok = sum(1 for _, r in items if r["passed"])
            failed = [f"{d}: {', '.join(c['name'] for c in r['checks'] if c['passed'] is False)}"
                      for d, r in items if not r["passed"]]
            put("verify", name, col, f"{ok}/{len(items)} dtypes pass" + (f" (FAIL {'; '.join(failed)})" if failed else ""))
            mech = [(d, next((c for c in r["checks"] if c["name"] == "mechanism"), None)) for d, r in items]
            if any(c is not None and c["passed"] is not None for _, c in mech):  # stateless entry points
                exact = [d for d, c in mech if c is not None and c["passed"] is True]
                put("mechanism (kept == uniform >= rate, bit for bit)", name, col,
                    f"exact in {len(exact)}/{len(items)} dtypes")
            for d, r in items:
                for f in r.get("findings", []):
                    if f["name"] == "scale_formula" and d == "float32":
                        put("scale formula (float32)", name, col, f["value"])
                    if f["name"] == "affine_formula":
                        put("alpha dropout a*x+b", f"{name} {d}", col, f["value"])
    lines = ["# How dropout behaves, release by release and framework by framework", "",
             "Generated by `dropout-stats matrix` from each tox environment's `dropout-stats audit --json`; "
             "do not edit by hand.  Columns: TensorFlow releases (with their Keras), then JAX and Flax, "
             "Keras 3 on JAX and PyTorch where audited.", "",
             "| section | fact | " + " | ".join(versions) + " |",
             "|---|---|" + "---|" * len(versions)]
    for (section, fact), cols in sorted(rows.items()):
        cells = [str(cols.get(i, "")).replace("|", "/") for i in range(len(payloads))]
        lines.append(f"| {section} | {fact} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def cmd_matrix(args) -> int:
    payloads = []
    for path in args.files:
        try:
            with open(path) as f:
                payloads.append(json.load(f))
        except (OSError, json.JSONDecodeError) as exc:
            raise UsageError(f"{path}: not a readable audit JSON ({exc})") from None
        if not isinstance(payloads[-1], dict) or not str(payloads[-1].get("schema", "")).startswith(
                "dropout-stats/audit/"):
            raise UsageError(f"{path}: not a dropout-stats audit JSON (no 'schema': 'dropout-stats/audit/...')")
        if not payloads[-1].get("tensorflow") and not payloads[-1].get("frameworks"):
            raise UsageError(f"{path}: an audit of no framework")
    text = matrix_markdown(payloads)
    if args.output:
        write_atomically(args.output, text)
        print(f"wrote {args.output}")
    else:
        print(text)
    return EXIT_OK


# -- entry point ------------------------------------------------------------------------------
def _shape(text: str):
    try:
        dims = [int(v) if v.lower() != "none" else None for v in text.replace("x", ",").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape ({text}) must be comma-separated ints, e.g. 64,4096") from None
    return dims


def _probability(name):
    def parse(text):
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} ({text}) must be a number") from None
        return v
    return parse


DTYPES = ["float16", "bfloat16", "float32", "float64"]
FRAMEWORK_CHOICES = ["tensorflow", "jax", "keras-jax", "torch"]
VERIFY_CONTRACT = """\
MODULE:FUNCTION names a dropout function (MODULE is imported from the working folder):
  stateless (default):  fn(x, rate, seed, noise_shape=None) -> y
      seed: TensorFlow, an int32 tensor of shape [2]; numpy, a tuple of two ints
      (same seed, same output; as tf.nn.experimental.stateless_dropout)
  stateful (--stateful): fn(x, rate, noise_shape=None) -> y
      fresh randomness on every call (as tf.nn.dropout)
y has x's shape and dtype; dropped values are 0, kept ones x / (1 - rate).
exit codes: 0 every check passed, 1 a check failed, 2 bad usage."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dropout-stats", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command")
    fmt = argparse.RawDescriptionHelpFormatter

    a = sub.add_parser("audit", help="verify every dropout entry point of the installed frameworks",
                       description="Runs verify() on every dropout entry point of the installed frameworks (TensorFlow "
                                   "and Keras: eagerly, in tf.function and under jit_compile; JAX and Flax: eagerly "
                                   "and under jax.jit; PyTorch: eagerly and F.dropout under torch.compile), in every "
                                   "float dtype each supports; prints a table, the failures with their diagnosis, the "
                                   "findings and the backward pass under activation checkpointing, then the dropout layers "
                                   "in a model (Keras, Flax NNX, torch modules), the recurrent layers (Keras) and the "
                                   "attention layers (Keras, torch).  Keras 3 on JAX: --framework keras-jax, in a run "
                                   "of its own.  Exit codes: 0 all passed, 1 a check failed, 2 bad usage.")
    a.add_argument("--framework", nargs="+", choices=FRAMEWORK_CHOICES, metavar="NAME",
                   help=f"frameworks to audit, any of {', '.join(FRAMEWORK_CHOICES)} (default: every one installed; "
                        "keras-jax only where TensorFlow is not)")
    a.add_argument("--quick", action="store_true", help="eager mode, float32 and bfloat16 only (32 s here with TensorFlow, JAX and PyTorch)")
    a.add_argument("--rate", type=_probability("rate"), default=0.2, metavar="R",
                   help="the dropout rate, a number in [0, 1) (default 0.2)")
    a.add_argument("--dtypes", nargs="+", choices=DTYPES, metavar="DTYPE",
                   help=f"dtypes to audit, any of {', '.join(DTYPES)} (default: all four; --quick: float32 bfloat16)")
    a.add_argument("--seed", type=int, default=0, metavar="S", help="the base seed, an integer >= 0 (default 0)")
    a.add_argument("--false-fail-rate", type=_probability("false-fail-rate"), default=1e-6, metavar="A",
                   help="the false-fail budget of each configuration, in (0, 1) (default 1e-6)")
    a.add_argument("--json", metavar="FILE", help="also write the whole audit as JSON (schema: docs/json.md)")
    a.add_argument("--plot", metavar="FILE", help="also write a PNG: each run's keep-fraction z-score against its "
                                                  "draws, with the band a correct implementation stays in")
    a.set_defaults(func=cmd_audit)

    v = sub.add_parser("verify", help="verify MODULE:FUNCTION", description=VERIFY_CONTRACT, formatter_class=fmt)
    v.add_argument("function", metavar="MODULE:FUNCTION", help="e.g. mypkg.layers:dropout")
    v.add_argument("--stateful", action="store_true", help="fn(x, rate, noise_shape=None), like tf.nn.dropout")
    v.add_argument("--rate", type=_probability("rate"), default=0.2, metavar="R",
                   help="the dropout rate, a number in [0, 1) (default 0.2)")
    v.add_argument("--dtype", default="float32", metavar="DTYPE", help=f"one of {', '.join(DTYPES)} (default float32)")
    v.add_argument("--shape", type=_shape, metavar="D0,D1,...", help="the input shape (default 64,4096)")
    v.add_argument("--noise-shape", type=_shape, metavar="D0,D1,...",
                   help="the noise shape, broadcastable to --shape (needs --shape)")
    v.add_argument("--seed", type=int, default=0, metavar="S", help="the seed, an integer in [0, 2**31 - 1) (default 0)")
    v.add_argument("--false-fail-rate", type=_probability("false-fail-rate"), default=1e-6, metavar="A",
                   help="the chance a correct implementation fails the run, in (0, 1) (default 1e-6)")
    v.add_argument("--no-reference", action="store_true", help="an RNG of its own: skip the bit-exact mechanism check")
    v.add_argument("--backend", choices=["numpy", "tensorflow", "jax", "torch", "keras"],
                   help="the framework fn runs on; keras: the one Keras 3 runs on (default: told from the type "
                        "of fn's first output)")
    v.add_argument("--no-backward", action="store_true", help="skip the gradient checks (backward_mask, backward_scale)")
    v.add_argument("--recompute", nargs="?", const=True, default=False, metavar="WRAPPER",
                   help="check the gradient with fn rematerialised: the backend's first wrapper (tf.recompute_grad, "
                        "jax.checkpoint, torch.utils.checkpoint) or the one named: keras.remat, "
                        "'torch.utils.checkpoint(preserve_rng_state=False)'; put it after MODULE:FUNCTION")
    v.add_argument("--json", metavar="FILE", help="also write the whole report as JSON (schema: docs/json.md)")
    v.set_defaults(func=cmd_verify)

    c = sub.add_parser("calibrate", help="measure verify()'s false-alarm rate and the corpus' catch rates")
    c.add_argument("--runs", type=int, default=200, metavar="N", help="correct runs, an integer >= 1 (default 200)")
    c.add_argument("--false-fail-rate", type=_probability("false-fail-rate"), default=0.05, metavar="A",
                   help="the budget to calibrate at, in (0, 1) (default 0.05: informative counts)")
    c.add_argument("--power-runs", type=int, default=5, metavar="N",
                   help="runs per defect of the corpus, an integer >= 0 (0: skip; default 5)")
    c.add_argument("--seed", type=int, default=0, metavar="S", help="the first seed (default 0)")
    c.set_defaults(func=cmd_calibrate)

    m = sub.add_parser("matrix", help="merge audit JSON files (TF releases, JAX, Keras on JAX, PyTorch) into a markdown table")
    m.add_argument("files", nargs="+", metavar="AUDIT.json", help="files written by dropout-stats audit --json")
    m.add_argument("-o", "--output", metavar="FILE.md", help="write the table here (default: print it)")
    m.set_defaults(func=cmd_matrix)

    e = sub.add_parser("explain", help="why Dropout(rate) on N units does not zero exactly rate*N of them")
    e.add_argument("--units", type=int, required=True, metavar="N", help="units in one call, an integer >= 1")
    e.add_argument("--rate", type=_probability("rate"), required=True, metavar="R", help="the rate, in [0, 1)")
    e.add_argument("--dtype", default="float32", metavar="DTYPE", help=f"one of {', '.join(DTYPES)} (default float32)")
    e.add_argument("--observed", type=int, metavar="K", help="zeros you saw in one call, an integer in [0, N]")
    e.add_argument("--plot", metavar="FILE", help="also write a PNG of the distribution of zeros")
    e.set_defaults(func=cmd_explain)
    return p


def _check_common(args) -> None:
    """The library's own checks on the options every command shares, before TensorFlow loads."""
    from ._checks import check_count, check_open_unit, check_rate
    from ._floats import dtype_name
    from .battery import check_shapes

    if getattr(args, "rate", None) is not None:
        check_rate(args.rate)
    if getattr(args, "false_fail_rate", None) is not None:
        check_open_unit(args.false_fail_rate, "false_fail_rate")
    if getattr(args, "seed", None) is not None:
        if check_count(args.seed, "seed") >= 2**31 - 1:
            raise UsageError(f"seed ({args.seed}) must be < 2**31 - 1 (it is an int32 seed component)")
    if getattr(args, "dtype", None) is not None:
        dtype_name(args.dtype)
    if getattr(args, "shape", None) is not None or getattr(args, "noise_shape", None) is not None:
        check_shapes(args.shape, args.noise_shape)


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 2 on bad usage, 0 on --help
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        _check_common(args)
        if getattr(args, "json", None):
            d = os.path.dirname(os.path.abspath(args.json))
            if not os.path.isdir(d):
                raise UsageError(f"--json path ({args.json}) is in a folder that does not exist: {d}")
        if getattr(args, "plot", None):
            d = os.path.dirname(os.path.abspath(args.plot))
            if not os.path.isdir(d):  # before the work, not after printing it
                raise UsageError(f"--plot path ({args.plot}) is in a folder that does not exist: {d}")
            _require_matplotlib()
        return args.func(args)
    except UsageError as exc:
        print(f"dropout-stats: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (TypeError, ValueError) as exc:  # argument validation inside the library
        print(f"dropout-stats: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
