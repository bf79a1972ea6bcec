"""A verify() run's configuration: every argument validated in one place, before any framework
loads, and the design that follows from it (keep probability, discrepancy, noise-shape probe)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

from .._checks import (
    check_callable,
    check_choice,
    check_count,
    check_dtype,
    check_flag,
    check_open_unit,
    check_positive,
    check_rate,
)
from .._floats import dtype_name
from ..counts import _normalise_noise_shape
from ..precision import keep_models
from ..report import Finding

DEFAULT_SHAPE = (64, 4096)  # 64 rows: a mask shared across the batch shows
# the noise-shape probe: a 4-D input of DEFAULT_SHAPE's size, one draw per (batch, channel)
DEFAULT_PROBE = ((256, 2, 2, 256), (256, 1, 1, 256))
MIN_CALLS = 5  # main calls at least: a mask repeating every <= 4 calls shows


@dataclass
class Config:
    fn: object
    fn_name: str
    rate: float
    dtype: str
    shape: tuple
    noise_shape: tuple | None
    seed: int
    stateful: bool
    reference: str | None  # a bit-exact stream of the backend, or None
    alpha: float  # false-fail rate of the whole run
    beta: float  # false-pass rate at the discrepancy
    delta: float  # the discrepancy of the keep probability
    keep: float  # the keep probability under test
    strict_nominal: bool
    probe: tuple | None  # (shape, noise_shape) of the noise-shape probe, or None
    max_calls: int = 20_000
    backend_name: str | None = None
    keep_dtype: str | None = None  # the dtype the uniform is drawn in, when not x's (alpha dropout)
    backward: bool | None = None  # check the gradient (None: where the backend can differentiate)
    recompute: object = False  # False, True or the name of a rematerialising wrapper
    exact_scale: bool = False  # kept values bit-identical to a backend formula, not within the rounding bound
    keep_models: list = field(default_factory=list)  # [(label, rate -> exact keep)] a correct fn may have
    takes_noise_shape: bool = True  # fn accepts noise_shape= (else it is called without, and no probe runs)
    # "threshold": masks must nest across rates; None: reported only; "auto": required with a reference
    mechanism: str | None = "auto"
    call_timeout: float | None = 300.0  # seconds one call of fn may take (None: no limit)
    drift: float | None = None  # long mode: the change of the keep probability to detect (None: off)
    samples: int = 0
    calls: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def threshold_required(self) -> bool:
        """The masks must be one uniform thresholded (nest across rates): declared, or implied by
        a reference stream (the framework's documented mechanism)."""
        return self.mechanism == "threshold" or (self.mechanism == "auto" and self.reference is not None)

    def invoke(self, x, rate, seed=None, noise_shape=None):
        """fn(x, rate[, seed][, noise_shape=]) as its contract and signature have it."""
        kw = {"noise_shape": noise_shape} if self.takes_noise_shape else {}
        return self.fn(x, rate, **kw) if self.stateful else self.fn(x, rate, seed, **kw)

    def call_text(self, rate, seed=None, noise_shape=None) -> str:
        """The call as a reader writes it, for errors."""
        args = [f"{rate!r}"] + ([] if self.stateful else [f"seed={list(seed)}"])
        if self.takes_noise_shape:
            args.append(f"noise_shape={list(noise_shape) if noise_shape else None}")
        return f"fn(x, {', '.join(args)})"

    def reproduce(self, extra: str = "") -> str:
        opts = [f"rate={self.rate!r}", f"dtype={self.dtype!r}", f"shape={list(self.shape)}", f"seed={self.seed}"]
        if self.noise_shape is not None:
            opts.append(f"noise_shape={list(self.noise_shape)}")
        if self.stateful:
            opts.append("stateful=True")
        if self.recompute:
            opts.append(f"recompute={self.recompute!r}")
        if self.extra.get("reference_arg", "auto") != "auto":  # as the caller chose it (settle resolves "auto")
            opts.append(f"reference={self.extra['reference_arg']!r}")
        if self.exact_scale:
            opts.append("exact_scale=True")
        if self.mechanism != "auto":
            opts.append(f"mechanism={self.mechanism!r}")
        if self.drift is not None:
            opts.append(f"drift={self.drift!r}")
        if self.alpha != 1e-6:  # the level decides the verdicts a replay must give
            opts.append(f"false_fail_rate={self.alpha!r}")
        if self.backend_name not in (None, "tensorflow"):
            opts.append(f"backend={self.backend_name!r}")
        s = f"verify({self.fn_name}, {', '.join(opts)})"
        return f"{s}; {extra}" if extra else s

    def as_dict(self) -> dict:
        """The configuration as the report records it."""
        d = {
            "fn": self.fn_name,
            "rate": self.rate,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "noise_shape": list(self.noise_shape) if self.noise_shape is not None else None,
            "seed": self.seed,
            "stateful": self.stateful,
            "reference": self.reference,
            "false_fail_rate": self.alpha,
            "false_pass_rate": self.beta,
            "discrepancy": self.delta,
            "strict_nominal": self.strict_nominal,
            "backend": self.backend_name,
            "backward": self.backward,
            "recompute": self.recompute,
            "exact_scale": self.exact_scale,
            "mechanism": self.mechanism,
            "drift": self.drift,
        }
        return d


def _validate_shape(shape, name: str, *, itemsize: int = 2) -> tuple:
    """A shape of positive ints (no bools, no 10.5), refused with the memory it would need when
    a run's arrays of it (``itemsize`` bytes per element: the dtype's, 2 when not known) cannot fit."""
    from .._checks import check_shape

    return check_shape(shape, name, itemsize=itemsize)


def check_shapes(shape, noise_shape) -> tuple:
    """verify()'s shape (None: DEFAULT_SHAPE) and noise_shape, validated (no framework needed)."""
    if shape is None and noise_shape is not None:
        raise ValueError(f"noise_shape ({list(noise_shape)}) needs an explicit shape")
    shape = DEFAULT_SHAPE if shape is None else _validate_shape(shape, "shape")
    if noise_shape is not None:
        noise_shape = _normalise_noise_shape(noise_shape, shape)
    return shape, noise_shape


def takes_noise_shape(fn) -> bool:
    """fn has a noise_shape parameter (or **kwargs); a signature that cannot be read counts as yes."""
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True
    return "noise_shape" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def name_of(fn) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__


def check_backend_name(backend):
    from ..backends import backend_names

    if backend is not None:
        check_choice(backend, "backend", backend_names())
    return backend


def configure(
    fn,
    *,
    rate,
    dtype,
    shape,
    noise_shape,
    seed,
    stateful,
    backend,
    reference,
    false_fail_rate,
    false_pass_rate,
    discrepancy,
    strict_nominal,
    max_calls,
    keep_dtype=None,
    backward=None,
    recompute=False,
    exact_scale=False,
    mechanism="auto",
    call_timeout=300.0,
    drift=None,
) -> Config:
    """Validate verify()'s arguments (errors name the argument and its value).  The keep
    probability and the reference stream are filled in once the backend is known."""
    check_callable(fn, "fn")
    rate = check_rate(rate)
    dtype = check_dtype(dtype)
    stateful = check_flag(stateful, "stateful")
    strict_nominal = check_flag(strict_nominal, "strict_nominal")
    exact_scale = check_flag(exact_scale, "exact_scale")
    check_choice(mechanism, "mechanism", ("auto", "threshold", None))
    if call_timeout is not None:
        call_timeout = check_positive(call_timeout, "call_timeout")
    keep_dtype = None if keep_dtype is None else dtype_name(keep_dtype, "keep_dtype")
    if drift is not None:
        drift = check_open_unit(drift, "drift")
    seed = check_count(seed, "seed")
    max_calls = check_count(max_calls, "max_calls", minimum=MIN_CALLS)
    if seed >= 2**31 - 1:
        raise ValueError(f"seed ({seed}) must be < 2**31 - 1 (it is an int32 seed component)")
    backend = check_backend_name(backend)
    from ..backends import reference_names

    check_choice(reference, "reference", ("auto", *reference_names(), None))
    alpha = check_open_unit(false_fail_rate, "false_fail_rate")
    beta = check_open_unit(false_pass_rate, "false_pass_rate")
    shape, noise_shape = check_shapes(shape, noise_shape)
    takes = takes_noise_shape(fn)
    if noise_shape is not None and not takes:
        raise ValueError(
            f"noise_shape ({list(noise_shape)}) needs fn to take a noise_shape argument; {name_of(fn)} has none"
        )
    delta = None if discrepancy is None else check_positive(discrepancy, "discrepancy")
    probe = None
    if noise_shape is None and takes:  # fn without noise_shape: no probe (its checks say not applicable)
        if len(shape) >= 3:
            probe = (shape, (shape[0],) + (1,) * (len(shape) - 2) + (shape[-1],))
        elif len(shape) == 2 and shape == DEFAULT_SHAPE:
            probe = DEFAULT_PROBE
        elif len(shape) == 2 and shape[0] > 1:
            probe = (shape, (shape[0], 1))
    if backward is not None:
        backward = check_flag(backward, "backward")
    if not isinstance(recompute, (bool, str)):
        raise TypeError(f"recompute ({recompute!r}) must be True, False or the name of a wrapper")
    if recompute and backward is False:
        raise ValueError(f"recompute ({recompute!r}) needs the backward checks: leave backward on")
    return Config(
        fn,
        name_of(fn),
        rate,
        dtype,
        shape,
        noise_shape,
        seed,
        bool(stateful),
        reference,
        alpha,
        beta,
        delta,
        math.nan,
        bool(strict_nominal),
        probe,
        max_calls,
        backend,
        keep_dtype,
        backward,
        recompute,
        bool(exact_scale),
        takes_noise_shape=takes,
        mechanism=mechanism,
        call_timeout=call_timeout,
        drift=drift,
        extra={"reference_arg": reference},
    )


def settle(cfg: Config, backend) -> Finding:
    """Fill in what depends on the backend: the reference stream, the keep probability and the
    discrepancy.  Returns the keep_probability finding."""
    if cfg.reference == "auto":
        cfg.reference = backend.default_reference
    elif cfg.reference is not None and cfg.reference not in backend.references:
        offered = ", ".join(repr(r) for r in backend.references) or "none"
        raise ValueError(
            f"reference ({cfg.reference!r}) is not a stream of backend {backend.name!r} "
            f"(it offers: {offered}; None skips the bit-exact check)"
        )
    cfg.backend_name = backend.name
    if not backend.has_noise_shape:
        cfg.probe = None  # no noise shape to ask fn for (an explicit one: the units fn draws itself)
    if cfg.backward is None:
        cfg.backward = backend.differentiable
    if cfg.recompute:
        wrappers = backend.recompute_wrappers
        if cfg.recompute is True and wrappers:
            cfg.recompute = wrappers[0]
        elif cfg.recompute not in wrappers:
            offered = ", ".join(repr(w) for w in wrappers) or "none"
            raise ValueError(
                f"recompute ({cfg.recompute!r}) is not a wrapper of backend {backend.name!r} (it offers: {offered})"
            )
    keep_dtype = cfg.keep_dtype or cfg.dtype
    keep_exact = backend.keep_fraction(cfg.rate, keep_dtype, cfg.reference)
    cfg.keep = float(1 - cfg.rate) if cfg.strict_nominal else float(keep_exact)
    note = backend.keep_note(cfg.rate, keep_dtype, cfg.reference)
    # numpy's keep is 1 - rate, the first documented one: no model of its own
    own = [(f"{backend.name}'s keep ({note})", _keep_of(backend, cfg))] if note else []
    if cfg.strict_nominal:
        cfg.keep_models = [("1 - rate (strict_nominal)", lambda r: 1 - Fraction(r))]
    elif cfg.reference is None and cfg.keep_dtype is None:  # an RNG of its own: any documented correct mechanism
        cfg.keep_models = own + keep_models(cfg.dtype)
    else:  # the framework's stream (or alpha dropout's documented uniform): its exact keep
        cfg.keep_models = own or [("1 - rate", _keep_of(backend, cfg))]
        if cfg.keep_dtype is None and not cfg.strict_nominal:
            for variant in backend.variants(cfg.reference, cfg.dtype):  # as documented: its keep too
                note = backend.keep_note(cfg.rate, cfg.dtype, variant)
                cfg.keep_models.append((f"{backend.name}'s keep ({note})", _keep_of(backend, cfg, variant)))
    if cfg.delta is None:
        cfg.delta = 0.01 * min(cfg.keep, 1 - cfg.keep) if 0 < cfg.keep < 1 else 0.01
    finding = keep_finding(
        cfg.rate,
        keep_dtype,
        keep_exact,
        backend.keep_note(cfg.rate, keep_dtype, cfg.reference),
        cfg.reference == "tensorflow-xla",
    )
    for label, keep_of in cfg.keep_models[1:] if cfg.reference is not None else ():
        finding.detail += f"; or, as documented too, {float(keep_of(cfg.rate)):.10g}: {label}"
    return finding


def _keep_of(backend, cfg, reference="settled"):
    ref = cfg.reference if reference == "settled" else reference

    def keep(rate):
        return Fraction(backend.keep_fraction(rate, cfg.keep_dtype or cfg.dtype, ref))

    return keep


def keep_finding(rate, dtype, keep_exact, note: str, xla: bool) -> Finding:
    nominal = 1 - rate
    if float(keep_exact) == nominal:
        return Finding(
            "keep_probability",
            f"{dtype} at rate {rate}: a correct implementation keeps exactly 1 - rate",
            float(keep_exact),
        )
    return Finding(
        "keep_probability",
        f"{dtype} at rate {rate}{' under XLA' if xla else ''}: {note}, so a correct implementation keeps "
        f"{keep_exact} = {float(keep_exact):.10g}, not 1 - rate = {nominal:.10g} (relative difference "
        f"{(float(keep_exact) - nominal) / nominal:+.3g})",
        float(keep_exact),
    )
