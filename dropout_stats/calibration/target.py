"""What a calibration runs: the implementation and the battery's settings (``Spec``), and one run
of verify() on one seed as a record (``run_seeds``, the task a Dask worker executes).

A record is a deterministic function of (spec, seed): the seed of run i is ``seed + i``, and
nothing about the process that ran it (worker, order, timing) enters it, so serial and
distributed runs store the same bytes.  The seconds a run took travel beside the record, never
in it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass

DEFAULT_ENTRY_POINT = "tf.nn.experimental.stateless_dropout"
FRAMEWORKS = ("tensorflow", "jax", "keras-jax", "torch")


@dataclass(frozen=True)
class Spec:
    """One calibration's settings; a store holds runs of one Spec only (the run count is not
    part of it: a store grows).  ``fn`` (MODULE:FUNCTION) or else ``entry_point`` of
    ``framework`` in ``mode`` (the audit's adapters: functions and layers)."""

    entry_point: str = DEFAULT_ENTRY_POINT
    framework: str = "tensorflow"
    mode: str = "eager"
    fn: str | None = None
    stateful: bool = False
    backend: str | None = None
    reference: str | None = "auto"
    rate: float = 0.2
    dtype: str = "float32"
    shape: tuple | None = None
    noise_shape: tuple | None = None
    false_fail_rate: float = 0.05
    false_pass_rate: float = 1e-3
    mechanism: str | None = "auto"
    exact_scale: bool = False
    backward: bool | None = None

    @property
    def target(self) -> str:
        return self.fn if self.fn else f"{self.entry_point}[{self.mode}] ({self.framework})"

    def to_json(self) -> str:
        d = asdict(self)
        d["shape"] = list(self.shape) if self.shape is not None else None
        d["noise_shape"] = list(self.noise_shape) if self.noise_shape is not None else None
        return json.dumps(d, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Spec:
        d = json.loads(text)
        for k in ("shape", "noise_shape"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        return cls(**d)


def _load_fn(spec: Spec, path_hint: str | None):
    import importlib

    module_name, _, attr = spec.fn.partition(":")
    for p in (path_hint, os.getcwd()):
        if p and p not in sys.path:
            sys.path.insert(0, p)
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _adapter(spec: Spec):
    from ..adapters import adapters

    found = adapters(framework=spec.framework, modes=(spec.mode,))
    for a in found:
        if a.entry_point == spec.entry_point:
            return a
    names = ", ".join(sorted({a.entry_point for a in found}))
    raise ValueError(
        f"entry point ({spec.entry_point!r}) must be one of {spec.framework}'s in mode {spec.mode}: {names}"
    )


def _battery_kwargs(spec: Spec, kind: str) -> dict:
    """The options that apply to ``kind`` (plain, alpha or Gaussian dropout); one set that does
    not is refused rather than dropped."""
    kw = {"false_fail_rate": spec.false_fail_rate, "false_pass_rate": spec.false_pass_rate}
    plain = {"mechanism": (spec.mechanism, "auto"), "exact_scale": (spec.exact_scale, False)}
    if kind != "gaussian":
        kw["backward"] = spec.backward
    elif spec.backward is not None:
        raise ValueError(f"--no-backward does not apply to {spec.entry_point} (Gaussian dropout has no gradient check)")
    for name, (value, default) in plain.items():
        if kind == "dropout":
            kw[name] = value
        elif value != default:
            raise ValueError(f"{name} ({value!r}) does not apply to {spec.entry_point} ({kind} dropout)")
    return kw


def make_runner(spec: Spec, path_hint: str | None = None):
    """seed -> verify()'s Report for ``spec``; loads the framework (its start-up lines held back)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from ..cli._common import quiet_imports, quiet_tensorflow

    quiet_tensorflow()
    with quiet_imports():
        if spec.fn:
            fn = _load_fn(spec, path_hint)
        else:
            adapter = _adapter(spec)
    from ..battery import verify

    if spec.fn:
        common = dict(rate=spec.rate, dtype=spec.dtype, shape=spec.shape, noise_shape=spec.noise_shape)
        common.update(stateful=spec.stateful, backend=spec.backend, reference=spec.reference)
        common.update(_battery_kwargs(spec, "dropout"))
        return lambda seed: verify(fn, seed=seed, **common)
    if spec.reference != "auto":
        raise ValueError(f"reference ({spec.reference!r}) applies to fn only: an entry point has its own")
    if spec.stateful or spec.backend:
        raise ValueError("stateful and backend apply to fn only: an entry point has its own")
    kw = _battery_kwargs(spec, adapter.kind)
    if spec.shape is not None:
        kw.update(shape=spec.shape, noise_shape=spec.noise_shape)
    return lambda seed: adapter.verify(rate=spec.rate, dtype=spec.dtype, seed=seed, **kw)


def record_of(report, seed: int) -> str:
    """A run as canonical JSON: its seed, verdict, draws and every check's status and p-value
    (None for an exact check or one that did not apply)."""
    import math

    checks = {}
    for c in report.checks:
        p = c.pvalue if c.kind == "statistical" and c.pvalue is not None else None
        checks[c.name] = [c.status, float(p) if p is not None and math.isfinite(p) else None]
    rec = {"seed": seed, "passed": bool(report.passed), "samples": int(report.samples), "checks": checks}
    return json.dumps(rec, sort_keys=True, separators=(",", ":"))


_RUNNERS: dict = {}


def _runner(spec_json: str, path_hint: str | None):
    if spec_json not in _RUNNERS:
        _RUNNERS[spec_json] = make_runner(Spec.from_json(spec_json), path_hint)
    return _RUNNERS[spec_json]


def probe(spec_json: str, path_hint: str | None = None) -> str | None:
    """Load the target where the runs will execute: None, or the error as one line."""
    try:
        _runner(spec_json, path_hint)
    except Exception as exc:  # noqa: BLE001 - reported to the user as a usage error
        return f"{type(exc).__name__}: {exc}"
    return None


def run_seeds(spec_json: str, seeds, path_hint: str | None = None) -> list:
    """The task: [(seed, record JSON, seconds)] for ``seeds``, in order."""
    run = _runner(spec_json, path_hint)
    out = []
    for seed in seeds:
        t0 = time.perf_counter()
        report = run(int(seed))
        out.append((int(seed), record_of(report, int(seed)), time.perf_counter() - t0))
    return out
