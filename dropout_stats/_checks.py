"""Argument validation in one place, worded like scipy: "name (value) must be ...".

Every public function validates here before touching numpy, so a bad argument never
surfaces as a traceback from deep inside numpy, scipy or TensorFlow.  A wrong type is a
TypeError, a wrong value a ValueError; the message names the argument and shows its value
(shortened when long: an integer of 5000 digits has no repr at all in Python >= 3.11).
"""

from __future__ import annotations

import math
import numbers
import os

import numpy as np

__all__ = [
    "MAX_COUNT",
    "check_probability",
    "check_rate",
    "check_open_unit",
    "check_binomial_p",
    "check_count",
    "check_counts",
    "check_trials",
    "check_integer",
    "check_choice",
    "check_flag",
    "check_callable",
    "check_dtype",
    "check_shape",
    "as_dimension",
    "show",
]

# The largest number of draws the binomial layer takes: every integer up to 2**53 is a double,
# and scipy's binomial functions compute in doubles.  Past it a count is rounded before scipy
# sees it, and boost's searches fail (scipy 1.17: binom.ppf(5e-7, 1e16, 0.5) is nan, at 1e17 it
# does not return; binom.cdf at 1e17 is nan; 10**20 is a numpy TypeError).
MAX_COUNT = 2**53
MAX_COUNT_TEXT = "2**53 = 9007199254740992"
_BINOMIAL_LIMIT = (
    f"<= {MAX_COUNT_TEXT}: the exact binomial functions compute in double precision, which holds no larger "
    "count exactly"
)

MIN_PROBABILITY = 1e-290  # see check_binomial_p

_SHOW_LIMIT = 80  # characters of a value's repr in a message


def show(value) -> str:
    """A value for an error message: its repr, shortened; never raises."""
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
        v = int(value)
        if v.bit_length() > 96:  # about 29 digits: write it as a power of ten
            exponent = math.log10(abs(v))
            mantissa = 10 ** (exponent - math.floor(exponent))
            return f"{'-' if v < 0 else ''}{mantissa:.6g}e+{math.floor(exponent)}"
    try:
        text = repr(value)
    except Exception:  # a broken __repr__, an int past sys.get_int_max_str_digits()
        text = f"<{type(value).__name__}>"
    return text if len(text) <= _SHOW_LIMIT else text[: _SHOW_LIMIT - 3] + "..."


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _as_float(name: str, value, rule: str) -> float:
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if not _is_real(value):
        raise TypeError(f"{name} ({show(value)}) must be a real number")
    try:
        return float(value)
    except OverflowError:  # an integer (or Fraction) past the float range
        raise ValueError(f"{name} ({show(value)}) must be {rule}") from None


def check_rate(rate, name: str = "rate") -> float:
    """A dropout rate: a real number in [0, 1). NaN is rejected (TF silently drops all)."""
    r = _as_float(name, rate, "in [0, 1)")
    if not (0.0 <= r < 1.0):
        raise ValueError(f"{name} ({r!r}) must be in [0, 1)")
    return r


def check_probability(p, name: str = "p") -> float:
    """A probability in [0, 1]."""
    v = _as_float(name, p, "in [0, 1]")
    if not (0.0 <= v <= 1.0):
        raise ValueError(f"{name} ({v!r}) must be in [0, 1]")
    return v


def check_open_unit(p, name: str) -> float:
    """A level such as a confidence level or an error rate: strictly inside (0, 1)."""
    v = _as_float(name, p, "in (0, 1)")
    if not (0.0 < v < 1.0):
        raise ValueError(f"{name} ({v!r}) must be in (0, 1)")
    return v


def check_binomial_p(p, name: str = "keep_prob", *, closed: bool = True) -> float:
    """The success probability of a binomial whose pmf is computed: in [0, 1] (``closed``) or
    (0, 1), and not in (0, 1e-290), where scipy's binomial pmf raises OverflowError (boost's
    ibeta_derivative, seen for p up to 4.3e-299)."""
    v = check_probability(p, name) if closed else check_open_unit(p, name)
    if 0.0 < v < MIN_PROBABILITY:
        raise ValueError(
            f"{name} ({v!r}) must be {'0 or ' if closed else ''}>= 1e-290: scipy's binomial functions overflow below"
        )
    return v


def check_positive(value, name: str) -> float:
    v = _as_float(name, value, "a finite number > 0")
    if not (v > 0.0) or math.isinf(v):
        raise ValueError(f"{name} ({v!r}) must be a finite number > 0")
    return v


def check_count(value, name: str, *, minimum: int = 0, maximum: int | None = None, limit: str = "") -> int:
    """An integer >= minimum (numpy integers and integral floats such as 10.0 allowed; bools,
    10.5, NaN and strings not), and <= maximum when one is given (``limit`` then says why,
    in place of the bare bound)."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} ({show(value)}) must be an integer >= {minimum}")
    if isinstance(value, numbers.Integral):
        v = int(value)
    elif isinstance(value, numbers.Rational) and value.denominator == 1:  # Fraction(10), of any size
        v = int(value.numerator)
    else:
        try:
            f = float(value)
        except OverflowError:
            f = math.nan
        if not math.isfinite(f) or f != int(f):
            raise ValueError(f"{name} ({show(value)}) must be an integer >= {minimum}")
        v = int(f)
    if v < minimum:
        raise ValueError(f"{name} ({show(v)}) must be >= {minimum}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} ({show(v)}) must be {limit or f'<= {maximum}'}")
    return v


def check_trials(value, name: str = "n", *, minimum: int = 1) -> int:
    """A number of binomial draws: an integer in [minimum, 2**53] (``MAX_COUNT``)."""
    return check_count(value, name, minimum=minimum, maximum=MAX_COUNT, limit=_BINOMIAL_LIMIT)


def check_counts(k, n, *, k_name: str = "k", n_name: str = "n", n_minimum: int = 1) -> tuple[int, int]:
    """k successes out of n trials: 0 <= k <= n, n_minimum <= n <= 2**53."""
    ki = check_count(k, k_name)
    ni = check_trials(n, n_name, minimum=n_minimum)
    if ki > ni:
        raise ValueError(f"{k_name} ({show(ki)}) must be <= {n_name} ({ni})")
    return ki, ni


def check_integer(value, name: str) -> int:
    """Any integer, negative ones too (an axis): numpy integers allowed; bools and floats not."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} ({show(value)}) must be an integer")
    return int(value)


def check_choice(value, name: str, choices) -> str:
    try:
        ok = value in choices
    except Exception:  # an array's == is not a truth value
        ok = False
    if not ok:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} ({show(value)}) must be one of {listed}")
    return value


def check_flag(value, name: str) -> bool:
    """True or False (numpy booleans too): a truthy string such as "no" must not pass as True."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} ({show(value)}) must be True or False")


def check_callable(value, name: str):
    if not callable(value):
        raise TypeError(f"{name} ({show(value)}) must be callable")
    return value


def check_dtype(dtype, name: str = "dtype") -> str:
    """A float format's name from a string, numpy dtype or type, tf.DType or ml_dtypes type.
    None is refused (numpy reads it as float64): a dtype must be said."""
    from ._floats import FLOAT_DTYPES, dtype_name

    if dtype is None or isinstance(dtype, (bool, np.bool_, numbers.Number)):
        raise TypeError(f"{name} ({show(dtype)}) must be a dtype: one of {', '.join(FLOAT_DTYPES)}")
    return dtype_name(dtype, name)


def as_dimension(d) -> int | None:
    """An array dimension as an int: an integer (numpy ones too) or an integral float such as
    4.0 (as check_count takes); None for anything else (True, 10.5, nan, "4", None)."""
    if isinstance(d, np.ndarray) and d.ndim == 0:
        d = d.item()
    if isinstance(d, (bool, np.bool_)) or not isinstance(d, numbers.Real):
        return None
    if isinstance(d, numbers.Integral):
        return int(d)
    try:
        f = float(d)
    except OverflowError:
        return None
    return int(f) if math.isfinite(f) and f == int(f) else None


_MAX_RANK = 32  # numpy 1.x's limit (2.x allows 64); no dropout input has more axes


def _memory_bytes() -> int | None:
    """This machine's memory, or its container's limit where that is lower; None if unknown."""
    sizes = []
    try:
        sizes.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:  # "max" or a huge number: no limit
            sizes.append(int(text))
    return min(sizes) if sizes else None


def _bytes_text(n: float) -> str:
    for unit, size in (("EB", 1e18), ("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} bytes"


def check_shape(shape, name: str = "shape", *, itemsize: int = 2, copies: int = 4) -> tuple[int, ...]:
    """An array shape: a sequence of positive ints (numpy ints and integral floats such as 4.0
    allowed; bools, 10.5, strings not), at most 32 axes, and small enough that ``copies`` arrays of it
    with ``itemsize`` bytes per element fit in this machine's memory (refused with the size they
    would need, before anything is allocated)."""
    if isinstance(shape, (str, bytes, bytearray, dict, set, frozenset)) or not hasattr(shape, "__iter__"):
        raise TypeError(f"{name} ({show(shape)}) must be a sequence of ints")
    try:
        dims = list(shape)
    except Exception:
        raise TypeError(f"{name} ({show(shape)}) must be a sequence of ints") from None
    out = []
    for d in dims:
        di = as_dimension(d)
        if di is None:
            raise TypeError(f"{name} ({show(dims)}) must be a sequence of ints")
        out.append(di)
    if len(out) == 0 or any(d <= 0 for d in out):
        raise ValueError(f"{name} ({show(out)}) must have at least one axis and only positive dimensions")
    if len(out) > _MAX_RANK:
        raise ValueError(f"{name} (rank {len(out)}) must have at most {_MAX_RANK} axes")
    elements = math.prod(out)
    need = elements * itemsize * copies
    memory = _memory_bytes()
    if elements >= 2**62 or (memory is not None and need > memory):
        have = f"this machine's {_bytes_text(memory)} of memory" if memory is not None else "any memory"
        raise ValueError(
            f"{name} ({show(out)}) holds {elements:.3g} elements: {copies} arrays of it at {itemsize} bytes per "
            f"element need {_bytes_text(float(need))}, more than {have}"
        )
    return tuple(out)
