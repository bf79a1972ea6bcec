"""What every command shares: exit codes, UsageError, quiet TensorFlow imports, the argument
type parsers and the terminal's text width."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import tempfile

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

FRAMEWORK_NAMES = {"tensorflow": "TensorFlow", "jax": "JAX", "keras-jax": "Keras on JAX", "torch": "PyTorch"}


class UsageError(Exception):
    pass


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


def probability(name):
    def parse(text):
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} ({text}) must be a number") from None
        return v

    return parse
