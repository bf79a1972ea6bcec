"""Hypothesis strategies for dropout configurations.

Each takes keyword-only options; every option accepts a value or a strategy.  Importing this
module imports hypothesis, never TensorFlow.
"""

from __future__ import annotations

from hypothesis import strategies as st

from ._checks import check_rate
from ._floats import FLOAT_DTYPES, dtype_name

__all__ = ["rates", "dtypes", "shapes_and_noise_shapes", "dropout_configs"]


def _strategy(value):
    return value if isinstance(value, st.SearchStrategy) else st.just(value)


def rates(*, min_value: float = 0.0, max_value: float = 0.99, edges: bool = True) -> st.SearchStrategy[float]:
    """Dropout rates in [min_value, max_value], with the edge values 0, tiny rates and rates
    near 1 (where low-precision dtypes round the rate) drawn often when ``edges``."""
    if not (0.0 <= min_value <= max_value < 1.0):
        raise ValueError(f"min_value ({min_value}) and max_value ({max_value}) must satisfy 0 <= min <= max < 1")
    body = st.floats(min_value, max_value, allow_nan=False, allow_infinity=False)
    if not edges:
        return body
    special = [r for r in (0.0, 1e-4, 1e-3, 0.1, 0.2, 0.5, 0.9, 0.995, 0.9995) if min_value <= r <= max_value]
    return st.one_of(st.sampled_from(special), body) if special else body


def dtypes(*, include=FLOAT_DTYPES) -> st.SearchStrategy[str]:
    bad = [d for d in include if d not in FLOAT_DTYPES]
    if bad or not include:
        raise ValueError(f"include ({list(include)}) must be a non-empty subset of {list(FLOAT_DTYPES)}")
    return st.sampled_from(list(include))


@st.composite
def _shapes(draw, min_rank, max_rank, max_side, with_noise, min_units):
    rank = draw(st.integers(min_rank, max_rank))
    # grow sides until the draws per call reach min_units (small shapes mean many calls)
    shape = [draw(st.integers(1, max_side)) for _ in range(rank)]
    noise = None
    if draw(_strategy(with_noise)):
        noise = [d if draw(st.booleans()) else 1 for d in shape]
    units = shape if noise is None else noise
    axis = 0
    while _prod(units) < min_units and min(units) < max_side:
        i = axis % rank
        if units[i] < max_side:
            shape[i] = units[i] = min(max_side, units[i] * 2)
        axis += 1
    return tuple(shape), (tuple(noise) if noise is not None else None)


def _prod(dims) -> int:
    out = 1
    for d in dims:
        out *= d
    return out


def shapes_and_noise_shapes(
    *, min_rank: int = 1, max_rank: int = 4, max_side: int = 64, with_noise=st.booleans(), min_units: int = 1
) -> st.SearchStrategy[tuple]:
    """(shape, noise_shape or None) with noise_shape broadcastable to shape, and at least
    ``min_units`` draws per call where the sides allow it."""
    if not (1 <= min_rank <= max_rank):
        raise ValueError(f"min_rank ({min_rank}) and max_rank ({max_rank}) must satisfy 1 <= min <= max")
    if max_side < 1:
        raise ValueError(f"max_side ({max_side}) must be >= 1")
    if min_units < 1:
        raise ValueError(f"min_units ({min_units}) must be >= 1")
    return _shapes(min_rank, max_rank, max_side, with_noise, min_units)


def dropout_configs(*, rate=None, dtype=None, shape=None) -> st.SearchStrategy[dict]:
    """A dict of verify() keyword arguments: rate, dtype, shape, noise_shape.

    Each option is a strategy or a fixed value, checked here; a fixed ``shape`` is a sequence
    of ints (no noise shape) or a (shape, noise_shape) pair as shapes_and_noise_shapes() draws.
    """
    if rate is not None and not isinstance(rate, st.SearchStrategy):
        rate = check_rate(rate)
    if dtype is not None and not isinstance(dtype, st.SearchStrategy):
        dtype = dtype_name(dtype)
    if shape is not None and not isinstance(shape, st.SearchStrategy):
        shape = _fixed_shape(shape)
    return _dropout_configs(rate, dtype, shape)


def _fixed_shape(shape) -> tuple:
    def dims(v):
        if (
            not isinstance(v, (list, tuple))
            or not v
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in v)
        ):
            raise ValueError(f"shape ({shape!r}) must be a sequence of positive ints or a (shape, noise_shape) pair")
        return tuple(v)

    if isinstance(shape, (list, tuple)) and len(shape) == 2 and isinstance(shape[0], (list, tuple)):
        s = dims(shape[0])
        ns = dims(shape[1]) if shape[1] is not None else None
        if ns is not None and (len(ns) != len(s) or any(n not in (1, d) for n, d in zip(ns, s, strict=True))):
            raise ValueError(f"noise_shape ({list(ns)}) must broadcast to shape {list(s)}")
        return s, ns
    return dims(shape), None


@st.composite
def _dropout_configs(draw, rate, dtype, shape) -> dict:
    r = draw(_strategy(rate) if rate is not None else rates(max_value=0.95))
    d = draw(_strategy(dtype) if dtype is not None else dtypes())
    s, ns = draw(_strategy(shape) if shape is not None else shapes_and_noise_shapes())
    return {"rate": r, "dtype": d, "shape": list(s), "noise_shape": list(ns) if ns is not None else None}
