"""Argument validation in one place, worded like scipy: "name (value) must be ...".

Every public function validates here before touching numpy, so a bad argument never
surfaces as a traceback from deep inside numpy, scipy or TensorFlow.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = [
    "check_probability",
    "check_rate",
    "check_open_unit",
    "check_count",
    "check_counts",
    "check_choice",
    "check_flag",
    "check_callable",
]


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _as_float(name: str, value) -> float:
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if not _is_real(value):
        raise TypeError(f"{name} ({value!r}) must be a real number")
    return float(value)


def check_rate(rate, name: str = "rate") -> float:
    """A dropout rate: a real number in [0, 1). NaN is rejected (TF silently drops all)."""
    r = _as_float(name, rate)
    if not (0.0 <= r < 1.0):
        raise ValueError(f"{name} ({r!r}) must be in [0, 1)")
    return r


def check_probability(p, name: str = "p") -> float:
    """A probability in [0, 1]."""
    v = _as_float(name, p)
    if not (0.0 <= v <= 1.0):
        raise ValueError(f"{name} ({v!r}) must be in [0, 1]")
    return v


def check_open_unit(p, name: str) -> float:
    """A level such as a confidence level or an error rate: strictly inside (0, 1)."""
    v = _as_float(name, p)
    if not (0.0 < v < 1.0):
        raise ValueError(f"{name} ({v!r}) must be in (0, 1)")
    return v


def check_positive(value, name: str) -> float:
    v = _as_float(name, value)
    if not (v > 0.0) or math.isinf(v):
        raise ValueError(f"{name} ({v!r}) must be a finite number > 0")
    return v


def check_count(value, name: str, *, minimum: int = 0) -> int:
    """A non-negative integer (numpy integers and integral floats such as 10.0 allowed)."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} ({value!r}) must be an integer")
    if isinstance(value, numbers.Integral):
        v = int(value)
    else:
        f = float(value)
        if not math.isfinite(f) or f != int(f):
            raise ValueError(f"{name} ({value!r}) must be an integer")
        v = int(f)
    if v < minimum:
        raise ValueError(f"{name} ({v}) must be >= {minimum}")
    return v


def check_counts(k, n, *, k_name: str = "k", n_name: str = "n", n_minimum: int = 1) -> tuple[int, int]:
    """k successes out of n trials: 0 <= k <= n, n >= n_minimum."""
    ki = check_count(k, k_name)
    ni = check_count(n, n_name, minimum=n_minimum)
    if ki > ni:
        raise ValueError(f"{k_name} ({ki}) must be <= {n_name} ({ni})")
    return ki, ni


def check_choice(value, name: str, choices) -> str:
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} ({value!r}) must be one of {listed}")
    return value


def check_flag(value, name: str) -> bool:
    """True or False (numpy booleans too): a truthy string such as "no" must not pass as True."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} ({value!r}) must be True or False")


def check_callable(value, name: str):
    if not callable(value):
        raise TypeError(f"{name} ({value!r}) must be callable")
    return value
