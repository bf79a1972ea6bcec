"""verify_dropblock(fn): DropBlock against its exact geometry.

The contract (declared by the parameters; the default is torchvision's ``drop_block2d``): block
k = min(block_size, H, W) on every axis (``block_clip="per_axis"``: min(block_size, L) per axis),
even k refused (``even="asymmetric"``: rows [s - k//2, s - k//2 + k - 1]); centres Bernoulli(gamma),
gamma = rate * prod(L) / (prod(k) * prod(L - k + 1)) unless ``gamma`` is given, only where the
block fits (``centres="all"``: anywhere, blocks clipped); one mask per (sample, channel)
(``shared_across_channels``: one per sample; ``per_sample=False``: one for the batch); kept
values x * numel / (eps + kept count of the tensor) (``normalization``); x unchanged in
inference and at rate 0.  Library variants, declared:

* torchvision ``drop_block2d``/``DropBlock2d``/``drop_block3d``: the defaults;
* timm >= 1.0.23 ``DropBlock2d`` (default): ``centres="all", shared_across_channels=True,
  block_clip="per_axis", even="asymmetric", eps=1e-7`` (``couple_channels=False``: not shared);
* timm <= 1.0.22: ``fast=True``: ``centres="all"``, ``fast=False``: valid centres,
  ``batchwise=True``: ``per_sample=False``, both with ``gamma=`` its formula (unclipped block).

Checks (module ``dropblock_checks``; statistical ones share the false-fail budget by Holm):

* ``drop_fraction`` (statistical): the dropped count of n independent maps against n E[X],
  E and Var exact from the geometry (``dropblock_geometry``), Bennett's inequality (provably
  conservative).  Sized so that a gamma whose maps drop ``discrepancy`` more or less (default 5%
  of min(f, 1 - f), f the exact fraction) fails with probability >= 1 - false_pass_rate (bounded by
  the same inequality under that gamma).  The realized fraction beside ``rate`` is a finding;
* ``drop_positions`` (statistical): each position's drops over the maps, exact binomial against
  1 - (1 - gamma)^c(p), Bonferroni over the positions: anchoring, clipping, allowed centres;
* ``block_union`` (exact): every dropped position lies in an allowed block dropped whole
  (erosion then dilation of the mask gives it back): per-element drops, smaller or shifted
  blocks, blocks crossing the border under valid centres;
* ``channels_shared``/``samples_shared`` (exact, when declared): identical masks;
* ``sample_independence``, ``channel_independence``, ``call_independence`` (statistical):
  Fisher's exact test on pairs of maps at the positions of highest drop rate one block apart
  (independent and identically distributed within a map, so the pairs are i.i.d.);
  ``span_independence``: two positions one block apart share no centre: blocks larger than
  declared or centres drawn together correlate them;
* ``normalization`` (exact within the derived rounding bound, ``dropblock_checks``);
* ``seed_determinism`` (stateless): the same seed gives the same output bit for bit;
* ``rate_zero_identity``: at rate 0 nothing dropped and kept values as normalized (x within
  the bound); ``inference_identity`` (``layer=True``): ``eval()``/``training=False`` give x.

Shapes a variant cannot handle (wrong rank, even k with ``even="reject"``, a gamma outside (0, 1))
are refused before any call.  Corpus and tests: tests/structured_corpus_dropblock.py,
tests/test_dropblock.py.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from .._checks import (
    check_callable,
    check_choice,
    check_count,
    check_dtype,
    check_flag,
    check_open_unit,
    check_positive,
    check_probability,
    check_shape,
)
from ..report import Check, Finding, Report
from ..structure import holm_bonferroni
from .dropblock_checks import Tally, independence_checks, shared_checks, union_check
from .dropblock_geometry import Geometry, maps_needed

MIN_CALLS = 8  # four pairs of calls at least for call_independence
STATISTICAL = (
    "drop_fraction",
    "drop_positions",
    "sample_independence",
    "channel_independence",
    "call_independence",
    "span_independence",
)


@dataclass
class Declaration:
    centres: str
    shared_across_channels: bool
    per_sample: bool
    block_clip: str
    even: str
    normalization: str
    eps: float


def verify_dropblock(
    fn,
    rate,
    block_size,
    shape,
    *,
    centres="valid",
    shared_across_channels=False,
    per_sample=True,
    gamma=None,
    block_clip="square",
    even="reject",
    normalization="count",
    eps=1e-6,
    dtype="float32",
    seed=0,
    stateful=False,
    layer=False,
    backend=None,
    false_fail_rate=1e-6,
    false_pass_rate=1e-3,
    discrepancy=None,
    max_calls=5_000,
) -> Report:
    """Prove or refute a DropBlock implementation against its declared geometry (module docstring).

    ``fn(x, rate, seed)`` (stateless, ``seed`` in the backend's form as for ``verify``);
    ``stateful=True``: ``fn(x, rate)``, the battery seeding the frameworks; ``layer=True``: ``fn``
    is ``make_layer(rate, seed)`` returning a torch module (``train()``/``eval()``) or a layer
    called as ``layer(x, training=...)``.  ``shape``: (N, C, H, W) or (N, C, D, H, W).
    ``discrepancy``: the error of the dropped fraction (absolute) the fraction test detects with
    probability >= 1 - false_pass_rate (default 5% of min(f, 1 - f)); ``max_calls`` bounds the
    calls (a run cut short says what it can detect)."""
    cfg = _configure(**locals())
    caller = _Caller(cfg)
    x_np, backend = caller.start()
    tally = Tally(cfg.geom, cfg.decl, cfg.shape, cfg.dtype, np.asarray(x_np, np.float64), cfg.rate)
    findings = [_design_finding(cfg)]
    checks = []
    try:
        for i in range(cfg.calls):
            tally.add(caller.main(i))
        checks = _conclude(cfg, caller, tally)
    except _ContractError as exc:
        checks = [Check("contract", False, detail=str(exc), reproduce=cfg.reproduce)]
    if tally.maps:
        findings.insert(0, _fraction_finding(cfg, tally))
    passed = all(c.passed is not False for c in checks)
    return Report(passed, checks, findings, caller.samples, cfg.seed, cfg.as_dict(backend.name))


class _ContractError(Exception):
    pass


@dataclass
class _Config:
    fn: object
    name: str
    rate: float
    block_size: int
    shape: tuple
    dtype: str
    seed: int
    stateful: bool
    layer: bool
    backend: str | None
    alpha: float
    beta: float
    delta: float
    calls: int
    max_calls: int
    gamma_given: float | None
    decl: Declaration
    geom: Geometry
    short: bool = False  # max_calls cut the design short
    discrepancy_given: float | None = None

    @property
    def reproduce(self) -> str:
        d = self.decl
        opts = [f"rate={self.rate!r}", f"block_size={self.block_size}", f"shape={list(self.shape)}"]
        defaults = {
            "centres": "valid",
            "shared_across_channels": False,
            "per_sample": True,
            "block_clip": "square",
            "even": "reject",
            "normalization": "count",
            "eps": 1e-6,
        }
        opts += [f"{k}={getattr(d, k)!r}" for k, v in defaults.items() if getattr(d, k) != v]
        if self.gamma_given is not None:
            opts.append(f"gamma={self.gamma_given!r}")
        opts += [f"dtype={self.dtype!r}", f"seed={self.seed}"]
        opts += [s for s, on in (("stateful=True", self.stateful), ("layer=True", self.layer)) if on]
        if self.alpha != 1e-6:
            opts.append(f"false_fail_rate={self.alpha!r}")
        if self.discrepancy_given is not None:
            opts.append(f"discrepancy={self.discrepancy_given!r}")
        if self.max_calls != 5_000:  # the calls made decide the verdicts a replay must give
            opts.append(f"max_calls={self.max_calls}")
        return f"verify_dropblock({self.name}, {', '.join(opts)})"

    def as_dict(self, backend_name) -> dict:
        d = self.decl
        return {
            "api": "verify_dropblock",
            "fn": self.name,
            "rate": self.rate,
            "block_size": self.block_size,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "centres": d.centres,
            "shared_across_channels": d.shared_across_channels,
            "per_sample": d.per_sample,
            "gamma": self.geom.gamma,
            "block_clip": d.block_clip,
            "even": d.even,
            "normalization": d.normalization,
            "eps": d.eps,
            "seed": self.seed,
            "stateful": self.stateful,
            "layer": self.layer,
            "backend": backend_name,
            "false_fail_rate": self.alpha,
            "false_pass_rate": self.beta,
            "discrepancy": self.delta,
        }


def _configure(**a) -> _Config:
    """Every argument validated, and the design, before any call of fn."""
    fn = check_callable(a["fn"], "fn")
    rate = check_probability(a["rate"], "rate")
    if rate == 0:
        raise ValueError("rate (0.0) must be > 0: there is no dropout to verify (every run checks rate 0 itself)")
    block_size = check_count(a["block_size"], "block_size", minimum=1)
    shape = check_shape(a["shape"], "shape")
    if len(shape) not in (4, 5):
        raise ValueError(f"shape ({list(shape)}) must be (N, C, H, W) or (N, C, D, H, W): DropBlock is 2-D or 3-D")
    decl = Declaration(
        check_choice(a["centres"], "centres", ("valid", "all")),
        check_flag(a["shared_across_channels"], "shared_across_channels"),
        check_flag(a["per_sample"], "per_sample"),
        check_choice(a["block_clip"], "block_clip", ("square", "per_axis")),
        check_choice(a["even"], "even", ("reject", "asymmetric")),
        check_choice(a["normalization"], "normalization", ("count", "count_per_sample", "rate", "none")),
        0.0 if a["eps"] == 0 else check_positive(a["eps"], "eps"),
    )
    if decl.normalization == "rate" and rate == 1:
        raise ValueError("rate (1.0) must be < 1 with normalization='rate' (x / (1 - rate))")
    stateful, layer = check_flag(a["stateful"], "stateful"), check_flag(a["layer"], "layer")
    if stateful and layer:
        raise ValueError("stateful (True) and layer (True) exclude each other: a layer is stateful by itself")
    spatial = shape[2:]
    kernel = (
        (min(block_size, *spatial),) * len(spatial)
        if decl.block_clip == "square"
        else tuple(min(block_size, s) for s in spatial)
    )
    even = [k for k in kernel if k % 2 == 0]
    if even and decl.even == "reject":
        clipped = "" if block_size in kernel else f" (block_size {block_size} clipped to the map {list(spatial)})"
        raise ValueError(
            f"block_size ({block_size}) gives an even block {even[0]}{clipped}: even='reject' (torchvision's "
            "drop_block2d raises 'block size should be odd'); declare even='asymmetric' for timm >= 1.0.23"
        )
    gamma = a["gamma"]
    if gamma is None:
        fits = math.prod(s - k + 1 for s, k in zip(spatial, kernel, strict=True))
        gamma = rate * math.prod(spatial) / (math.prod(kernel) * fits)
        if not 0 < gamma < 1:
            raise ValueError(
                f"rate ({rate!r}) gives gamma {gamma:.6g} for blocks {list(kernel)} on {list(spatial)}: "
                "it must be in (0, 1)"
            )
    else:
        gamma = check_open_unit(gamma, "gamma")
    dtype = check_dtype(a["dtype"])
    seed = check_count(a["seed"], "seed")
    if seed >= 2**31 - 1:
        raise ValueError(f"seed ({seed}) must be < 2**31 - 1 (it is an int32 seed component)")
    alpha = check_open_unit(a["false_fail_rate"], "false_fail_rate")
    beta = check_open_unit(a["false_pass_rate"], "false_pass_rate")
    max_calls = check_count(a["max_calls"], "max_calls", minimum=MIN_CALLS)
    backend = a["backend"]
    if backend is not None:
        from .config import check_backend_name

        check_backend_name(backend)
    geom = Geometry(spatial, kernel, decl.centres, gamma)
    f = geom.mean() / geom.positions
    delta = 0.05 * min(f, 1 - f) if a["discrepancy"] is None else check_open_unit(a["discrepancy"], "discrepancy")
    per_call = (shape[0] if decl.per_sample else 1) * (1 if decl.shared_across_channels else shape[1])
    maps, reached = maps_needed(geom, alpha / len(STATISTICAL), beta, delta, per_call * max_calls)
    calls = max(MIN_CALLS, min(max_calls, math.ceil(maps / per_call)))
    calls += calls % 2 if calls < max_calls else -(calls % 2)  # pairs of calls
    from .config import name_of

    return _Config(
        fn,
        name_of(fn),
        rate,
        block_size,
        shape,
        dtype,
        seed,
        stateful,
        layer,
        backend,
        alpha,
        beta,
        delta,
        calls,
        max_calls,
        a["gamma"],
        decl,
        geom,
        short=not reached,
        discrepancy_given=a["discrepancy"],
    )


class _Caller:
    """fn under its contract: stateless, stateful or a layer factory; numpy in, numpy out."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.samples = 0
        self.layer = None

    def start(self):
        from ..backends import get_backend, make_input_array, seed_globals

        cfg = self.cfg
        self.x_np = make_input_array(cfg.shape, cfg.dtype, cfg.seed)
        seed_globals(cfg.seed)
        if cfg.layer:
            self.layer = self.make(cfg.rate)
        self.backend = get_backend(cfg.backend) if cfg.backend else self._detect()
        if self.backend.name == "torch":
            self.backend.start(cfg)
        return self.x_np, self.backend

    def make(self, rate):
        try:
            return self.cfg.fn(rate, self.cfg.seed)
        except Exception as exc:
            raise TypeError(f"make_layer({rate!r}, {self.cfg.seed}) raised {type(exc).__name__}: {exc}") from None

    def _detect(self):
        from ..backends import detect_backend, get_backend
        from .api import loaded_frameworks

        if self.layer is not None and _is_torch(self.layer):
            return get_backend("torch")
        try:
            y = self.invoke(self.x_np.copy(), self.cfg.rate, (self.cfg.seed, 2**20), None)
            name = detect_backend(y)
            if name:
                return get_backend(name)
        except Exception:  # noqa: BLE001 - a framework's fn may refuse numpy: try the loaded ones
            pass
        for name in loaded_frameworks():
            backend = get_backend(name)
            try:
                self.invoke(backend.native(self.x_np.copy()), self.cfg.rate, (self.cfg.seed, 2**20), backend)
            except Exception:  # noqa: BLE001 - not this framework either
                continue
            return backend
        raise TypeError(
            f"fn ({self.cfg.name}) could not be called on numpy, torch, JAX or TensorFlow inputs of "
            f"shape {list(self.cfg.shape)}; pass backend="
        )

    def invoke(self, x, rate, pair, backend, training=True, layer=None):
        cfg = self.cfg
        if cfg.layer:
            lay = layer if layer is not None else self.layer
            if _is_torch(lay):
                lay.train(training)
                return lay(x)
            return lay(x, training=training)
        if cfg.stateful:
            return cfg.fn(x, rate)
        return cfg.fn(x, rate, backend.seed(pair) if backend is not None else tuple(pair))

    def call(self, rate, pair, training=True, layer=None) -> np.ndarray:
        from .runner import ContractError, read_output

        where = f"call {pair[1]}" if not self.cfg.layer else "the layer's call"
        try:
            # a fresh copy of x on every call: an in-place DropBlock (inplace=True) is verified too
            y = self.invoke(self.backend.native(self.x_np.copy()), rate, pair, self.backend, training, layer)
            out = read_output(self.backend, y, f"fn at rate {rate}", self.cfg.shape, self.cfg.dtype)
        except ContractError as exc:
            raise _ContractError(str(exc)) from None
        except Exception as exc:
            words = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()[:300]
            raise _ContractError(f"{where} at rate {rate} raised {type(exc).__name__}: {words}") from None
        self.samples += out.size
        if np.isnan(np.asarray(out, np.float64)).any():
            raise _ContractError(f"{where} at rate {rate} returned NaN for a finite input")
        return out

    def main(self, i) -> np.ndarray:
        return self.call(self.cfg.rate, (self.cfg.seed, i))


def _is_torch(obj) -> bool:
    from .layer_probe import _is_torch as is_torch

    return is_torch(obj)


def _conclude(cfg, caller, tally) -> list:
    line = cfg.reproduce
    stat = [tally.fraction_check(line), tally.positions_check(line)]
    stat += independence_checks(tally, line)
    exact = [union_check(tally, line), *shared_checks(tally, line), tally.values_check(line)]
    exact += [_seed_determinism(cfg, caller), _rate_zero(cfg, caller, tally), _inference(cfg, caller)]
    live = [c for c in stat if c.pvalue is not None]
    holm = holm_bonferroni([c.pvalue for c in live], cfg.alpha)
    for c, rejected, level in zip(live, holm.rejected, holm.thresholds, strict=True):
        c.passed, c.level = not rejected, level
    order = ["drop_fraction", "drop_positions", "block_union", "channels_shared", "samples_shared"]
    checks = stat + exact
    checks.sort(key=lambda c: order.index(c.name) if c.name in order else len(order))
    return checks


def _seed_determinism(cfg, caller) -> Check:
    if cfg.stateful or cfg.layer:
        return Check("seed_determinism", None, detail="stateful contract: no seed to repeat")
    a = caller.call(cfg.rate, (cfg.seed, 0))
    b = caller.call(cfg.rate, (cfg.seed, 0))
    same = bool(np.array_equal(np.asarray(a, np.float64), np.asarray(b, np.float64)))
    return Check(
        "seed_determinism",
        same,
        samples=int(a.size),
        observed="identical"
        if same
        else f"{int(np.count_nonzero(np.asarray(a, np.float64) != np.asarray(b, np.float64))):,} elements differ",
        expected="the same seed gives the same output",
        detail="" if same else "the output depends on more than the seed (hidden state)",
        reproduce=cfg.reproduce,
    )


def _rate_zero(cfg, caller, tally) -> Check:
    """At rate 0 nothing is dropped and every value is x normalized as declared (count: the
    count is numel, so x * numel / (eps + numel), within the bound; not x bit for bit)."""
    layer = caller.make(0.0) if cfg.layer else None
    y = caller.call(0.0, (cfg.seed, cfg.calls + 1), layer=layer)
    values = Tally(cfg.geom, cfg.decl, cfg.shape, cfg.dtype, tally.x, 0.0)
    dropped = np.asarray(y, np.float64) == 0
    values._values(np.asarray(y, np.float64), dropped)
    n_dropped, off = int(np.count_nonzero(dropped)), values.bad_values
    ok = n_dropped == 0 and off == 0
    return Check(
        "rate_zero_identity",
        ok,
        samples=int(dropped.size),
        observed="nothing dropped, every value as normalized"
        if ok
        else f"{n_dropped:,} dropped, {off:,} kept values off the declared normalization at rate 0",
        expected="nothing dropped at rate 0, every value x (normalized as declared)",
        detail="" if ok else "fn drops or changes values at rate 0",
        reproduce=cfg.reproduce,
    )


def _inference(cfg, caller) -> Check:
    if not cfg.layer:
        return Check("inference_identity", None, detail="a function has no training flag (layer=True checks it)")
    results = {}
    y = np.asarray(caller.call(cfg.rate, (cfg.seed, 0), training=False), np.float64)
    results["eval()" if _is_torch(caller.layer) else "training=False"] = bool(
        np.array_equal(y, caller.x_np.astype(np.float64))
    )
    if _is_torch(caller.layer):
        import torch

        with torch.no_grad():
            y = np.asarray(caller.call(cfg.rate, (cfg.seed, 0), training=False), np.float64)
        results["eval() under torch.no_grad()"] = bool(np.array_equal(y, caller.x_np.astype(np.float64)))
        caller.layer.train(True)
    bad = [k for k, ok in results.items() if not ok]
    return Check(
        "inference_identity",
        not bad,
        values=results,
        observed="x returned bit for bit" if not bad else f"dropped or scaled with {', '.join(bad)}",
        expected="x unchanged at inference",
        detail="" if not bad else "the layer drops or scales at inference",
        reproduce=cfg.reproduce,
    )


def _fraction_finding(cfg, tally) -> Finding:
    g = cfg.geom
    exact = g.mean() / g.positions
    measured = tally.total / (tally.maps * g.positions)
    return Finding(
        "dropped_fraction",
        f"at rate {cfg.rate:g} the declared geometry ({g.describe()}) drops {exact:.4g} of the positions: "
        f"{exact / cfg.rate:.3g} x rate",
        exact,
        measured=f"{measured:.4g} over {tally.maps:,} maps",
    )


def _design_finding(cfg) -> Finding:
    g = cfg.geom
    return Finding(
        "design",
        f"{cfg.calls} calls: the fraction test detects a dropped fraction {cfg.delta:.3g} off the exact "
        f"{g.mean() / g.positions:.4g} with probability >= {1 - cfg.beta:g}"
        + (f" (cut short by max_calls ({cfg.max_calls}): that discrepancy is not guaranteed)" if cfg.short else ""),
        cfg.calls,
    )


__all__ = ["verify_dropblock"]
