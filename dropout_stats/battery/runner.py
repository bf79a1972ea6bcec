"""The runner: plan the checks, split the false-fail budget, drive the calls, run the statistics
on one worker thread, assemble the Report.

Budget: the sequential keep-fraction test gets alpha / m up front (m = the statistical entries
the families plan), the other m - 1 share the rest by Holm's step-down, so a correct
implementation fails a run with probability at most ``false_fail_rate``.

Threads: ``fn`` is only ever called from the caller's thread.  Every call becomes a ``Call``
that the families observe on one worker thread, in submission order, so a seed gives the same
report as a serial run; meanwhile the framework's kernels keep the cores busy.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .._floats import FORMATS
from ..report import Check
from ..structure import holm_bonferroni

MAX_PENDING = 8  # jobs queued for the worker thread at most
MAX_HELD = 64 << 20  # bytes of fn outputs those jobs may hold (one call's at least)
SEED_POSITIONS = 1 << 18  # positions of stored masks (the seed, correlation, mechanism checks)
MAX_STORED = 64  # masks stored at most
SMALL_ELEMENTS = 1 << 16  # elements of the small calls (rate sweep, determinism)
# the bit of each seed component the far-seed calls flip: the highest one every backend's seed
# form carries (TensorFlow's int32 pair: bit 30 keeps it non-negative); torch's generator seed
# packs the pair into 32 bits, s0 * 2^24 + s1 (backends/torch.py): its bit 31 is bit 7 of s0
FAR_BITS = {"torch": (7, 23)}
FAR_BITS_DEFAULT = (30, 30)


class ContractError(Exception):
    """fn broke the calling contract (raised, or returned the wrong shape or dtype)."""


class CallTimeout(Exception):
    """fn did not return within the run's call_timeout."""


@contextlib.contextmanager
def deadline(seconds):
    """Raise CallTimeout in this thread after ``seconds`` (None: no limit).  A SIGALRM timer, so
    only in the main thread and only where fn returns to Python: elsewhere it does nothing, which
    the call_timeout docs say."""
    if not seconds or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def alarm(signum, frame):
        raise CallTimeout

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Call:
    """One call of fn as the checks see it.  ``purpose``: "main" (the sequence at the configured
    rate and fresh seeds), "seed_repeat", "seed_other", "seed_far", "threshold", "probe" or
    "backward"."""

    purpose: str
    index: int
    rate: float
    seed: tuple | None
    x_np: np.ndarray
    noise_shape: tuple | None
    y: np.ndarray
    mask: np.ndarray  # kept, per unit (one draw each)
    inconsistent: int  # units whose elements were not all kept or all dropped
    kept: int  # kept units
    kept_elements: int  # kept elements (= kept without a noise shape)
    fresh: bool  # a draw at the configured rate from a seed no other call used
    cotangent: np.ndarray | None = None  # dL/dy of a call made with its gradient
    grad: np.ndarray | None = None  # dL/dx of that same call (None: no gradient flows)
    grad_error: str = ""  # why the gradient could not be computed


class Run:
    """One verify() run over a backend, a kind of dropout (plain or alpha) and its families."""

    def __init__(self, cfg, backend, kind, findings: list, x_np=None, first_output=None):
        self.cfg, self.backend, self.kind, self.findings = cfg, backend, kind, findings
        self.fmt = FORMATS[cfg.dtype]
        self.x_np = kind.make_input(cfg.shape, cfg.dtype, cfg.seed) if x_np is None else x_np
        self.x = backend.native(self.x_np)
        # numpy and torch inputs share x_np's memory, so fn could write to it: its bits, kept apart
        self.x_pristine = self.x_np.view(self.fmt.uint).copy()
        self.unit_shape = tuple(cfg.noise_shape or cfg.shape)
        self.units = int(np.prod(self.unit_shape))
        self.axes = tuple(
            i for i, (d, s) in enumerate(zip(self.unit_shape, cfg.shape, strict=True)) if d == 1 and s != 1
        )
        self.first_output = first_output  # fn's first output, when it told us the backend
        self.keep_model = None  # set by keep_fraction when several correct keeps were tested
        self.evidence = {"kept": 0, "n": 0}  # fresh draws at the configured rate, counted as they come
        self.stored_masks: list = []  # the first main masks (seed, threshold, mechanism checks)
        self.store_limit = min(MAX_STORED, max(2, math.ceil(SEED_POSITIONS / self.units)))
        self.main_calls = 0
        self.alpha_seq = None
        self.families = [f for f in (F(self) for F in kind.families) if f.applies()]
        self.per_position = None
        if any("per_position" in f.needs for f in self.families):
            # kept count per position: at most max_calls, so uint16 mostly (its add takes 0.4x of int32's)
            self.per_position = np.zeros(self.unit_shape, dtype=np.uint16 if cfg.max_calls < 2**16 else np.int64)

    def keep_of(self, rate: float):
        """A correct implementation's keep probability at ``rate`` (the backend's model), exact."""
        cfg = self.cfg
        if self.keep_model is not None:  # the model the keep-fraction check found the draws fit
            return self.keep_model(rate)
        return self.backend.keep_fraction(rate, cfg.keep_dtype or cfg.dtype, cfg.reference)

    def family(self, name: str):
        return next(f for f in self.families if f.name == name)

    # -- calling fn -------------------------------------------------------------------------
    def seed_pair(self, i: int, offset: int = 0):
        return (self.cfg.seed + offset, i)

    def far_seed_pair(self, component: int, offset: int = 0, low: bool = False) -> tuple[tuple, int, str]:
        """(seed_pair(0, offset) with a high bit of seed[component] flipped, that bit, where it
        lands in the framework's seed): far from every other seed of the run, valid in every
        backend's seed form.  ``low``: bit 0 of that component flipped as well (a neighbour of
        the far seed, which a seed passed through float32 loses)."""
        bit = FAR_BITS.get(self.backend.name, FAR_BITS_DEFAULT)[component]
        pair = list(self.seed_pair(0, offset))
        pair[component] ^= (1 << bit) | int(low)
        where = f"bit {bit} of seed[{component}]"
        if self.backend.name == "torch":
            where += f" (bit {bit + 24 * (1 - component)} of the 32-bit generator seed the pair is packed into)"
        return tuple(pair), bit, where

    def call(
        self,
        purpose: str,
        rate: float,
        seed_pair=None,
        noise_shape=None,
        *,
        x=None,
        x_np=None,
        index: int = 0,
        fresh: bool = False,
        cotangent=None,
    ) -> Call:
        """Call fn (stateless or stateful contract), read its output, check shape and dtype, and
        hand the call to the families that observe its purpose.  With ``cotangent`` (native,
        numpy) the call is made with its gradient: dL/dx of that same call for dL/dy."""
        cfg = self.cfg
        x = self.x if x is None else x
        x_np = self.x_np if x_np is None else x_np
        ns = tuple(noise_shape) if noise_shape is not None else None  # hashable: a jit's static argument
        where = cfg.call_text(rate, seed_pair, ns)
        grad = None
        if self.first_output is not None and purpose == "main" and index == 0:  # made by pick_backend
            y, self.first_output = self.first_output, None
        else:
            seed = None if cfg.stateful else self.backend.seed(seed_pair)

            def f(t):
                return cfg.invoke(t, rate, seed, ns)

            try:
                with deadline(cfg.call_timeout):
                    if cotangent is None:
                        y = f(x)
                    else:
                        y, grad = self.backend.vjp(
                            self.backend.recompute(f, cfg.recompute) if cfg.recompute else f, x, cotangent[0]
                        )
            except CallTimeout:
                raise ContractError(
                    f"{where} did not return within call_timeout ({cfg.call_timeout:g} s) at call {cfg.calls + 1}: "
                    "stopped (pass a larger call_timeout, CLI --call-timeout, if it is only slow)"
                ) from None
            except Exception as exc:  # report, never a bare traceback
                raise ContractError(f"{where} raised {type(exc).__name__}: {exc} (at call {cfg.calls + 1})") from None
        y_np = read_output(self.backend, y, where, x_np.shape, cfg.dtype)
        self.check_call(y_np, x_np, where)
        cfg.samples += int(np.prod(x_np.shape))
        cfg.calls += 1
        m, bad, kept_elements = self.mask(y_np, noise_shape)
        kept = int(np.count_nonzero(m))
        if fresh and rate == cfg.rate and not bad:  # what a run cut short by fn still has to show
            self.evidence["kept"] += kept
            self.evidence["n"] += m.size
        c = Call(
            purpose,
            index,
            rate,
            seed_pair,
            x_np,
            tuple(noise_shape) if noise_shape is not None else None,
            y_np,
            m,
            bad,
            kept,
            kept if kept_elements is None else kept_elements,
            fresh and rate == cfg.rate,
        )
        if cotangent is not None:
            c.cotangent = cotangent[1]
            if isinstance(grad, str):
                c.grad_error = grad
            elif grad is not None:
                try:
                    c.grad = read_output(self.backend, grad, f"the gradient of {where}", x_np.shape, cfg.dtype)
                except ContractError as exc:
                    c.grad_error = str(exc)
        for f in self.families:
            f.on_call(c)
        readers = [f for f in self.families if purpose in f.observes]
        if readers or (purpose == "main" and self.per_position is not None):
            self.later(self._observe, c, readers, held=y_np.nbytes + m.nbytes)
        return c

    def check_call(self, y_np, x_np, where: str) -> None:
        """What no check can read past: fn changed its input in place (the battery's x is then
        no longer the x it compares with), or returned NaN where x is finite (dropout returns 0 or
        a scaled x)."""
        if not np.array_equal(self.x_np.view(self.fmt.uint), self.x_pristine):
            raise ContractError(
                f"{where} modified its input x in place (call {self.cfg.calls + 1}): dropout must return a new array "
                "and leave x as it was (torch: inplace=False, or call it on x.clone())"
            )
        if not np.isnan(y_np).any():  # one pass on the common path; the positions only when needed
            return
        with np.errstate(invalid="ignore"):
            nan = np.isnan(y_np) & ~np.isnan(x_np)
        if nan.any():
            k = int(np.count_nonzero(nan))
            raise ContractError(
                f"{where} returned NaN at {k:,} of {nan.size:,} positions where x is finite"
                + (" (every position)" if k == nan.size else "")
                + ": dropout returns 0 or a scaled x there, never NaN"
            )

    def _observe(self, call: Call, readers) -> None:
        if call.purpose == "main" and self.per_position is not None:
            np.add(self.per_position, call.mask, out=self.per_position, casting="unsafe")
        for f in readers:
            f.observe(call)

    def kept_elements(self, y_np) -> np.ndarray:
        return self.kind.kept_elements(y_np, self.fmt)

    def mask(self, y_np, noise_shape=None) -> tuple[np.ndarray, int, int | None]:
        """Unit-level kept mask, the number of inconsistent units, and the kept elements (None
        when the mask is per element: then they are the mask's count)."""
        kept = self.kept_elements(y_np)
        ns = noise_shape
        if ns is None or tuple(ns) == kept.shape:
            return kept, 0, None
        axes = tuple(i for i, (d, s) in enumerate(zip(ns, kept.shape, strict=True)) if d == 1 and s != 1)
        any_kept = kept.any(axis=axes, keepdims=True)
        all_kept = kept.all(axis=axes, keepdims=True)
        return any_kept, int(np.count_nonzero(any_kept & ~all_kept)), int(np.count_nonzero(kept))

    def small_input(self):
        """The first rows of the input, about SMALL_ELEMENTS of them (the whole input when it
        is small): for the calls that need a shape but not many draws.  Returns (x, x as numpy,
        noise shape for it or None)."""
        cfg = self.cfg
        per_row = math.prod(cfg.shape[1:])
        rows = max(1, min(cfg.shape[0], math.ceil(SMALL_ELEMENTS / per_row)))
        if rows == cfg.shape[0]:
            return self.x, self.x_np, cfg.noise_shape
        x_np = self.x_np[:rows]
        ns = None
        if cfg.noise_shape is not None:
            ns = (rows if cfg.noise_shape[0] == cfg.shape[0] else 1,) + tuple(cfg.noise_shape[1:])
        return self.backend.native(x_np), x_np, ns

    def later(self, f, *args, held: int = 0, **kwargs) -> None:
        """Run f on the worker thread after every job submitted before it (errors surface
        here or at the end of the run).  ``held``: bytes the job keeps alive until it has run."""
        self.jobs.append((self.worker.submit(f, *args, **kwargs), held))
        self.held += held
        # memory stays bounded if the worker falls behind: a few jobs, a few calls' outputs
        while len(self.jobs) > MAX_PENDING or (self.held > MAX_HELD and len(self.jobs) > 1):
            job, size = self.jobs.popleft()
            job.result()
            self.held -= size

    # -- the run ------------------------------------------------------------------------------
    def statistical_plan(self) -> list[str]:
        """The statistical entries this configuration runs (fixes the budget split up front)."""
        return [name for f in self.families for name in f.statistical()]

    def run(self) -> list[Check]:
        concluded: list[Check] = []
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dropout_stats") as self.worker:
            self.jobs, self.held = deque(), 0
            if self.cfg.keep in (0.0, 1.0):  # everything kept or everything dropped: one call decides
                self.families, self.per_position = [], None
                return self.kind.degenerate(self)
            self.alpha_seq = self.cfg.alpha / len(self.statistical_plan())
            self.main_call(0)  # the first call is the plainest one: fn(x, rate, seed=(s, 0))
            for f in self.families:  # calls that need no main mask: they also feed the rate test
                f.before_main()
            self.main_sequence()
            # families that read only the main sequence conclude while the extra calls run
            late = [f for f in self.families if f.concludes_late]
            for f in self.families:
                if f not in late:
                    self.later(lambda f=f: concluded.extend(f.conclude()))
            for f in self.families:
                f.after_main()
            for f in late:
                self.later(lambda f=f: concluded.extend(f.conclude()))
            while self.jobs:
                self.jobs.popleft()[0].result()
        self.holm(concluded)
        order = {name: i for i, name in enumerate(n for f in self.families for n in f.names)}
        return sorted(concluded, key=lambda c: order.get(c.name, len(order)))

    def main_sequence(self) -> None:
        """Draw at the configured rate with fresh seeds until no family needs another call."""
        while self.main_calls < self.cfg.max_calls and any(f.more() for f in self.families):
            self.main_call(self.main_calls)

    def main_call(self, i: int) -> None:
        cfg = self.cfg
        c = self.call("main", cfg.rate, self.seed_pair(i), cfg.noise_shape, index=i, fresh=True)
        if len(self.stored_masks) < self.store_limit:
            self.stored_masks.append(c.mask)
            if len(self.stored_masks) == self.store_limit:
                for f in self.families:
                    f.stored(list(self.stored_masks))
        self.main_calls = i + 1

    def holm(self, checks: list[Check]) -> None:
        """Holm across the p-value checks with what the sequential test left of the budget."""
        pchecks = [c for c in checks if c.kind == "statistical" and c.pvalue is not None and c.name != "keep_fraction"]
        if not pchecks:
            return
        holm = holm_bonferroni([c.pvalue for c in pchecks], self.cfg.alpha - self.alpha_seq)
        for c, rejected, level in zip(pchecks, holm.rejected, holm.thresholds, strict=True):
            c.level = level
            c.passed = not rejected
            if rejected and not c.detail.startswith("FAIL"):
                c.detail = f"p = {c.pvalue:.3g} <= its Holm level {level:.2g}: {c.detail}"


def read_output(backend, y, where: str, shape, dtype: str) -> np.ndarray:
    """fn's output as numpy, with the contract's shape and dtype, or a ContractError saying why."""
    try:
        y_np = backend.to_numpy(y)
    except Exception as exc:
        raise ContractError(f"{where} returned {type(y).__name__}, not an array: {exc}") from None
    if tuple(y_np.shape) != tuple(shape):
        raise ContractError(f"{where} returned shape {list(y_np.shape)}, expected {list(shape)}")
    if y_np.dtype.name != dtype:
        raise ContractError(f"{where} returned dtype {y_np.dtype.name}, expected {dtype}")
    if y_np is y or not y_np.flags.owndata or not y_np.flags.writeable:
        # the run owns what it reads: fn may hand back one buffer on every call (out=), and
        # torch's .numpy() and numpy itself share memory with what fn keeps
        y_np = y_np.copy()
    return y_np
