"""verify(fn): a battery that proves or refutes a dropout implementation.

Every statistical check is sized from (false_fail_rate, false_pass_rate, discrepancy) and the
run's false-fail budget is split across them: the sequential keep-fraction test gets alpha / m
up front (Bonferroni) and the p-value checks share the rest by Holm's step-down.  So a correct
implementation fails a run with probability at most ``false_fail_rate``.  Exact checks
(mechanism, nesting, scale, determinism, noise-shape consistency) cannot fail by chance.
"""
from __future__ import annotations

import math
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy.stats import binom, chi2

from ._checks import (check_callable, check_choice, check_count, check_flag, check_open_unit,
                      check_positive, check_rate)
from ._exact import fisher_two_sided_pvalue
from ._floats import FORMATS, bfloat16_bits_to_float32, dtype_name
from .binomial import proportion_ci, rate_test
from .counts import _normalise_noise_shape
from .design import min_discrepancy_detectable, min_num_samples_for_rate_test
from .precision import (_scaled_native, apply_scale, exact_scale, expected_keep_fraction, expected_scale,
                        ulp_distance)
from .report import Check, Finding, Report
from .sequential import SequentialRateTest
from .structure import (holm_bonferroni, homogeneity_test, trend_test)

__all__ = ["verify", "verify_alpha_dropout", "verify_gaussian_dropout", "Report", "Check", "Finding",
           "DEFAULT_SHAPE"]

DEFAULT_SHAPE = (64, 4096)          # 64 rows: a mask shared across the batch shows
DEFAULT_PROBE = ((256, 2, 2, 256), (256, 1, 1, 256))  # 4-D input, one draw per (batch, channel); DEFAULT_SHAPE-sized calls
_SCALE_VALUES = 200_000             # kept values checked bit for bit against each formula
_SCALE_WHOLE_ELEMENTS = 1 << 20     # of which from whole stored calls (the rest gathered)
_MEAN_ELEMENTS = 1_000_000          # elements in the unbiasedness sum (whole calls)
_SEED_POSITIONS = 1 << 18           # positions compared between seeds
_MIN_CALLS = 8
_MAX_STORED = 64                    # masks kept for the seed and threshold checks
_GROUPS = 16
_VALUE_BINS = 8                     # bins of |x| for the value-independence trend
_POOLED_EXPECTED = 1000             # expected positions per cell of the call-independence histogram
_MAX_PENDING = 8                    # jobs queued for the worker thread at most
_MAX_HELD = 64 << 20                # bytes of fn outputs those jobs may hold (one call's at least)


class ContractError(Exception):
    """fn broke the calling contract (raised, or returned the wrong shape or dtype)."""


@dataclass
class _Config:
    fn: object
    fn_name: str
    rate: float
    dtype: str
    shape: tuple
    noise_shape: tuple | None
    seed: int
    stateful: bool
    reference: str | None
    alpha: float
    beta: float
    delta: float
    keep: float
    strict_nominal: bool
    probe: tuple | None            # (shape, noise_shape) of the noise-shape probe, or None
    max_calls: int = 20_000
    samples: int = 0
    calls: int = 0

    def reproduce(self, extra: str = "") -> str:
        opts = [f"rate={self.rate!r}", f"dtype={self.dtype!r}", f"shape={list(self.shape)}",
                f"seed={self.seed}"]
        if self.noise_shape is not None:
            opts.append(f"noise_shape={list(self.noise_shape)}")
        if self.stateful:
            opts.append("stateful=True")
        s = f"verify({self.fn_name}, {', '.join(opts)})"
        return f"{s}; {extra}" if extra else s


def _validate_shape(shape, name: str) -> tuple:
    try:
        dims = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise TypeError(f"{name} ({shape!r}) must be a sequence of ints") from None
    if len(dims) == 0 or any(d <= 0 for d in dims):
        raise ValueError(f"{name} ({list(dims)}) must have at least one axis and only positive dimensions")
    return dims


def check_shapes(shape, noise_shape) -> tuple:
    """verify()'s shape (None: DEFAULT_SHAPE) and noise_shape, validated (no TensorFlow needed)."""
    if shape is None and noise_shape is not None:
        raise ValueError(f"noise_shape ({list(noise_shape)}) needs an explicit shape")
    shape = DEFAULT_SHAPE if shape is None else _validate_shape(shape, "shape")
    if noise_shape is not None:
        noise_shape = _normalise_noise_shape(noise_shape, shape)
    return shape, noise_shape


def _name_of(fn) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__


def verify(fn, *, rate, dtype="float32", shape=None, noise_shape=None, seed=0, stateful=False,
           reference="tensorflow", false_fail_rate=1e-6, false_pass_rate=1e-3, discrepancy=None,
           strict_nominal=False, max_calls=20_000) -> Report:
    """Prove or refute a dropout implementation.

    fn follows ``tf.nn.experimental.stateless_dropout``: ``fn(x, rate, seed, noise_shape=None)``
    with seed an int32 tensor of shape [2]; with ``stateful=True`` it follows ``tf.nn.dropout``:
    ``fn(x, rate, noise_shape=None)``, fresh randomness on every call.

    ``reference``: "tensorflow" checks the kept set bit for bit against TF's stateless uniform,
    "tensorflow-xla" against XLA's (jit_compile) stream, None skips that check (an RNG of its
    own: the black-box threshold check carries the proof).  ``discrepancy`` (default 1% of
    min(keep, 1 - keep)) is the keep-probability error the rate check detects with probability
    >= 1 - false_pass_rate.  The keep probability expected is TF's dtype-exact one
    (``expected_keep_probability``); ``strict_nominal=True`` demands 1 - rate instead.
    ``max_calls`` bounds the calls of the main sequence and of the noise-shape probe (tiny
    shapes): a run cut short says so in a finding and in the keep-fraction check's detail.
    """
    return _verify(fn, _Battery, None, rate=rate, dtype=dtype, shape=shape, noise_shape=noise_shape,
                   seed=seed, stateful=stateful, reference=reference, false_fail_rate=false_fail_rate,
                   false_pass_rate=false_pass_rate, discrepancy=discrepancy, strict_nominal=strict_nominal,
                   max_calls=max_calls)


def _verify(fn, battery_cls, keep_dtype, *, rate, dtype, shape, noise_shape, seed, stateful, reference,
            false_fail_rate, false_pass_rate, discrepancy, strict_nominal, max_calls) -> Report:
    check_callable(fn, "fn")
    rate = check_rate(rate)
    dtype = dtype_name(dtype)
    stateful = check_flag(stateful, "stateful")
    strict_nominal = check_flag(strict_nominal, "strict_nominal")
    keep_dtype = dtype if keep_dtype is None else dtype_name(keep_dtype, "keep_dtype")
    seed = check_count(seed, "seed")
    max_calls = check_count(max_calls, "max_calls", minimum=_MIN_CALLS)
    if seed >= 2**31 - 1:
        raise ValueError(f"seed ({seed}) must be < 2**31 - 1 (it is an int32 seed component)")
    check_choice(reference, "reference", ("tensorflow", "tensorflow-xla", None))
    alpha = check_open_unit(false_fail_rate, "false_fail_rate")
    beta = check_open_unit(false_pass_rate, "false_pass_rate")
    shape, noise_shape = check_shapes(shape, noise_shape)
    xla = reference == "tensorflow-xla"
    keep_exact = expected_keep_fraction(rate, keep_dtype, xla=xla)
    keep = float(1 - rate) if strict_nominal else float(keep_exact)
    if discrepancy is None:
        delta = 0.01 * min(keep, 1 - keep) if 0 < keep < 1 else 0.01
    else:
        delta = check_positive(discrepancy, "discrepancy")
    probe = None
    if noise_shape is None:
        if len(shape) >= 3:
            probe = (shape, (shape[0],) + (1,) * (len(shape) - 2) + (shape[-1],))
        elif len(shape) == 2 and shape == DEFAULT_SHAPE:
            probe = DEFAULT_PROBE
        elif len(shape) == 2 and shape[0] > 1:
            probe = (shape, (shape[0], 1))

    cfg = _Config(fn, _name_of(fn), rate, dtype, shape, noise_shape, seed, bool(stateful), reference,
                  alpha, beta, delta, keep, bool(strict_nominal), probe, max_calls)
    config = {"fn": cfg.fn_name, "rate": rate, "dtype": dtype, "shape": list(shape),
              "noise_shape": list(noise_shape) if noise_shape is not None else None, "seed": seed,
              "stateful": cfg.stateful, "reference": reference, "false_fail_rate": alpha,
              "false_pass_rate": beta, "discrepancy": delta, "strict_nominal": cfg.strict_nominal}
    findings = [_keep_finding(rate, keep_dtype, keep_exact, xla)]
    try:
        checks = battery_cls(cfg, findings).run()
    except ContractError as exc:
        checks = [Check("contract", False, detail=str(exc), reproduce=cfg.reproduce())]
    passed = all(c.passed is not False for c in checks)
    return Report(passed, checks, findings, cfg.samples, seed, config)


def _keep_finding(rate, dtype, keep_exact, xla: bool) -> Finding:
    nominal = 1 - rate
    if float(keep_exact) == nominal:
        return Finding("keep_probability", f"{dtype} at rate {rate}: keeps exactly 1 - rate", float(keep_exact))
    fmt = FORMATS[dtype]
    levels = fmt.xla_uniform_levels if xla else fmt.uniform_levels
    return Finding(
        "keep_probability",
        f"{dtype} at rate {rate}{' under XLA' if xla else ''}: TF's uniform has {levels} levels and the rate "
        f"rounds to {dtype}, so the keep probability is {keep_exact} = {float(keep_exact):.10g}, not "
        f"1 - rate = {nominal:.10g} (relative difference {(float(keep_exact) - nominal) / nominal:+.3g})",
        float(keep_exact))


# --------------------------------------------------------------------------------------------
class _Battery:
    def __init__(self, cfg: _Config, findings: list):
        import tensorflow as tf

        from . import reference as ref

        self.tf, self.ref, self.cfg, self.findings = tf, ref, cfg, findings
        self.fmt = FORMATS[cfg.dtype]
        self.x = self.make_input(cfg.shape, cfg.seed)
        self.x_np = self.x.numpy()
        self.unit_shape = cfg.noise_shape or cfg.shape
        self.axes = tuple(i for i, (d, s) in enumerate(zip(self.unit_shape, cfg.shape)) if d == 1 and s != 1)
        if tuple(self.unit_shape) == tuple(cfg.shape):  # before fn's first call, while no kernel runs
            self.value_groups = _value_groups(self.x_np, self.fmt)
        self._rate_cache = {}

    def make_input(self, shape, seed):
        return self.ref.make_input(shape, self.cfg.dtype, seed)

    def kept_elements(self, y_np) -> np.ndarray:
        if self.cfg.dtype == "bfloat16":  # ml_dtypes compares slowly: use the bits
            return (y_np.view(self.fmt.uint) & self.fmt.uint(self.fmt.abs_mask)) != 0
        return y_np != 0  # -0.0 == 0; NaN != 0

    # -- calling fn -----------------------------------------------------------------------
    def call(self, x, rate, seed_pair=None, noise_shape=None, x_np=None):
        cfg = self.cfg
        ns = list(noise_shape) if noise_shape is not None else None
        where = (f"fn(x, {rate!r}, noise_shape={ns})" if cfg.stateful
                 else f"fn(x, {rate!r}, seed={list(seed_pair)}, noise_shape={ns})")
        try:
            if cfg.stateful:
                y = cfg.fn(x, rate, noise_shape=ns)
            else:
                y = cfg.fn(x, rate, self.ref.as_seed(seed_pair), noise_shape=ns)
        except Exception as exc:  # report, never a bare traceback
            raise ContractError(f"{where} raised {type(exc).__name__}: {exc}") from None
        try:
            y_np = y.numpy() if hasattr(y, "numpy") else np.asarray(y)
        except Exception as exc:
            raise ContractError(f"{where} returned {type(y).__name__}, not an array: {exc}") from None
        shape = tuple(x.shape)
        if tuple(y_np.shape) != shape:
            raise ContractError(f"{where} returned shape {list(y_np.shape)}, expected {list(shape)}")
        if y_np.dtype.name != cfg.dtype:
            raise ContractError(f"{where} returned dtype {y_np.dtype.name}, expected {cfg.dtype}")
        cfg.samples += int(np.prod(shape))
        cfg.calls += 1
        return y_np

    def mask(self, y_np, x_np=None, noise_shape=None) -> tuple[np.ndarray, int]:
        """Unit-level kept mask and the number of inconsistent units."""
        kept = self.kept_elements(y_np)
        ns = noise_shape
        if ns is None or tuple(ns) == kept.shape:
            return kept, 0
        axes = tuple(i for i, (d, s) in enumerate(zip(ns, kept.shape)) if d == 1 and s != 1)
        any_kept = kept.any(axis=axes, keepdims=True)
        all_kept = kept.all(axis=axes, keepdims=True)
        return any_kept, int(np.count_nonzero(any_kept & ~all_kept))

    def later(self, f, *args, held: int = 0, **kwargs) -> None:
        """Run f on the worker thread after every job submitted before it (errors surface
        here or at the end of run).  ``held``: bytes the job keeps alive until it has run."""
        self.jobs.append((self.worker.submit(f, *args, **kwargs), held))
        self.held += held
        # memory stays bounded if the worker falls behind: a few jobs, a few calls' outputs
        while len(self.jobs) > _MAX_PENDING or (self.held > _MAX_HELD and len(self.jobs) > 1):
            job, size = self.jobs.popleft()
            job.result()
            self.held -= size

    def seed_pair(self, i: int, offset: int = 0):
        return (self.cfg.seed + offset, i)

    # -- the run --------------------------------------------------------------------------
    def run(self) -> list[Check]:
        cfg = self.cfg
        if cfg.keep in (0.0, 1.0):
            return self.run_degenerate()
        stats_plan = self.plan()
        alpha_seq = cfg.alpha / len(stats_plan)
        checks: dict[str, Check] = {}
        # Statistics run on one worker thread, in submission order, while this thread calls
        # fn (fn is only ever called from the caller's thread): the report is the same as a
        # serial run's, and TensorFlow's kernels keep the cores busy in the meantime.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dropout_stats") as self.worker:
            self.jobs, self.held = deque(), 0
            self.main_loop(alpha_seq, checks)
            self.after_loop(checks)
            while self.jobs:
                self.jobs.popleft()[0].result()
        # Holm across the p-value checks with what the sequential test left of the budget
        pchecks = [c for c in checks.values() if c.kind == "statistical" and c.pvalue is not None
                   and c.name != "keep_fraction"]
        if pchecks:
            holm = holm_bonferroni([c.pvalue for c in pchecks], cfg.alpha - alpha_seq)
            for c, rejected, level in zip(pchecks, holm.rejected, holm.thresholds):
                c.level = level
                c.passed = not rejected
                if rejected and not c.detail.startswith("FAIL"):
                    c.detail = f"p = {c.pvalue:.3g} <= its Holm level {level:.2g}: {c.detail}"
        order = ["keep_fraction", "mechanism", "threshold_nesting", "threshold_flips", "scale",
                 "unbiasedness", "seed_determinism", "seed_independence", "row_independence",
                 "neighbour_independence", "homogeneity_blocks", "homogeneity_strided",
                 *[f"homogeneity_axis{a}" for a in range(8)], "value_independence", "call_independence", "offset_independence",
                 "noise_shape_consistency", "noise_shape_units",
                 "stateful_fresh", "stateful_drift"]
        return [checks[n] for n in order if n in checks] + [checks[n] for n in sorted(checks) if n not in order]

    def plan(self) -> list[str]:
        """The statistical checks this configuration runs (fixes the budget split up front)."""
        cfg = self.cfg
        names = ["keep_fraction", "unbiasedness", "homogeneity_blocks", "homogeneity_strided", "call_independence"]
        names += [f"homogeneity_axis{a}" for a in self.homogeneity_axes()]
        if self.unit_shape[0] > 1 and len(self.unit_shape) > 1:
            names.append("row_independence")
        if self.unit_shape[-1] > 1:
            names.append("neighbour_independence")
        if tuple(self.unit_shape) == tuple(cfg.shape):  # one draw per element: its x is known
            names.append("value_independence")
        if math.prod(self.unit_shape) >= 4:
            names.append("offset_independence")
        if cfg.stateful:
            names += ["stateful_fresh", "stateful_drift"]
        else:
            names += ["seed_independence", "threshold_flips"]
        if cfg.probe is not None or cfg.noise_shape is not None:
            names.append("noise_shape_units")
        return names

    # -- degenerate keep probabilities: everything kept, or everything dropped -------------
    def run_degenerate(self) -> list[Check]:
        cfg = self.cfg
        y = self.call(self.x, cfg.rate, self.seed_pair(0), cfg.noise_shape)
        kept, _ = self.mask(y)
        if cfg.keep == 1.0:
            same = np.array_equal(y.view(self.fmt.uint), self.x_np.view(self.fmt.uint))
            return [Check("keep_fraction", bool(same), observed=f"{int(kept.sum())}/{kept.size} kept",
                          expected="all kept, unchanged (keep probability 1)", samples=kept.size,
                          detail="" if same else "rate 0 must return x unchanged",
                          reproduce=cfg.reproduce())]
        none = not kept.any()
        return [Check("keep_fraction", bool(none), observed=f"{int(kept.sum())}/{kept.size} kept",
                      expected=f"none kept: fl(rate) in {cfg.dtype} is >= 1", samples=kept.size,
                      detail="" if none else "the rate rounds to 1 in this dtype: everything must drop",
                      reproduce=cfg.reproduce())]

    # -- the main sequence of calls ---------------------------------------------------------
    def main_loop(self, alpha_seq: float, checks: dict) -> None:
        """Draw until the sequential rate test and the minimum sizes are met, accumulating
        what the other checks need (on the worker, as are their checks)."""
        cfg = self.cfg
        test = SequentialRateTest(cfg.keep, cfg.delta, false_fail_rate=alpha_seq, false_pass_rate=cfg.beta)
        units = int(np.prod(self.unit_shape))
        min_n = min_num_samples_for_rate_test(cfg.keep, min(4 * cfg.delta, 0.5 * max(cfg.keep, 1 - cfg.keep)),
                                              false_fail_rate=alpha_seq, false_pass_rate=cfg.beta)
        acc = _Accumulated(self.unit_shape, cfg.max_calls)
        self.stored_masks = []           # first masks, for seeds, threshold and mechanism checks
        self.store_limit = min(_MAX_STORED, max(2, math.ceil(_SEED_POSITIONS / units)))
        per_call_kept = []
        inconsistent = 0
        previous = None
        i = 0
        drawn = 0
        while (test.verdict == "continue" or drawn < min_n or i < _MIN_CALLS) and i < cfg.max_calls:
            y = self.call(self.x, cfg.rate, self.seed_pair(i), cfg.noise_shape)
            m, bad = self.mask(y, noise_shape=cfg.noise_shape)
            inconsistent += bad
            k = int(np.count_nonzero(m))
            drawn += m.size
            if test.verdict == "continue":
                test.update(k, m.size)
            per_call_kept.append(k)
            if len(self.stored_masks) < self.store_limit:
                self.stored_masks.append(m)
            self.later(self.accumulate, acc, y, m, k, previous, held=y.nbytes + m.nbytes)
            previous = m
            i += 1
        self.main_calls = i
        if test.verdict == "continue":
            test.stop()
            self.findings.append(Finding(
                "sample_size", f"shape {list(cfg.shape)} gives {units} draws per call: max_calls ({cfg.max_calls}) "
                f"calls gave {test.n:,} draws of the {test.n_max:,} the design may need; the keep-fraction check "
                "detects less than the requested discrepancy (its detail says how much)", test.n))
        self.later(self.main_checks, acc, test.result(), alpha_seq, i, inconsistent, per_call_kept, checks,
                   truncated=i >= cfg.max_calls and test.n < test.n_max)

    def accumulate(self, acc: "_Accumulated", y: np.ndarray, m: np.ndarray, k: int, previous) -> None:
        """One call's contribution to the position, pair, scale and mean checks."""
        np.add(acc.per_position, m, out=acc.per_position, casting="unsafe")
        _accumulate_pairs(acc.pair_tables, m, k)
        if self.cfg.stateful and previous is not None:
            _accumulate_table(acc.fresh_table, previous, m)
        if acc.scale_count < _SCALE_VALUES:
            kept_elems = m if m.shape == y.shape else self.kept_elements(y)  # m is per element then
            if acc.scale_whole < _SCALE_WHOLE_ELEMENTS:  # whole calls: compared without a gather
                acc.scale_calls.append((y, kept_elems))
                acc.scale_whole += y.size
            else:  # many calls at a high rate: keep only the kept values, memory stays small
                acc.scale_x.append(self.x_np[kept_elems])
                acc.scale_y.append(y[kept_elems])
            acc.scale_count += k if kept_elems is m else int(np.count_nonzero(kept_elems))
        if acc.mean_calls * y.size < _MEAN_ELEMENTS:
            acc.mean_total += _abs_sum(y)
            acc.mean_calls += 1

    def main_checks(self, acc, res, alpha_seq, calls, inconsistent, per_call_kept, checks, *,
                    truncated: bool) -> None:
        """The checks on the main sequence of calls."""
        cfg = self.cfg
        level_conf = 1 - alpha_seq
        ci = proportion_ci(res.kept, res.n, confidence_level=level_conf)
        # the sequential design guarantees the discrepancy; only a run cut short by max_calls
        # detects less, and then the detail says how much
        weaker = ""
        if truncated:
            detectable = min_discrepancy_detectable(cfg.keep, max(res.n, 1), false_fail_rate=alpha_seq,
                                                    false_pass_rate=cfg.beta)
            weaker = f"; cut short by max_calls, the {res.n:,} draws used detect only +-{detectable:.3g}"
        checks["keep_fraction"] = Check(
            "keep_fraction", res.passed, "statistical", res.pvalue, alpha_seq, res.n,
            observed=f"{res.kept}/{res.n} = {res.kept / res.n:.6g}",
            expected=f"{cfg.keep:.10g}" + (" (1 - rate)" if cfg.strict_nominal else f" (exact for {cfg.dtype})"),
            interval=(ci.low, ci.high),
            detail=(f"sequential test: {res.reason}; designed to catch keep {cfg.keep:.6g} +- {cfg.delta:.3g} "
                    f"with false-pass <= {cfg.beta:g} (fixed-n would need "
                    f"{min_num_samples_for_rate_test(cfg.keep, cfg.delta, false_fail_rate=alpha_seq, false_pass_rate=cfg.beta):,})"
                    + weaker),
            reproduce=cfg.reproduce())
        self.check_homogeneity(acc.per_position, calls, checks)
        self.check_calls(acc.per_position, calls, checks)
        if math.prod(self.unit_shape) >= 4:
            self.check_offsets(checks)
        if tuple(self.unit_shape) == tuple(cfg.shape):
            self.check_values(acc.per_position, calls, checks)
        self.check_pairs(acc.pair_tables, checks)
        self.check_scale_calls(acc, checks)
        self.check_mean(acc.mean_total, acc.mean_calls, checks)
        if cfg.noise_shape is not None:
            units = int(np.prod(self.unit_shape))
            checks["noise_shape_consistency"] = self.consistency_check(inconsistent, units * calls, cfg.noise_shape)
        if cfg.stateful:
            self.check_stateful(acc.fresh_table, per_call_kept, checks)

    # -- checks on accumulated data -----------------------------------------------------------
    def check_homogeneity(self, per_position: np.ndarray, calls: int, checks: dict) -> None:
        flat = per_position.ravel()
        positions = flat.size

        def run(name, kept, n, what):
            if kept.size < 2:
                checks[name] = Check(name, None, "statistical", detail=f"fewer than 2 {what}")
                return
            r = homogeneity_test(kept, n)
            pooled = kept.sum() / n.sum()
            worst = int(np.argmax(np.abs(kept / n - pooled)))
            checks[name] = Check(
                name, True, "statistical", r.pvalue, None, int(n.sum()),
                observed=f"chi2 {r.statistic:.4g} on {kept.size - 1} df",
                expected=f"keep rate equal across {kept.size} {what}",
                detail=f"most extreme group {worst}: {kept[worst] / n[worst]:.6g} vs pooled {pooled:.6g}",
                reproduce=self.cfg.reproduce())

        g = min(_GROUPS, positions)
        edges = np.linspace(0, positions, g + 1).astype(np.int64)
        if g >= 2 and positions % g == 0:  # equal blocks: a reshape sums faster than reduceat
            block_k = flat.reshape(g, -1).sum(axis=1, dtype=np.int64)
        else:
            block_k = np.add.reduceat(flat, edges[:-1], dtype=np.int64) if g >= 2 else flat[:1]
        block_n = np.diff(edges) * calls
        run("homogeneity_blocks", block_k, block_n, "contiguous blocks of positions")
        stride = min(_GROUPS, positions)
        whole, rest = divmod(positions, stride)
        strided_k = flat[: whole * stride].reshape(whole, stride).sum(axis=0, dtype=np.int64)
        strided_k[:rest] += flat[whole * stride:]
        strided_n = np.full(stride, whole, dtype=np.int64)
        strided_n[:rest] += 1
        run("homogeneity_strided", strided_k, strided_n * calls, f"positions mod {stride}")
        for axis in self.homogeneity_axes():
            # per index along the axis when short (a batch's rows), else 16 contiguous bins
            length = per_position.shape[axis]
            others = tuple(a for a in range(per_position.ndim) if a != axis)
            along = per_position.sum(axis=others, dtype=np.int64)
            bins = length if length <= 64 else _GROUPS
            edges = np.linspace(0, length, bins + 1).astype(np.int64)
            k = np.add.reduceat(along, edges[:-1])
            n = np.diff(edges) * (positions // length) * calls
            what = f"indices along axis {axis}" if bins == length else f"{bins} bins along axis {axis}"
            run(f"homogeneity_axis{axis}", k, n, what)

    def check_calls(self, per_position: np.ndarray, calls: int, checks: dict) -> None:
        """Masks must not repeat across calls: each position's kept count over the main
        sequence is Binomial(calls, p) and independent of the others', so their histogram is
        P x Binomial(calls, p-hat).  Pearson's chi-square over the histogram, cells pooled to
        >= 1000 expected positions (the approximation holds far into the tail there).  A mask
        that comes back every few calls puts counts on multiples only; stuck positions pile up
        at 0 or at calls."""
        name = "call_independence"
        counts = per_position.ravel()
        positions = counts.size
        hist = np.bincount(counts, minlength=calls + 1)[: calls + 1]
        p_hat = int((hist * np.arange(calls + 1)).sum()) / (positions * calls)  # exact; no BLAS
        if not 0 < p_hat < 1:
            checks[name] = Check(name, None, "statistical", detail="every draw kept, or every draw dropped")
            return
        expected = positions * binom.pmf(np.arange(calls + 1), calls, p_hat)
        observed_cells, expected_cells = [], []
        o = e = 0.0
        for ov, ev in zip(hist, expected):
            o, e = o + ov, e + ev
            if e >= _POOLED_EXPECTED:
                observed_cells.append(o)
                expected_cells.append(e)
                o = e = 0.0
        if (o or e) and expected_cells:  # a short last cell joins the one before it
            observed_cells[-1] += o
            expected_cells[-1] += e
        df = len(expected_cells) - 2  # the total and p-hat are fitted
        if df < 1:
            checks[name] = Check(name, None, "statistical",
                                 detail=f"{positions} positions x {calls} calls: too few for a histogram test")
            return
        ob, ex = np.array(observed_cells), np.array(expected_cells)
        stat = float(np.sum((ob - ex) ** 2 / ex))
        worst = int(np.argmax(np.abs(ob - ex) / np.sqrt(ex)))
        checks[name] = Check(
            name, True, "statistical", float(chi2.sf(stat, df)), None, positions * calls,
            observed=f"chi2 {stat:.4g} on {df} df; largest cell {ob[worst]:.0f} positions vs {ex[worst]:.1f} expected",
            expected=f"kept counts per position ~ Binomial({calls}, {p_hat:.6g})",
            detail=f"histogram of {positions:,} positions' kept counts over {calls} calls, {len(ex)} cells",
            reproduce=self.cfg.reproduce())

    def check_offsets(self, checks: dict) -> None:
        """Positions 2, 4, 8, ... apart in the flattened mask must be independent: a mask drawn
        for part of the tensor and tiled (or broadcast along an axis the noise shape does not
        name) repeats at such an offset, far from the neighbours and rows the pair checks
        compare.  Disjoint pairs per offset over the stored masks; Fisher's exact test on the
        offset whose agreement is most extreme, times the number of offsets (Bonferroni: its p
        is at least the smallest of all)."""
        name = "offset_independence"
        n_units = self.stored_masks[0].size
        offsets = [1 << k for k in range(1, n_units.bit_length()) if 2 << k <= n_units]
        # every stored mask at once, 8 positions a byte (the first in the high bit)
        packed = np.packbits(np.stack([m.ravel() for m in self.stored_masks]), axis=1)
        kept = int(_bitcounts(packed).sum(dtype=np.int64))

        def halves(d):
            """The first and second positions of the disjoint pairs at offset d, packed."""
            if d < 8:  # pairs inside a byte: the first half of each 2d-block against the second
                half = np.uint8(0xCC if d == 2 else 0xF0)
                whole = packed[:, : n_units // 8]
                return whole & half, (whole << np.uint8(d)) & half, 8 * (n_units // 8)
            used = n_units - n_units % (2 * d)
            pairs = packed[:, : used // 8].reshape(len(packed), -1, 2, d // 8)
            return pairs[:, :, 0], pairs[:, :, 1], used

        # pick the offset whose both-kept count is most extreme against the pooled keep rate
        # (any choice keeps Bonferroni valid: its exact p is at least the smallest of all)
        p_bar = kept / (len(packed) * n_units)
        z = []
        for d in offsets:
            a, b, used = halves(d)
            pairs_n = len(packed) * used // 2
            both = int(_bitcounts(a & b).sum(dtype=np.int64))
            z.append((both - pairs_n * p_bar ** 2) / math.sqrt(pairs_n * p_bar ** 2 * (1 - p_bar ** 2) or 1))
        worst = int(np.argmax(np.abs(z)))
        a, b, used = halves(offsets[worst])
        t = [int(_bitcounts(v).sum(dtype=np.int64)) for v in (a & b, a, b)] + [len(packed) * used // 2]
        p, agree = _fisher(t)
        expected = (t[1] * t[2] + (t[3] - t[1]) * (t[3] - t[2])) / t[3] ** 2 if t[3] else float("nan")
        samples = sum(len(packed) * (8 * (n_units // 8) if d < 8 else n_units - n_units % (2 * d)) // 2
                      for d in offsets)
        checks[name] = Check(
            name, True, "statistical", min(1.0, p * len(offsets)), None, samples,
            observed=f"offset {offsets[worst]}: agreement {agree:.6g} (z = {z[worst]:.3g})",
            expected=f"{expected:.6g} (independent) at every offset 2 .. {offsets[-1]}",
            detail=f"disjoint pairs at {len(offsets)} power-of-2 offsets of the flattened mask over "
                   f"{len(self.stored_masks)} calls; Fisher exact on the most extreme, Bonferroni over the offsets",
            reproduce=self.cfg.reproduce())

    def check_values(self, per_position: np.ndarray, calls: int, checks: dict) -> None:
        """The keep rate must not depend on the value dropped: on the sign of x (Fisher's exact
        test, kept against x < 0) or its magnitude (Cochran-Armitage trend across 8 bins of
        |x|).  Blocks and axes average such a dependence away: x's signs and magnitudes are
        spread over every position."""
        groups, sizes = self.value_groups
        kept = np.bincount(groups, weights=per_position.ravel(), minlength=sizes.size).astype(np.int64)  # exact
        n = sizes * calls
        k_all, n_all = int(kept.sum()), int(n.sum())
        k_neg, n_neg = int(kept[1::2].sum()), int(n[1::2].sum())
        parts, pvalues = [], []
        if 0 < n_neg < n_all:
            p_sign, _ = _fisher([k_neg, k_all, n_neg, n_all])
            pvalues.append(p_sign)
            parts.append(f"keep {k_neg / n_neg:.6g} where x < 0, {(k_all - k_neg) / (n_all - n_neg):.6g} where x > 0")
        kb, nb = kept[0::2] + kept[1::2], n[0::2] + n[1::2]
        if np.count_nonzero(nb) >= 2:
            t = trend_test(kb[nb > 0], nb[nb > 0])
            pvalues.append(t.pvalue)
            parts.append(f"trend z = {t.statistic:.3g} across {np.count_nonzero(nb)} bins of |x|")
        if not pvalues:
            checks["value_independence"] = Check("value_independence", None, "statistical",
                                                 detail="x has one sign and one magnitude: nothing to compare")
            return
        checks["value_independence"] = Check(
            "value_independence", True, "statistical", min(1.0, min(pvalues) * len(pvalues)), None, n_all,
            observed="; ".join(parts), expected="keep rate independent of x's sign and magnitude",
            detail="Fisher exact test on kept against the sign of x, Cochran-Armitage trend across bins of |x| "
                   "(Bonferroni inside)", reproduce=self.cfg.reproduce())

    def homogeneity_axes(self) -> list[int]:
        return [a for a, d in enumerate(self.unit_shape) if d > 1] if len(self.unit_shape) > 1 else []

    def check_pairs(self, tables: dict, checks: dict) -> None:
        shape = self.unit_shape
        for name, axis in (("row_independence", 0), ("neighbour_independence", len(shape) - 1)):
            if name not in self.plan():
                continue
            t = tables.get(axis)
            checks[name] = _table_check(name, t, f"pairs along axis {axis} (disjoint pairs (0,1), (2,3), ...)",
                                        self.cfg.reproduce())

    def check_scale_calls(self, acc: "_Accumulated", checks: dict) -> None:
        """The scale check on the first calls: every position of whole calls against TF's two
        formulas in the dtype's own arithmetic, counting the kept positions that differ (and
        the kept values gathered from later calls, at high rates).  Only when neither formula
        matches does the full check run on the gathered values (the correctly rounded formula,
        ULP distances, the failure's detail)."""
        cfg = self.cfg
        xs_more = np.concatenate(acc.scale_x) if acc.scale_x else self.x_np.ravel()[:0]
        ys_more = np.concatenate(acc.scale_y) if acc.scale_y else self.x_np.ravel()[:0]
        n = acc.scale_count  # kept values in the whole calls plus the gathered ones
        if n:
            bits = cfg.dtype == "bfloat16"

            def same(want, y):
                return want == (y.view(np.uint16) if bits else y)

            for f in (expected_scale(cfg.rate, cfg.dtype), expected_scale(cfg.rate, cfg.dtype, rate_is_tensor=True)):
                want = _scaled_native(self.x_np, f)
                if (all(not np.any(kept & ~same(want, y)) for y, kept in acc.scale_calls)
                        and bool(np.all(same(_scaled_native(xs_more, f), ys_more)))):
                    self.scale_passed(f, n, checks)
                    return
        xs = [self.x_np[kept] for _, kept in acc.scale_calls] + [xs_more]
        ys = [y[kept] for y, kept in acc.scale_calls] + [ys_more]
        self.check_scale(np.concatenate(xs), np.concatenate(ys), checks)

    def scale_passed(self, f, n: int, checks: dict) -> None:
        cfg = self.cfg
        self.scale_formula = f
        checks["scale"] = Check(
            "scale", True, samples=n, observed=f"every kept value = {_formula_text(f)}",
            expected="one reference formula, bit for bit",
            detail=f"{n:,} kept values; formula {f.formula!r}")
        self.findings.append(Finding("scale_formula", f"{cfg.dtype}: kept values are {_formula_text(f)} "
                                     f"(formula {f.formula!r})", f.formula))

    def check_scale(self, xs: np.ndarray, ys: np.ndarray, checks: dict) -> None:
        cfg = self.cfg
        self.scale_formula = None
        if xs.size == 0:
            checks["scale"] = Check("scale", None, detail="no kept values to check")
            return
        got = _as_float64(ys)
        formulas = [expected_scale(cfg.rate, cfg.dtype), expected_scale(cfg.rate, cfg.dtype, rate_is_tensor=True),
                    exact_scale(cfg.rate, cfg.dtype)]
        results = []
        for f in formulas:
            sub = slice(None) if (f.formula != "exact" or cfg.dtype != "float64") else slice(0, 20_000)
            want = apply_scale(xs[sub], f)
            mismatch = int(np.count_nonzero(want != got[sub]))
            if mismatch == 0:
                self.scale_passed(f, int(xs.size), checks)
                return
            d = ulp_distance(want.astype(np.float64), got[sub], cfg.dtype)
            results.append((f, mismatch, int(d.max()), got[sub].size))
        best = min(results, key=lambda r: (r[2], r[1]))
        f, mismatch, ulp, n = best
        ratio = got / _as_float64(xs)
        checks["scale"] = Check(
            "scale", False, samples=int(xs.size),
            observed=f"{mismatch:,}/{n:,} differ from the closest formula ({f.formula})",
            expected="x*fl(1/(1-rate)), x/(1-fl(rate)) or round(x/(1-rate))",
            detail=(f"no formula matches every kept value; closest {f.formula!r}: {mismatch:,} of {n:,} "
                    f"differ, largest distance {ulp} ULP; y/x ranges over [{ratio.min():.9g}, {ratio.max():.9g}] "
                    f"where 1/(1-rate) = {1 / (1 - cfg.rate):.9g}"),
            reproduce=cfg.reproduce())

    def check_mean(self, total: float, calls: int, checks: dict) -> None:
        """Bernstein's inequality on sum|y| against its expectation: a valid p-value at any n,
        no normal approximation.  The independent terms are the units (one mask draw each).

        The expectation is keep * |scaled x| with the scale formula the scale check found (the
        implementation's own design); the bias that design has against E[x] is a finding.
        With strict_nominal the expectation is E[x] itself.
        """
        cfg = self.cfg
        # |y| = B * |scale(x)|: absolute values keep the terms' signs out of the way
        ax_sum = _abs_sum(self.x_np)
        ideal_sum = ax_sum / (1 - cfg.rate)
        formula = None if cfg.strict_nominal else self.scale_formula
        if formula is None:
            scaled = np.abs(_as_float64(self.x_np)) / (1 - cfg.rate)
        elif formula.formula != "exact":  # the dtype's own arithmetic; float32 holds it exactly
            native = _scaled_native(self.x_np, formula)
            native = (bfloat16_bits_to_float32(native) if cfg.dtype == "bfloat16"
                      else native.astype(np.float32) if native.dtype.itemsize < 4 else native)
            scaled = np.abs(native, out=native)
        else:
            scaled = np.abs(apply_scale(self.x_np, formula))
        scaled_sum = float(scaled.sum(dtype=np.float64))
        unit_weight = (scaled.sum(axis=self.axes, keepdims=True, dtype=np.float64) if self.axes else scaled).ravel()
        # not np.dot: OpenBLAS's threads spin ~0.1 s after a call, taking a core from fn's kernels
        sum_sq = float(np.square(unit_weight, dtype=np.float64).sum())
        b = float(unit_weight.max())
        p, q = cfg.keep, 1 - cfg.keep
        expected = calls * p * scaled_sum
        var = calls * p * q * sum_sq
        t = abs(total - expected)
        pvalue = min(1.0, 2 * math.exp(-t * t / (2 * (var + b * t / 3)))) if t > 0 else 1.0
        ratio = total / (calls * ax_sum)
        design_ratio = p * scaled_sum / ax_sum
        checks["unbiasedness"] = Check(
            "unbiasedness", True, "statistical", pvalue, None, calls * self.x_np.size,
            observed=f"sum|y|/sum|x| = {ratio:.6g}",
            expected=f"{design_ratio:.6g} (keep x {'1/(1-rate)' if formula is None else formula.formula + ' scale'})",
            detail="Bernstein bound on sum|y| - E[sum|y|] over independent units (valid at any n, "
                   "no normal approximation)", reproduce=cfg.reproduce())
        bias = design_ratio - 1
        if bias != 0 and not cfg.strict_nominal:
            parts_text = []
            if p != 1 - cfg.rate:
                parts_text.append(f"keep {p:.10g} instead of {1 - cfg.rate:.10g}")
            scale_ratio = scaled_sum / ideal_sum
            if scale_ratio != 1:
                parts_text.append(f"kept values {scale_ratio:.8g} x the ideal x/(1-rate)")
            self.findings.append(Finding(
                "mean_bias", f"{cfg.dtype} at rate {cfg.rate}: E[y]/E[x] = {design_ratio:.8g}, biased by "
                f"{bias:+.3g} relative ({'; '.join(parts_text)})", bias))

    def consistency_check(self, inconsistent: int, units: int, noise_shape) -> Check:
        return Check("noise_shape_consistency", inconsistent == 0, samples=units,
                     observed=f"{inconsistent} of {units:,} units with mixed fate",
                     expected="every element of a broadcast unit kept or dropped together",
                     detail="" if inconsistent == 0 else
                     f"noise_shape {list(noise_shape)} ignored or misapplied: {inconsistent} units have kept "
                     "and dropped elements",
                     reproduce=self.cfg.reproduce(f"noise_shape={list(noise_shape)}"))

    def check_stateful(self, fresh_table, per_call_kept, checks) -> None:
        cfg = self.cfg
        checks["stateful_fresh"] = _table_check("stateful_fresh", fresh_table,
                                                "masks of successive calls", cfg.reproduce())
        k = np.asarray(per_call_kept, dtype=np.int64)
        units = int(np.prod(self.unit_shape))
        groups = min(64, k.size)
        edges = np.linspace(0, k.size, groups + 1).astype(np.int64)
        gk = np.add.reduceat(k, edges[:-1])
        gn = np.diff(edges) * units
        r = trend_test(gk, gn)
        checks["stateful_drift"] = Check(
            "stateful_drift", True, "statistical", r.pvalue, None, int(gn.sum()),
            observed=f"trend z = {r.statistic:.3g} over {k.size} calls in {groups} groups",
            expected="keep rate stable across calls", detail="Cochran-Armitage trend test",
            reproduce=cfg.reproduce())

    # -- checks that need extra calls ---------------------------------------------------------
    def after_loop(self, checks: dict) -> None:
        cfg = self.cfg
        if not cfg.stateful:
            self.check_mechanism(checks)
            self.check_seeds(checks)
            self.check_threshold(checks)
        else:
            checks["mechanism"] = Check("mechanism", None, detail="stateful contract: no seed to reproduce "
                                        "the uniform; the threshold structure shows in the rate and scale checks")
        if cfg.noise_shape is None and cfg.probe is not None:
            self.noise_probe(checks)
        elif cfg.noise_shape is not None:
            units_n = self.main_calls * int(np.prod(cfg.noise_shape))
            checks["noise_shape_units"] = Check(
                "noise_shape_units", True, "statistical", 1.0, None, units_n,
                detail="units counted by the keep_fraction check (one draw per broadcast unit)")

    def check_mechanism(self, checks: dict) -> None:
        cfg = self.cfg
        if cfg.reference is None:
            checks["mechanism"] = Check("mechanism", None, detail="reference=None: the implementation has its "
                                        "own RNG; threshold_nesting and threshold_flips carry the proof")
            return
        xla = cfg.reference == "tensorflow-xla"
        mismatches, total = 0, 0
        other = 0
        n_check = min(2, len(self.stored_masks))
        for i in range(n_check):
            want = self.ref.reference_keep(self.unit_shape, self.seed_pair(i), cfg.dtype, cfg.rate, xla=xla)
            got = self.stored_masks[i]
            mismatches += int(np.count_nonzero(want != got))
            total += want.size
            if mismatches:
                alt = self.ref.reference_keep(self.unit_shape, self.seed_pair(i), cfg.dtype, cfg.rate, xla=not xla)
                other += int(np.count_nonzero(alt != got))
        cfg.samples += total
        detail = ""
        if mismatches:
            which = "XLA's (jit_compile)" if not xla else "eager"
            detail = (f"{mismatches:,} of {total:,} positions differ from "
                      f"stateless_uniform({list(self.unit_shape)}, seed, {cfg.dtype}) >= rate")
            if other == 0:
                detail += (f"; the mask equals {which} stream instead: under XLA TensorFlow draws a different "
                           "uniform than eagerly (float32, bfloat16, float64) unless rng_alg='philox'; "
                           f"use reference={'tensorflow-xla' if not xla else 'tensorflow'!r}")
                self.later(self.findings.append, Finding("xla_stream", detail, "xla" if not xla else "eager"))
        checks["mechanism"] = Check(
            "mechanism", mismatches == 0, samples=total, observed=f"{mismatches} mismatches",
            expected=f"kept == ({'XLA ' if xla else ''}stateless_uniform >= fl(rate)), bit for bit",
            detail=detail, reproduce=cfg.reproduce(f"seed pairs {[self.seed_pair(i) for i in range(n_check)]}"))

    def check_seeds(self, checks: dict) -> None:
        cfg = self.cfg
        y0 = self.call(self.x, cfg.rate, self.seed_pair(0), cfg.noise_shape)
        y0b = self.call(self.x, cfg.rate, self.seed_pair(0), cfg.noise_shape)
        same = np.array_equal(y0.view(self.fmt.uint), y0b.view(self.fmt.uint))
        checks["seed_determinism"] = Check(
            "seed_determinism", same, samples=2 * y0.size,
            observed="identical" if same else "different outputs",
            expected="the same seed gives the same output",
            detail="" if same else f"two calls with seed {list(self.seed_pair(0))} differ",
            reproduce=cfg.reproduce(f"fn(x, {cfg.rate}, seed={list(self.seed_pair(0))}) twice"))
        # (s, i) vs (s, i + 1); (s, i) vs (s + 1, i); (s + 1, i) vs (s, i + 1): catches a seed
        # component ignored, or the two components mixed into one number
        ns = cfg.noise_shape
        others = [self.mask(self.call(self.x, cfg.rate, self.seed_pair(i, offset=1), ns), noise_shape=ns)[0]
                  for i in range(len(self.stored_masks) - 1)]
        self.later(self.seed_independence, others, checks)

    def seed_independence(self, others: list, checks: dict) -> None:
        cfg = self.cfg
        stored = self.stored_masks
        table = np.zeros(4, dtype=np.int64)
        for i in range(len(stored) - 1):
            _accumulate_table(table, stored[i], stored[i + 1])
        other_table = np.zeros(4, dtype=np.int64)
        mixed_table = np.zeros(4, dtype=np.int64)
        for i, m in enumerate(others):
            _accumulate_table(other_table, stored[i], m)
            _accumulate_table(mixed_table, stored[i + 1], m)
        results = [_fisher(t) for t in (table, other_table, mixed_table)]
        labels = ["seed[1] + 1", "seed[0] + 1", "(seed[0] + 1, i) against (seed[0], i + 1)"]
        worst = int(np.argmin([r[0] for r in results]))
        p = min(1.0, min(r[0] for r in results) * 3)  # Bonferroni over the three comparisons
        checks["seed_independence"] = Check(
            "seed_independence", True, "statistical", p, None, int(sum(t[3] for t in (table, other_table, mixed_table))),
            observed=f"agreement {results[worst][1]:.6g} ({labels[worst]})",
            expected=f"{cfg.keep ** 2 + (1 - cfg.keep) ** 2:.6g} = p^2 + q^2 (independent masks)",
            detail=f"Fisher exact on the 2x2 tables of masks from neighbouring seeds; smallest p at {labels[worst]}",
            reproduce=cfg.reproduce())

    def check_threshold(self, checks: dict) -> None:
        cfg = self.cfg
        rates = sorted({cfg.rate, cfg.rate / 2, cfg.rate + (1 - cfg.rate) / 2})
        xla = cfg.reference == "tensorflow-xla"
        rates = [r for r in rates if 0 < expected_keep_fraction(r, cfg.dtype, xla=xla) < 1]
        if cfg.rate not in rates or len(rates) < 2:
            checks["threshold_nesting"] = Check("threshold_nesting", None, detail="no rate sweep possible here")
            checks["threshold_flips"] = Check("threshold_flips", None, "statistical", detail="no rate sweep")
            return
        ns = cfg.noise_shape
        n_calls = len(self.stored_masks)
        masks = {r: [] for r in rates}
        for i in range(n_calls):
            for r in rates:
                if r == cfg.rate:
                    masks[r].append(self.stored_masks[i])
                else:
                    masks[r].append(self.mask(self.call(self.x, r, self.seed_pair(i), ns), noise_shape=ns)[0])
        self.later(self.threshold_verdicts, rates, masks, checks)

    def threshold_verdicts(self, rates: list, masks: dict, checks: dict) -> None:
        cfg = self.cfg
        xla = cfg.reference == "tensorflow-xla"
        violations = 0
        flips_p = []
        details = []
        total = 0
        for lo, hi in zip(rates, rates[1:]):
            flips, size = 0, 0
            for a, b in zip(masks[lo], masks[hi]):
                kept_lo, kept_hi, both = (int(np.count_nonzero(v)) for v in (a, b, a & b))
                violations += kept_hi - both  # kept at the higher rate, dropped at the lower
                flips += kept_lo - both
                size += a.size
            share = float(expected_keep_fraction(lo, cfg.dtype, xla=xla) - expected_keep_fraction(hi, cfg.dtype, xla=xla))
            r = rate_test(flips, size, share)
            flips_p.append(r.pvalue)
            total += size
            details.append(f"{lo:.4g}->{hi:.4g}: {flips}/{size} flipped, expected share {share:.6g}")
        checks["threshold_nesting"] = Check(
            "threshold_nesting", violations == 0, samples=total,
            observed=f"{violations} positions kept at a higher rate but dropped at a lower one",
            expected="kept(higher rate) is a subset of kept(lower rate) for one seed",
            detail="" if violations == 0 else "the mask is not a threshold of one uniform draw per position",
            reproduce=cfg.reproduce(f"rates {rates}"))
        p = min(1.0, min(flips_p) * len(flips_p))
        checks["threshold_flips"] = Check(
            "threshold_flips", True, "statistical", p, None, total,
            observed=f"{len(details)} rate pairs", expected="flip share = keep(lower) - keep(higher)",
            detail="exact binomial test per rate pair (Bonferroni inside): " + "; ".join(details),
            reproduce=cfg.reproduce())

    def noise_probe(self, checks: dict) -> None:
        cfg = self.cfg
        shape, noise = cfg.probe
        # the probe's x holds as many values as the main one (a reshape costs nothing)
        x = (self.tf.reshape(self.x, shape) if math.prod(shape) == self.x_np.size
             else self.make_input(shape, cfg.seed + 1))
        units = int(np.prod(noise))
        calls = max(1, math.ceil(min_num_samples_for_rate_test(
            cfg.keep, min(4 * cfg.delta, 0.5 * max(cfg.keep, 1 - cfg.keep)), false_fail_rate=cfg.alpha,
            false_pass_rate=cfg.beta) / units))
        # the rate itself is keep_fraction's job; this checks units are draws: 2**18 units suffice
        calls = min(calls, max(1, (1 << 18) // units), cfg.max_calls)
        tally = {"inconsistent": 0, "kept": 0, "n": 0, "mismatches": 0}
        for i in range(calls):
            y = self.call(x, cfg.rate, self.seed_pair(i, offset=2), noise)
            want = None
            if i == 0 and not cfg.stateful and cfg.reference is not None:
                want = self.ref.reference_keep(noise, self.seed_pair(i, offset=2), cfg.dtype, cfg.rate,
                                               xla=cfg.reference == "tensorflow-xla")
            self.later(self.probe_tally, tally, y, noise, want, held=y.nbytes)
        self.later(self.probe_verdicts, tally, shape, noise, calls, checks)

    def probe_tally(self, tally: dict, y: np.ndarray, noise, want) -> None:
        m, bad = self.mask(y, noise_shape=noise)
        tally["inconsistent"] += bad
        tally["kept"] += int(np.count_nonzero(m))
        tally["n"] += m.size
        if want is not None:
            tally["mismatches"] = int(np.count_nonzero(want != m))

    def probe_verdicts(self, tally: dict, shape, noise, calls: int, checks: dict) -> None:
        cfg = self.cfg
        kept, n, mismatches = tally["kept"], tally["n"], tally["mismatches"]
        check = self.consistency_check(tally["inconsistent"], n, noise)
        if mismatches:
            check.passed = False
            check.detail = (check.detail + "; " if check.detail else "") + (
                f"{mismatches} of {int(np.prod(noise))} units differ from stateless_uniform(noise_shape) >= rate")
        checks["noise_shape_consistency"] = check
        r = rate_test(kept, n, cfg.keep)
        checks["noise_shape_units"] = Check(
            "noise_shape_units", True, "statistical", r.pvalue, None, n,
            observed=f"{kept}/{n} units kept = {kept / n:.6g}", expected=f"{cfg.keep:.10g}",
            detail=f"x {list(shape)}, noise_shape {list(noise)}: one draw per unit, {calls} calls",
            reproduce=cfg.reproduce(f"x of shape {list(shape)}, noise_shape={list(noise)}"))


# --------------------------------------------------------------------------------------------
class _Accumulated:
    """What the main sequence of calls accumulates for the checks after it."""

    def __init__(self, unit_shape, max_calls: int):
        # kept count per position: at most max_calls, so uint16 mostly (its add takes 0.4x of int32's)
        self.per_position = np.zeros(unit_shape, dtype=np.uint16 if max_calls < 2**16 else np.int64)
        self.pair_tables = {}
        self.fresh_table = np.zeros(4, dtype=np.int64)
        self.scale_calls = []  # (y, kept) of the first whole calls
        self.scale_whole = 0   # their elements
        self.scale_x, self.scale_y = [], []  # kept values of later calls
        self.scale_count = 0   # kept values so far (the check stops at _SCALE_VALUES)
        self.mean_total = 0.0  # sum |y| over the first calls, in float64
        self.mean_calls = 0


def _as_float64(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float64)


def _abs_sum(y: np.ndarray) -> float:
    """sum |y| accumulated in float64 (half-precision values widen to float32 exactly first)."""
    if y.dtype.name == "bfloat16":  # ml_dtypes converts slowly: widen the bits
        y = bfloat16_bits_to_float32(y.view(np.uint16))
    elif y.dtype.itemsize < 4:
        y = y.astype(np.float32)
    return float(np.abs(y).sum(dtype=np.float64))


def _formula_text(f) -> str:
    return {"multiply": f"x * {f.factor!r} (fl(1/(1-rate)))", "divide": f"x / {f.factor!r} (1 - fl(rate))",
            "exact": "x / (1 - rate) correctly rounded"}[f.formula]


def _value_groups(x: np.ndarray, fmt) -> tuple[np.ndarray, np.ndarray]:
    """Each position's group by x: 2 * (bin of |x|, 0 .. _VALUE_BINS - 1) + (x < 0), and the
    groups' sizes.  Bins split the range of |x|'s bit patterns (monotone in |x|) equally."""
    bits = x.view(fmt.uint).ravel()
    uint = fmt.uint
    magnitude = bits & uint(fmt.abs_mask)
    lo, hi = int(magnitude.min()), int(magnitude.max())
    magnitude -= uint(lo)
    drop = max(0, (hi - lo).bit_length() - 24)  # float32 holds 24 bits exactly: one cheap pass
    if drop:
        magnitude >>= uint(drop)
    scaled = magnitude.astype(np.float32)
    scaled *= np.float32(_VALUE_BINS / (((hi - lo) >> drop) + 1))
    groups = scaled.astype(np.intp)
    np.minimum(groups, _VALUE_BINS - 1, out=groups)
    groups <<= 1
    np.add(groups, bits >> uint(8 * bits.dtype.itemsize - 1), out=groups, casting="unsafe")  # the sign
    return groups, np.bincount(groups, minlength=2 * _VALUE_BINS).astype(np.int64)


_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _bitcounts(a: np.ndarray) -> np.ndarray:
    """Set bits of each byte of a uint8 array (numpy >= 2 counts them natively)."""
    return np.bitwise_count(a) if hasattr(np, "bitwise_count") else _BYTE_POPCOUNT[a]


def _accumulate_table(table: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """table = [both kept, a kept, b kept, n]"""
    table[0] += np.count_nonzero(a & b)
    table[1] += np.count_nonzero(a)
    table[2] += np.count_nonzero(b)
    table[3] += a.size


def _accumulate_pairs(tables: dict, m: np.ndarray, kept: int) -> None:
    """2 x 2 tables of disjoint pairs (0, 1), (2, 3), ... along the first and the last axis
    (``kept``: m's kept count, which the main loop has already made)."""
    m = np.ascontiguousarray(m)
    for axis in sorted({0, m.ndim - 1}):
        length = m.shape[axis] - m.shape[axis] % 2
        if length < 2:
            continue
        table = tables.setdefault(axis, np.zeros(4, dtype=np.int64))
        if axis == m.ndim - 1 and length == m.shape[-1]:
            # neighbours along the contiguous last axis: read each pair as one uint16
            # (little-endian: bit 0 is the first of the pair, bit 8 the second)
            v = m.view(np.uint16)
            table[0] += np.count_nonzero(v == 0x0101)
            first = np.count_nonzero(v & np.uint16(0x0001))
            table[1] += first
            table[2] += kept - first
            table[3] += v.size
            continue
        view = np.moveaxis(m, axis, 0)[:length]
        pairs = view.reshape((length // 2, 2) + view.shape[1:])  # contiguous halves when axis == 0
        _accumulate_table(table, pairs[:, 0], pairs[:, 1])


def _fisher(table) -> tuple[float, float]:
    """(p-value, agreement rate) of a 2 x 2 table given as [both, a, b, n]."""
    both, na, nb, n = (int(v) for v in table)
    agree = (n - na - nb + 2 * both) / n if n else float("nan")
    if n == 0 or min(na, nb) == 0 or max(na, nb) == n:
        return 1.0, agree
    return fisher_two_sided_pvalue([[both, na - both], [nb - both, n - na - nb + both]]), agree


def _table_check(name: str, table, what: str, reproduce: str) -> Check:
    if table is None or table[3] == 0:
        return Check(name, None, "statistical", detail=f"no {what} to compare")
    p, agree = _fisher(table)
    both, na, nb, n = (int(v) for v in table)
    p_a = na / n
    cond = both / na if na else float("nan")
    return Check(name, True, "statistical", p, None, n,
                 observed=f"P(kept | partner kept) = {cond:.6g}, agreement {agree:.6g}",
                 expected=f"P(kept) = {nb / n:.6g} (independent)",
                 detail=f"Fisher exact test on {n:,} {what}; keep rate of the first {p_a:.6g}",
                 reproduce=reproduce)


# -- AlphaDropout ---------------------------------------------------------------------------
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def verify_alpha_dropout(fn, *, rate, dtype="float32", shape=None, noise_shape=None, seed=0,
                         keep_dtype="float32", false_fail_rate=1e-6, false_pass_rate=1e-3,
                         discrepancy=None, max_calls=20_000) -> Report:
    """verify() for alpha dropout (stateful contract): the same mask mechanism, but dropped
    positions hold a * alpha' + b and kept ones a * x + b, with alpha' = -SELU_ALPHA * SELU_SCALE,
    a = ((1 - rate)(1 + rate alpha'^2))^(-1/2), b = -a alpha' rate (Klambauer et al. 2017).

    ``keep_dtype``: the dtype of the uniform compared with the rate; Keras 3's AlphaDropout
    draws it in float32 whatever the input dtype.
    """
    return _verify(fn, _AlphaBattery, keep_dtype, rate=rate, dtype=dtype, shape=shape,
                   noise_shape=noise_shape, seed=seed, stateful=True, reference=None,
                   false_fail_rate=false_fail_rate, false_pass_rate=false_pass_rate,
                   discrepancy=discrepancy, strict_nominal=False, max_calls=max_calls)


def _in_dtype(values, dtype: str) -> np.ndarray:
    from ._floats import round_to

    return round_to(values, dtype)


class _AlphaBattery(_Battery):
    def __init__(self, cfg, findings):
        r = cfg.rate
        ap = -SELU_ALPHA * SELU_SCALE
        self.a = ((1 - r) * (1 + r * ap ** 2)) ** -0.5
        self.b = -self.a * ap * r
        d = cfg.dtype
        self.cfg = cfg
        self.a_d, self.b_d, self.ap_d = (float(_in_dtype(v, d)) for v in (self.a, self.b, ap))
        self.dropped_value = self.affine(np.array([self.ap_d]))[0]
        super().__init__(cfg, findings)

    def affine(self, xv: np.ndarray) -> np.ndarray:
        """fl(fl(a * x) + b) in the dtype, as Keras computes ``a * x + b``."""
        d = self.cfg.dtype
        if d == "float64":
            return (xv * self.a_d) + self.b_d
        return _in_dtype(_in_dtype(xv * self.a_d, d) + self.b_d, d)

    def make_input(self, shape, seed):
        # positive inputs: a * x + b then never equals the dropped value a * alpha' + b
        return self.tf.abs(self.ref.make_input(shape, self.cfg.dtype, seed))

    def kept_elements(self, y_np) -> np.ndarray:
        return _as_float64(y_np) != self.dropped_value

    def fused(self, xv: np.ndarray) -> np.ndarray:
        """fl(a * x + b) with one rounding (XLA fuses the multiply-add)."""
        d = self.cfg.dtype
        if d == "float64":
            from fractions import Fraction as F

            a, b = F(self.a_d), F(self.b_d)
            return np.array([float(a * F(float(v)) + b) for v in xv], dtype=np.float64)
        # a*x has <= 48 significant bits and b's last bit lies within them: exact in float64
        return _in_dtype(xv * self.a_d + self.b_d, d)

    def check_scale_calls(self, acc, checks) -> None:
        xs = [self.x_np[kept] for _, kept in acc.scale_calls] + acc.scale_x
        ys = [y[kept] for y, kept in acc.scale_calls] + acc.scale_y
        self.check_scale(np.concatenate(xs), np.concatenate(ys), checks)

    def check_scale(self, xs, ys, checks) -> None:
        cfg = self.cfg
        self.scale_formula = None
        got = _as_float64(ys)
        xv = _as_float64(xs)
        if cfg.dtype == "float64":
            got, xv = got[:20_000], xv[:20_000]
        results = []
        for label, want in (("two roundings", self.affine(xv)), ("fused", self.fused(xv))):
            mismatch = int(np.count_nonzero(want != got))
            if mismatch == 0:
                checks["scale"] = Check(
                    "scale", True, samples=int(xv.size), observed=f"every kept value = a*x + b ({label})",
                    expected=f"kept: a*x + b with a = {self.a_d!r}, b = {self.b_d!r}; dropped: {self.dropped_value!r}",
                    detail=f"{xv.size:,} kept values")
                self.findings.append(Finding("affine_formula", f"{cfg.dtype}: kept values are a*x + b with "
                                             + ("one rounding (a fused multiply-add)" if label == "fused"
                                                else "two roundings (multiply, then add)"), label))
                return
            results.append((label, mismatch, int(ulp_distance(want, got, cfg.dtype).max())))
        label, mismatch, ulp = min(results, key=lambda r: (r[2], r[1]))
        checks["scale"] = Check(
            "scale", False, samples=int(xv.size),
            observed=f"{mismatch:,} of {xv.size:,} kept values differ from a*x + b ({label})",
            expected=f"kept: a*x + b with a = {self.a_d!r}, b = {self.b_d!r}",
            detail=f"neither two roundings nor a fused multiply-add matches; closest ({label}) is off by "
                   f"up to {ulp} ULP", reproduce=cfg.reproduce())

    def check_mean(self, total, calls, checks) -> None:
        checks["unbiasedness"] = Check(
            "unbiasedness", None, "statistical",
            detail="alpha dropout keeps the mean and variance of SELU-normalised inputs, not E[y] = E[x]")


# -- GaussianDropout ------------------------------------------------------------------------
def verify_gaussian_dropout(fn, *, rate, dtype="float32", shape=None, seed=0, false_fail_rate=1e-6,
                            false_pass_rate=1e-3, discrepancy=None, max_calls=2_000) -> Report:
    """Gaussian dropout (stateful contract ``fn(x, rate, noise_shape=None)``): y = x * n with
    n ~ Normal(1, rate / (1 - rate)) independent per element and per call.

    Checks on n = y / x, each exact under normality: mean 1 (t-test), variance rate/(1 - rate)
    (chi-square), normal shape (Kolmogorov-Smirnov; not in bfloat16, whose 8-bit noise is
    visibly discrete at these n), neighbour, row and successive-call correlation 0 (Pearson's r
    over disjoint pairs), equal means across positions (one-way ANOVA).
    ``discrepancy`` (default 1% of the noise's standard deviation) is the mean error detected
    with probability >= 1 - false_pass_rate; the variance check detects 2x that, relative.
    """
    from scipy import special, stats

    if not callable(fn):
        raise TypeError(f"fn ({fn!r}) must be callable")
    rate = check_rate(rate)
    if rate == 0:
        raise ValueError("rate (0.0) must be > 0 for Gaussian dropout (the noise variance is rate/(1-rate))")
    dtype = dtype_name(dtype)
    seed = check_count(seed, "seed")
    alpha = check_open_unit(false_fail_rate, "false_fail_rate")
    beta = check_open_unit(false_pass_rate, "false_pass_rate")
    max_calls = check_count(max_calls, "max_calls", minimum=2)
    shape = DEFAULT_SHAPE if shape is None else _validate_shape(shape, "shape")
    var = rate / (1 - rate)
    sd = math.sqrt(var)
    delta = 0.01 * sd if discrepancy is None else check_positive(discrepancy, "discrepancy")
    names = ["gaussian_mean", "gaussian_variance", "gaussian_shape", "neighbour_independence",
             "row_independence", "stateful_fresh", "homogeneity_blocks"]
    a_each = alpha / len(names)
    z = special.ndtri(1 - a_each / 2) + special.ndtri(1 - beta)
    n_mean = math.ceil((z * sd / delta) ** 2)
    n_var = math.ceil(2 * (z / (2 * delta / sd)) ** 2)
    need = max(n_mean, n_var)

    import tensorflow as tf

    from . import reference as ref

    config = {"fn": _name_of(fn), "rate": rate, "dtype": dtype, "shape": list(shape), "seed": seed,
              "kind": "gaussian", "false_fail_rate": alpha, "false_pass_rate": beta, "discrepancy": delta}
    x = tf.abs(ref.make_input(shape, dtype, seed))
    xv = _as_float64(x.numpy())
    per = int(np.prod(shape))
    calls = min(max_calls, max(2, math.ceil(need / per)))
    noises = []
    samples = 0
    try:
        for _ in range(calls):
            try:
                y = fn(x, rate, noise_shape=None)
                yv = y.numpy() if hasattr(y, "numpy") else np.asarray(y)
            except Exception as exc:
                raise ContractError(f"fn(x, {rate!r}) raised {type(exc).__name__}: {exc}") from None
            if tuple(yv.shape) != tuple(shape) or yv.dtype.name != dtype:
                raise ContractError(f"fn returned shape {list(yv.shape)} dtype {yv.dtype.name}, "
                                    f"expected {list(shape)} {dtype}")
            noises.append(_as_float64(yv) / xv)
            samples += per
    except ContractError as exc:
        return Report(False, [Check("contract", False, detail=str(exc))], [], samples, seed, config)
    noise = np.stack(noises)
    flat = noise.ravel()
    n = flat.size
    checks = []
    t = stats.ttest_1samp(flat, 1.0)
    checks.append(Check("gaussian_mean", True, "statistical", float(t.pvalue), None, n,
                        observed=f"{flat.mean():.6g}", expected="1",
                        detail=f"t-test; detects a mean off by {delta:.3g} with false-pass <= {beta:g} "
                               f"(sized for {n_mean:,} draws)"))
    s2 = float(flat.var(ddof=1))
    chi = (n - 1) * s2 / var
    p_var = float(2 * min(stats.chi2.cdf(chi, n - 1), stats.chi2.sf(chi, n - 1)))
    checks.append(Check("gaussian_variance", True, "statistical", min(1.0, p_var), None, n,
                        observed=f"{s2:.6g}", expected=f"{var:.6g} = rate/(1-rate)",
                        detail="chi-square test of the variance (exact under normality)"))
    if dtype == "bfloat16":
        checks.append(Check("gaussian_shape", None, "statistical",
                            detail="bfloat16 noise has 8 significant bits: discrete at this n, not tested"))
    else:
        ks = stats.kstest(flat[: 1_000_000], "norm", args=(1.0, sd))
        checks.append(Check("gaussian_shape", True, "statistical", float(ks.pvalue), None, min(n, 1_000_000),
                            observed=f"KS D = {ks.statistic:.4g}", expected=f"Normal(1, {var:.4g})",
                            detail="Kolmogorov-Smirnov against the stated normal"))

    def corr_check(name, a, b, what):
        a, b = a.ravel(), b.ravel()
        r, p = stats.pearsonr(a, b)
        return Check(name, True, "statistical", float(p), None, a.size, observed=f"r = {r:.4g}",
                     expected="0 (independent)", detail=f"Pearson correlation over {a.size:,} {what}")

    length = shape[-1] - shape[-1] % 2
    if length >= 2:
        checks.append(corr_check("neighbour_independence", noise[..., 0:length:2], noise[..., 1:length:2],
                                 "disjoint neighbour pairs"))
    else:
        checks.append(Check("neighbour_independence", None, "statistical", detail="last axis too short"))
    rows = shape[0] - shape[0] % 2
    if len(shape) > 1 and rows >= 2:
        checks.append(corr_check("row_independence", noise[:, 0:rows:2], noise[:, 1:rows:2],
                                 "disjoint pairs of rows of the batch"))
    else:
        checks.append(Check("row_independence", None, "statistical", detail="no batch of rows"))
    checks.append(corr_check("stateful_fresh", noise[:-1], noise[1:], "positions of successive calls"))
    per_pos = noise.reshape(noise.shape[0], -1)
    g = min(_GROUPS, per_pos.shape[1])
    if g >= 2:
        groups = np.array_split(np.arange(per_pos.shape[1]), g)
        f = stats.f_oneway(*[per_pos[:, idx].ravel() for idx in groups])
        checks.append(Check("homogeneity_blocks", True, "statistical", float(f.pvalue), None, n,
                            observed=f"F = {f.statistic:.4g}", expected=f"equal means across {g} blocks",
                            detail="one-way ANOVA"))
    pchecks = [c for c in checks if c.pvalue is not None]
    holm = holm_bonferroni([c.pvalue for c in pchecks], alpha)
    for c, rejected, level in zip(pchecks, holm.rejected, holm.thresholds):
        c.level, c.passed = level, not rejected
    passed = all(c.passed is not False for c in checks)
    return Report(passed, checks, [], samples, seed, config)
