"""dropout-stats audit: verify() on every dropout entry point of the installed frameworks, then
verify_layer, verify_recurrent and verify_attention on their layers.  The libraries on torch
(``adapters.LIBRARIES``: timm, torchvision, transformers) only when named: their DropPath and
DropBlock rows run verify_drop_path and verify_dropblock, BERT's attention verify_attention."""

from __future__ import annotations

import contextlib
import json
import sys
import time

from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    RUN,
    UsageError,
    check_design,
    quiet_imports,
    quiet_tensorflow,
    raise_if_stopped,
    wrap100,
)
from .audit_text import attention_text, audit_table, exit_reason, layers_text, recompute_text, recurrent_text
from .files import save_text
from .plots import audit_plot


def _framework_versions(frameworks) -> dict:
    """{framework: version} of the frameworks audited (imported by their adapters by now)."""
    from ..adapters import LIBRARIES

    package = {"keras-jax": "keras"}
    # the libraries run on torch: its build (CPU or CUDA) is part of what was audited
    named = list(frameworks) + (["torch"] if set(frameworks) & set(LIBRARIES) and "torch" not in frameworks else [])
    return {fw: sys.modules[package.get(fw, fw)].__version__ for fw in named if package.get(fw, fw) in sys.modules}


def _torchvision_note() -> str:
    """A line where torchvision was imported through the workaround (its compiled ops not loaded)."""
    if "torchvision" not in sys.modules:
        return ""
    from ..adapters._torchvision_import import WORKAROUND, workaround_applied

    return f"note: {WORKAROUND}" if workaround_applied() else ""


def _audit_frameworks(args) -> list:
    """The frameworks to audit (all installed unless named): a UsageError naming the extra to
    install for one that is not, before any framework loads."""
    from ..adapters import LIBRARIES, installed_frameworks

    installed = installed_frameworks()
    # Keras picks one backend per process: by default Keras is audited on TensorFlow where
    # TensorFlow is installed, on JAX (keras-jax) only where it is not or when asked; the
    # libraries on torch only when named (their structured rows take minutes)
    frameworks = args.framework or [
        fw for fw in installed if fw not in LIBRARIES and (fw != "keras-jax" or "tensorflow" not in installed)
    ]
    if "keras-jax" in frameworks and "tensorflow" in frameworks:
        raise UsageError(
            "--framework tensorflow and keras-jax cannot run in one process: Keras picks its backend "
            "once, at import; run two audits (--framework tensorflow, then --framework keras-jax)"
        )
    for fw in frameworks:
        if fw not in installed:
            raise UsageError(f'--framework ({fw}) is not installed here: pip install "dropout_stats[{fw}]"')
    if not frameworks:
        raise UsageError(
            'no framework to audit is installed: pip install "dropout_stats[tensorflow]" (or [jax], [torch])'
        )
    return frameworks


def _audit_plan(args, frameworks, progress):
    """The (adapter, dtype) runs of the frameworks audited; a step of ``progress`` as each loads."""
    from ..adapters import adapters

    dtypes = args.dtypes or (["float32", "bfloat16"] if args.quick else ["float16", "bfloat16", "float32", "float64"])
    plan = []
    with progress.section("setup", len(frameworks)) as step:
        for fw in frameworks:
            RUN.where = f"loading {fw}"
            try:
                with quiet_imports():
                    found = adapters(framework=fw, modes=("eager",) if args.quick else None)
            except ValueError as exc:  # installed, but its import failed: the adapters' message
                raise UsageError(f"--framework ({fw}): {exc}") from None
            runs = [(a, d) for a in found for d in dtypes if d in a.dtypes]
            plan += runs
            step(f"{fw} loaded", f"{len(found)} entry points, {len(runs)} configurations")
    return plan


_SECTION_WORDS = {
    "": "configurations",
    "recompute": "backward checks",
    "recurrent": "recurrent layers",
    "attention": "attention layers",
    "facts": "version facts",
}


class _Progress:
    """Progress through every section of the audit, on stderr: on a terminal a tqdm bar per
    section (steps done, time, the step just done), elsewhere (a log, CI) a line per step with
    its verdict and the seconds since the audit started: "[3/22] 12.5s NAME: pass" for the
    configurations, "[layers 2/6] 40.1s NAME: pass" for the other sections."""

    def __init__(self):
        self.start = time.perf_counter()
        self.tty = sys.stderr.isatty()

    @contextlib.contextmanager
    def section(self, name: str, total: int):
        from tqdm import tqdm

        bar = tqdm(
            total=total,
            desc=name or "configurations",
            file=sys.stderr,
            unit="step" if name else "run",
            dynamic_ncols=True,
            disable=not self.tty or not total,
        )
        done = 0
        what = _SECTION_WORDS.get(name, name)

        def step(label: str, status: str) -> None:
            nonlocal done
            done += 1
            RUN.where = f"in the {what}, {done} of {total} done"
            if self.tty:
                bar.set_postfix_str(label[:50], refresh=False)
                bar.update()
            else:
                head = f"{name} {done}/{total}" if name else f"{done}/{total}"
                tqdm.write(f"[{head}] {time.perf_counter() - self.start:6.1f}s {label}: {status}", file=sys.stderr)
                sys.stderr.flush()
            raise_if_stopped()

        RUN.where = f"in the {what}, 0 of {total} done"
        try:
            yield step
        finally:
            bar.close()


def _verdict(report) -> str:
    return "pass" if report.passed else "FAIL " + ", ".join(c.name for c in report.failures)


def _run_plan(args, plan, progress):
    """verify() on each (adapter, dtype) of the plan: the (adapter, dtype, report) and the seconds of each."""
    results, seconds = [], []
    with progress.section("", len(plan)) as step:
        for adapter, dtype in plan:
            t0 = time.perf_counter()
            # the frameworks' own entry points: their formulas are the reference, bit for bit
            report = adapter.verify(
                rate=args.rate, dtype=dtype, seed=args.seed, false_fail_rate=args.false_fail_rate, exact_scale=True
            )
            seconds.append(time.perf_counter() - t0)
            results.append((adapter, dtype, report))
            step(f"{adapter.name} {dtype}", _verdict(report))
    return results, seconds


def cmd_audit(args) -> int:
    frameworks = _audit_frameworks(args)  # not installed: refused before anything loads
    check_design(args.rate, args.false_fail_rate)  # a rate no sample size can test: refused before a framework loads
    quiet_tensorflow()
    progress = _Progress()
    plan = _audit_plan(args, frameworks, progress)
    if "tensorflow" in frameworks:
        from ..battery.layers import use_logical_cpus

        try:
            use_logical_cpus(2)  # for the layers' replicas check: before TensorFlow's first op
        except RuntimeError:  # pragma: no cover - already initialised (the audit run from Python)
            pass
    versions = _framework_versions(frameworks)
    results, seconds = _run_plan(args, plan, progress)
    print(audit_table(results, args.rate, versions))
    if _torchvision_note():
        print("\n".join(wrap100(_torchvision_note())))
    modes = dict.fromkeys(a.mode for a, _ in plan)
    by_mode = {m: sum(t for (a, _, _), t in zip(results, seconds, strict=True) if a.mode == m) for m in modes}
    if by_mode:
        print("\ntime by mode: " + ", ".join(f"{m} {t:.1f} s" for m, t in by_mode.items()))
    from ..adapters import LIBRARIES, recompute_agreement

    recompute = {}
    plain = [fw for fw in frameworks if fw not in LIBRARIES]  # the libraries have no plain dropout
    with progress.section("recompute", len(plain)) as step:
        for fw in plain:
            recompute[fw] = recompute_agreement(fw, rate=args.rate)
            other = sum(1 for v in recompute[fw].values() if isinstance(v, dict) and v["p_vs_same_mask"] != 1.0)
            step(f"{fw} under activation checkpointing", f"{len(recompute[fw])} pairs, {other} with another mask")
    if plain:
        print(recompute_text({k: v for fw in plain for k, v in recompute[fw].items()}, args.rate))
    layers = _audit_layers(args, frameworks, progress)
    if layers:
        print(layers_text(layers, args.rate))
    recurrent = _audit_recurrent(args, frameworks, progress)
    if recurrent:
        print(recurrent_text(recurrent))
    attention = _audit_attention(args, frameworks, progress)
    if attention:
        print(attention_text(attention))
    if args.json:
        facts = {}
        if "tensorflow" in frameworks:
            with progress.section("facts", 1) as step:
                facts = _tensorflow_facts()
                step("tensorflow's behaviour, version by version (probes)", f"{len(facts)} facts")
        payload = _payload(
            args, frameworks, versions, results, seconds, by_mode, recompute, layers, recurrent, attention, facts
        )
        save_text(args.json, json.dumps(payload, indent=1, sort_keys=True), "--json")
    if args.plot:
        RUN.where = "drawing the plot"
        audit_plot(results, args.plot, args.rate, versions)
    RUN.where = ""
    reason = exit_reason(results, layers, recurrent, attention)
    if reason:
        print(reason)
    return EXIT_FAILED if reason else EXIT_OK


def _payload(
    args, frameworks, versions, results, seconds, by_mode, recompute, layers, recurrent, attention, facts
) -> dict:
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
        "facts": facts,
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


def _audit_recurrent(args, frameworks, progress) -> list:
    """verify_recurrent on Keras's SimpleRNN, GRU and LSTM, eagerly and (TensorFlow) in tf.function."""
    from ..battery.recurrent import verify_recurrent

    keras = _keras_audited(frameworks)
    if keras is None:
        return []
    r_in, r_rec = _recurrent_rates(args.rate)
    modes = ["eager"] + (["function"] if keras.backend.backend() == "tensorflow" and not args.quick else [])
    out = []
    with progress.section("recurrent", 3 * len(modes)) as step:
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
                step(out[-1][0], _verdict(report))
    return out


def _audit_attention(args, frameworks, progress) -> list:
    """verify_attention on Keras's MultiHeadAttention, Attention and AdditiveAttention (on the
    backend the audit runs Keras on), on torch's MultiheadAttention and
    scaled_dot_product_attention, and on BERT's self-attention (transformers: eager and sdpa)."""
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
    if "transformers" in frameworks:
        from ..adapters.transformers import attention_factories as bert_factories

        todo += bert_factories()
    out = []
    with progress.section("attention", len(todo)) as step:
        for name, layer_cls in todo:
            t0 = time.perf_counter()
            report = verify_attention(
                layer_cls, rate=args.rate, seed=args.seed, false_fail_rate=args.false_fail_rate, exact_scale=True
            )
            out.append((name, report, time.perf_counter() - t0))
            step(name, _verdict(report))
    return out


def _audit_layers(args, frameworks, progress) -> list:
    """verify_layer on every Keras dropout layer (on TensorFlow: 2 replicas), flax.nnx.Dropout and
    every torch dropout module: (name, report, seconds)."""
    from ..adapters import layer_factories
    from ..battery.layers import verify_layer

    with quiet_imports():
        todo = [
            (fw, name, make)
            for fw in ("tensorflow", "keras-jax", "jax", "torch")
            if fw in frameworks
            for name, make in layer_factories("float32", framework=fw)
        ]
    layers = []
    with progress.section("layers", len(todo)) as step:
        for fw, name, make in todo:
            t0 = time.perf_counter()
            with quiet_imports():  # Keras on JAX imports TensorFlow, where installed, to save a model
                report = verify_layer(
                    make,
                    rate=args.rate,
                    seed=args.seed,
                    replicas=2 if fw == "tensorflow" else None,
                    false_fail_rate=args.false_fail_rate,
                    exact_scale=True,
                )
            layers.append((name, report, time.perf_counter() - t0))
            step(name, _verdict(report))
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
