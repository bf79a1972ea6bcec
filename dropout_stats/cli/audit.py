"""dropout-stats audit: verify() on every dropout entry point of the installed frameworks, then
verify_layer, verify_recurrent and verify_attention on their layers."""

from __future__ import annotations

import contextlib
import json
import sys
import time

from ._common import EXIT_FAILED, EXIT_OK, UsageError, quiet_imports, quiet_tensorflow
from .audit_text import attention_text, audit_table, layers_text, recompute_text, recurrent_text
from .files import write_atomically
from .plots import audit_plot


def _framework_versions(frameworks) -> dict:
    """{framework: version} of the frameworks audited (imported by their adapters by now)."""
    package = {"keras-jax": "keras"}
    return {fw: sys.modules[package.get(fw, fw)].__version__ for fw in frameworks if package.get(fw, fw) in sys.modules}


def _audit_plan(args):
    """The frameworks to audit (all installed unless named) and their (adapter, dtype) runs."""
    from ..adapters import adapters, installed_frameworks

    installed = installed_frameworks()
    # Keras picks one backend per process: by default Keras is audited on TensorFlow where
    # TensorFlow is installed, on JAX (keras-jax) only where it is not or when asked
    frameworks = args.framework or [fw for fw in installed if fw != "keras-jax" or "tensorflow" not in installed]
    if "keras-jax" in frameworks and "tensorflow" in frameworks:
        raise UsageError(
            "--framework tensorflow and keras-jax cannot run in one process: Keras picks its backend "
            "once, at import; run two audits (--framework tensorflow, then --framework keras-jax)"
        )
    for fw in frameworks:
        if fw not in installed:
            raise UsageError(f"--framework ({fw}) is not installed here: pip install 'dropout-stats[{fw}]'")
    if not frameworks:
        raise UsageError(
            "no framework to audit is installed: pip install 'dropout-stats[tensorflow]' (or [jax], [torch])"
        )
    dtypes = args.dtypes or (["float32", "bfloat16"] if args.quick else ["float16", "bfloat16", "float32", "float64"])
    plan = []
    for fw in frameworks:
        with quiet_imports():
            found = adapters(framework=fw, modes=("eager",) if args.quick else None)
        plan += [(a, d) for a in found for d in dtypes if d in a.dtypes]
    return frameworks, plan


@contextlib.contextmanager
def _progress(total: int):
    """``step(done, label, status)`` after each run: on a terminal a tqdm bar (runs done, time, the
    run just done), elsewhere (a log, CI) a plain line per run with its verdict; on stderr."""
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    bar = tqdm(total=total, file=sys.stderr, unit="run", dynamic_ncols=True, disable=not tty or not total)
    start = time.perf_counter()

    def step(done: int, label: str, status: str) -> None:
        if tty:
            bar.set_postfix_str(label[:50], refresh=False)
            bar.update()
        else:
            tqdm.write(f"[{done}/{total}] {time.perf_counter() - start:6.1f}s {label}: {status}", file=sys.stderr)
            sys.stderr.flush()

    try:
        yield step
    finally:
        bar.close()


def _run_plan(args, plan):
    """verify() on each (adapter, dtype) of the plan: the (adapter, dtype, report) and the seconds of each."""
    results, seconds = [], []
    with _progress(len(plan)) as step:
        for done, (adapter, dtype) in enumerate(plan, 1):
            t0 = time.perf_counter()
            # the frameworks' own entry points: their formulas are the reference, bit for bit
            report = adapter.verify(
                rate=args.rate, dtype=dtype, seed=args.seed, false_fail_rate=args.false_fail_rate, exact_scale=True
            )
            seconds.append(time.perf_counter() - t0)
            results.append((adapter, dtype, report))
            step(
                done,
                f"{adapter.name} {dtype}",
                "pass" if report.passed else "FAIL " + ", ".join(c.name for c in report.failures),
            )
    return results, seconds


def cmd_audit(args) -> int:
    quiet_tensorflow()
    frameworks, plan = _audit_plan(args)
    if "tensorflow" in frameworks:
        from ..battery.layers import use_logical_cpus

        try:
            use_logical_cpus(2)  # for the layers' replicas check: before TensorFlow's first op
        except RuntimeError:  # pragma: no cover - already initialised (the audit run from Python)
            pass
    versions = _framework_versions(frameworks)
    results, seconds = _run_plan(args, plan)
    print(audit_table(results, args.rate, versions))
    modes = dict.fromkeys(a.mode for a, _ in plan)
    by_mode = {m: sum(t for (a, _, _), t in zip(results, seconds, strict=True) if a.mode == m) for m in modes}
    print("\ntime by mode: " + ", ".join(f"{m} {t:.1f} s" for m, t in by_mode.items()))
    from ..adapters import recompute_agreement

    recompute = {fw: recompute_agreement(fw, rate=args.rate) for fw in frameworks}
    print(recompute_text({k: v for fw in frameworks for k, v in recompute[fw].items()}, args.rate))
    with quiet_imports():  # Keras on JAX imports TensorFlow, where installed, to save a model
        layers = _audit_layers(args, frameworks)
    if layers:
        print(layers_text(layers, args.rate))
    recurrent = _audit_recurrent(args, frameworks)
    if recurrent:
        print(recurrent_text(recurrent))
    attention = _audit_attention(args, frameworks)
    if attention:
        print(attention_text(attention))
    if args.json:
        payload = _payload(
            args, frameworks, versions, results, seconds, by_mode, recompute, layers, recurrent, attention
        )
        write_atomically(args.json, json.dumps(payload, indent=1, sort_keys=True))
        print(f"wrote {args.json}")
    if args.plot:
        audit_plot(results, args.plot, args.rate, versions)
        print(f"wrote {args.plot}")
    ok = all(r.passed for _, _, r in results) and all(r.passed for _, r, _ in layers + recurrent + attention)
    return EXIT_OK if ok else EXIT_FAILED


def _payload(args, frameworks, versions, results, seconds, by_mode, recompute, layers, recurrent, attention) -> dict:
    """The whole audit as JSON (schema: docs/json.md)."""

    def layer_rows(found):
        return [{"layer": name, "seconds": round(t, 3), "report": r.to_dict()} for name, r, t in found]

    return {
        "schema": "dropout-stats/audit/1",
        "frameworks": versions,
        "tensorflow": versions.get("tensorflow"),
        "keras": _keras_version(),
        "layers": layer_rows(layers),
        "recurrent": layer_rows(recurrent),
        "attention": layer_rows(attention),
        "tf_keras": _tf_keras_version(),
        "seconds_by_mode": by_mode,
        "rate": args.rate,
        "recompute": recompute,
        "seed": args.seed,
        "false_fail_rate": args.false_fail_rate,
        "quick": bool(args.quick),
        "facts": _tensorflow_facts() if "tensorflow" in frameworks else {},
        "results": [
            {
                "framework": a.backend,
                "entry_point": a.entry_point,
                "mode": a.mode,
                "dtype": d,
                "seconds": round(t, 3),
                "report": r.to_dict(),
            }
            for (a, d, r), t in zip(results, seconds, strict=True)
        ],
    }


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
    from ..battery.recurrent import verify_recurrent

    keras = _keras_audited(frameworks)
    if keras is None:
        return []
    r_in, r_rec = _recurrent_rates(args.rate)
    modes = ["eager"] + (["function"] if keras.backend.backend() == "tensorflow" and not args.quick else [])
    out = []
    for mode in modes:
        for cls in ("SimpleRNN", "GRU", "LSTM"):
            t0 = time.perf_counter()
            report = verify_recurrent(
                getattr(keras.layers, cls),
                dropout=r_in,
                recurrent_dropout=r_rec,
                seed=args.seed,
                false_fail_rate=args.false_fail_rate,
                mode=mode,
            )
            on = " (JAX)" if keras.backend.backend() == "jax" else ""
            out.append((f"keras.layers.{cls}{on} [{mode}]", report, time.perf_counter() - t0))
    return out


def _audit_attention(args, frameworks) -> list:
    """verify_attention on Keras's MultiHeadAttention, Attention and AdditiveAttention (on the
    backend the audit runs Keras on), and on torch's MultiheadAttention and
    scaled_dot_product_attention."""
    from ..battery.attention import verify_attention

    if args.rate == 0:
        return []
    todo = []
    keras = _keras_audited(frameworks)
    if keras is not None:
        on = " (JAX)" if keras.backend.backend() == "jax" else ""
        todo += [
            (f"keras.layers.{cls}{on}", getattr(keras.layers, cls))
            for cls in ("MultiHeadAttention", "Attention", "AdditiveAttention")
        ]
    if "torch" in frameworks:
        from ..adapters.torch import attention_factories

        todo += attention_factories()
    out = []
    for name, layer_cls in todo:
        t0 = time.perf_counter()
        report = verify_attention(
            layer_cls, rate=args.rate, seed=args.seed, false_fail_rate=args.false_fail_rate, exact_scale=True
        )
        out.append((name, report, time.perf_counter() - t0))
    return out


def _audit_layers(args, frameworks) -> list:
    """verify_layer on every Keras dropout layer (on TensorFlow: 2 replicas), flax.nnx.Dropout and
    every torch dropout module: (name, report, seconds)."""
    from ..adapters import layer_factories
    from ..battery.layers import verify_layer

    layers = []
    for fw in ("tensorflow", "keras-jax", "jax", "torch"):
        if fw not in frameworks:
            continue
        for name, make in layer_factories("float32", framework=fw):
            t0 = time.perf_counter()
            report = verify_layer(
                make,
                rate=args.rate,
                seed=args.seed,
                replicas=2 if fw == "tensorflow" else None,
                false_fail_rate=args.false_fail_rate,
                exact_scale=True,
            )
            layers.append((name, report, time.perf_counter() - t0))
    return layers


def _tensorflow_facts() -> dict:
    from ..probes import all_probes

    return all_probes()


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
