"""What every command shares: exit codes, UsageError, signals turned into an orderly stop, what
the run is doing (for the line an interruption prints), quiet TensorFlow imports, the argument
type parsers and the terminal's text width."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import sys
import tempfile
import threading

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

FRAMEWORK_NAMES = {"tensorflow": "TensorFlow", "jax": "JAX", "keras-jax": "Keras on JAX", "torch": "PyTorch"}


class UsageError(Exception):
    pass


def one_line(text: str) -> str:
    """``text`` with its control characters escaped (a path may hold a newline): one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


class Stopped(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP, raised where Python code runs: every ``finally`` (temporary
    files) runs, as for Ctrl-C, and ``main`` prints one line and exits 128 + the signal."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))
_pending: list[int] = []


def raise_if_stopped() -> None:
    """Raise the signal a library swallowed (an exception in a __del__ is only printed)."""
    if _pending:
        raise Stopped(_pending[0])


@contextlib.contextmanager
def signals_stop():
    """SIGINT, SIGTERM and SIGHUP raise ``Stopped`` in the main thread (those a parent set to be
    ignored, as nohup does, stay ignored); a second signal of a kind ends the process at once.
    The previous handlers come back on exit."""
    _pending.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        signal.signal(signum, signal.SIG_DFL)  # a second one: the system's default, at once
        _pending.append(signum)
        raise Stopped(signum)

    previous = {}
    for signum in _SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, stop)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


class RunState:
    """What the run is doing, for the line an interruption prints: the step under way and the
    output files not written yet."""

    def __init__(self):
        self.where = ""
        self.pending: list = []  # files.Target

    def reset(self) -> None:
        self.where, self.pending = "", []

    def wrote(self, target) -> None:
        self.pending = [t for t in self.pending if t.path != target.path]

    def stopped_line(self, exc: KeyboardInterrupt) -> str:
        signum = getattr(exc, "signum", signal.SIGINT)
        what = "interrupted" if signum == signal.SIGINT else f"terminated ({signal.Signals(signum).name})"
        parts = [what]
        if self.where:
            parts.append(self.where)
        for t in self.pending:
            kept = " (the previous file is unchanged)" if t.mode is not None else ""
            parts.append(f"{t.option} {t.path} not written{kept}")
        return "dropout-stats: " + "; ".join(parts)


RUN = RunState()


def quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:  # pragma: no cover
        pass


_TF_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)|I\d{4} .*\] oneDNN custom operations)"
)


@contextlib.contextmanager
def quiet_imports():
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


def wrap100(text: str) -> list[str]:
    import textwrap

    return textwrap.wrap(text, 100, subsequent_indent="    ", break_on_hyphens=False, break_long_words=False)


def versions_text(versions: dict) -> str:
    return ", ".join(f"{FRAMEWORK_NAMES.get(fw, fw)} {v}" for fw, v in versions.items())


# -- argument types ---------------------------------------------------------------------------
def shape(text: str):
    try:
        dims = [int(v) if v.lower() != "none" else None for v in text.replace("x", ",").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape ({text}) must be comma-separated ints, e.g. 64,4096") from None
    return dims


def count(name):
    """An integer option: 1000, 1_000 or 1e3 (an integral value in any notation), below 1e300."""

    def parse(text):
        from decimal import Decimal, InvalidOperation

        shown = text if len(text) <= 40 else text[:37] + "..."
        try:
            d = Decimal(text.strip())
        except InvalidOperation:
            raise argparse.ArgumentTypeError(f"{name} ({shown}) must be an integer") from None
        if not d.is_finite() or d != d.to_integral_value():
            raise argparse.ArgumentTypeError(f"{name} ({shown}) must be an integer")
        if d.adjusted() >= 300:
            raise argparse.ArgumentTypeError(f"{name} ({shown}) must be below 1e300")
        return int(d)

    return parse


def probability(name):
    def parse(text):
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} ({text}) must be a number") from None
        return v

    return parse


def check_design(rate: float, false_fail_rate: float) -> None:
    """A rate whose default discrepancy (1% of min(keep, 1 - keep)) no sample size can test is
    refused before any framework loads.  Tested at the run's whole false-fail rate: the battery's
    keep check gets a share of it and needs more draws still, so what is refused here the battery
    would refuse too, and nothing it accepts is refused."""
    from ..design import SampleSizeTooLarge, min_num_samples_for_rate_test

    if rate == 0:  # keep 1: one call decides, no design
        return
    keep = 1 - rate
    try:
        min_num_samples_for_rate_test(
            keep, 0.01 * min(keep, rate), false_fail_rate=false_fail_rate, false_pass_rate=1e-3
        )
    except SampleSizeTooLarge:
        raise UsageError(
            f"--rate ({rate!r}): testing keep {keep!r} for a discrepancy of 1% of min(rate, 1 - rate) would take "
            "more than 1e15 draws; choose a rate further from 0 and 1"
        ) from None
