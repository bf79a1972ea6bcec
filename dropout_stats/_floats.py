"""Floating-point formats without TensorFlow or ml_dtypes: names, bit views, rounding.

bfloat16 values are handled as their uint16 bit patterns (or as float32 values, which hold
every bfloat16 exactly), so this layer needs neither TensorFlow nor ml_dtypes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


@dataclass(frozen=True)
class FloatFormat:
    name: str
    bits: int  # storage width
    mantissa_bits: int  # explicit fraction bits
    exponent_mask: int  # bits of the exponent field
    uniform_levels: int  # TF's uniform in this dtype takes values k / uniform_levels
    xla_uniform_levels: int  # the same under XLA (bfloat16: a float32 uniform, truncated)

    @property
    def uint(self):
        return {16: np.uint16, 32: np.uint32, 64: np.uint64}[self.bits]

    @property
    def sign_mask(self) -> int:
        return 1 << (self.bits - 1)

    @property
    def abs_mask(self) -> int:
        return self.sign_mask - 1

    @property
    def min_normal_bits(self) -> int:
        return 1 << self.mantissa_bits


FORMATS = {
    "float16": FloatFormat("float16", 16, 10, 0x7C00, 2**10, 2**10),
    "bfloat16": FloatFormat("bfloat16", 16, 7, 0x7F80, 2**7, 2**23),
    "float32": FloatFormat("float32", 32, 23, 0x7F800000, 2**23, 2**23),
    "float64": FloatFormat("float64", 64, 52, 0x7FF0000000000000, 2**52, 2**52),
}


def dtype_name(dtype, name: str = "dtype") -> str:
    """Normalise a dtype given as a string, numpy dtype/type, tf.DType or ml_dtypes type."""
    if isinstance(dtype, str):
        s = dtype
    elif isinstance(getattr(dtype, "name", None), str):  # np.dtype, tf.DType
        s = dtype.name
    else:
        try:
            s = np.dtype(dtype).name
        except TypeError:
            s = repr(dtype)
    if s not in FORMATS:
        raise ValueError(f"{name} ({s!r}) must be one of {', '.join(FLOAT_DTYPES)}")
    return s


def array_dtype_name(a: np.ndarray, name: str) -> str:
    """The float format of an array, or a TypeError naming the argument."""
    s = a.dtype.name
    if s not in FORMATS:
        raise TypeError(f"{name} (dtype {s}) must be a floating-point array ({', '.join(FLOAT_DTYPES)})")
    return s


def to_numpy(a, name: str) -> np.ndarray:
    """Anything with .numpy() (a TF tensor) or __array__ (a JAX array), and torch tensors in any
    dtype (bfloat16 from its bits, through the torch backend's reader: numpy has no bfloat16 of
    its own and ``Tensor.numpy()`` refuses it), without importing a framework."""
    if isinstance(a, np.ndarray):
        return a
    if type(a).__module__.split(".")[0] == "torch":  # torch is imported: a is its tensor
        from .backends import get_backend

        try:
            return get_backend("torch").to_numpy(a)
        except Exception as exc:  # bfloat16 without ml_dtypes, a meta tensor, ...
            raise TypeError(f"{name} ({type(a).__name__}) could not be read as an array: {exc}") from None
    if hasattr(a, "numpy"):
        try:
            a = a.numpy()
        except Exception as exc:  # a symbolic tensor, say
            raise TypeError(f"{name} ({type(a).__name__}) could not be read as an array: {exc}") from None
    try:
        return np.asarray(a)
    except Exception as exc:
        raise TypeError(f"{name} ({type(a).__name__}) could not be read as an array: {exc}") from None


def bits_of(a: np.ndarray) -> np.ndarray:
    """The array's bit patterns as unsigned integers (a view, no copy)."""
    fmt = FORMATS[a.dtype.name]
    return a.view(fmt.uint)


def float32_to_bfloat16_bits(a) -> np.ndarray:
    """Round float32 values to bfloat16 (nearest, ties to even) and return the uint16 bits."""
    f = np.asarray(a, dtype=np.float32)
    if not f.ndim:
        return float32_to_bfloat16_bits(f.reshape(1))[0]
    b = f.view(np.uint32)
    u = np.uint32  # explicit unsigned constants: numpy 1.x will not mix them with Python ints
    # uint32 cannot overflow here except for NaN bit patterns, which are replaced below
    with np.errstate(over="ignore"):
        r = (b >> u(16)) & u(1)
        r += u(0x7FFF)
        r += b
    rounded = (r >> u(16)).astype(np.uint16)
    nan = np.isnan(f)
    if nan.any():  # the quiet NaN with x's sign, as Eigen (TensorFlow) and ml_dtypes convert
        rounded = np.where(nan, ((b >> u(16)) & u(0x8000)) | u(0x7FC0), rounded).astype(np.uint16)
    return rounded


def bfloat16_bits_to_float32(bits) -> np.ndarray:
    wide = np.asarray(bits, dtype=np.uint16).astype(np.uint32) << np.uint32(16)
    return wide.view(np.float32) if wide.ndim else wide.reshape(1).view(np.float32).reshape(())


def round_to(value, dtype: str) -> np.ndarray:
    """Round float64 values to `dtype`; returns float64 holding the rounded values exactly.

    bfloat16 goes through float32 first, as Eigen's bfloat16(double) constructor does (and so
    TensorFlow when it converts a Python float rate to a bfloat16 tensor).
    """
    v = np.asarray(value, dtype=np.float64)
    if dtype == "float64":
        return v.copy()
    if dtype == "bfloat16":
        return bfloat16_bits_to_float32(float32_to_bfloat16_bits(v.astype(np.float32))).astype(np.float64)
    return v.astype(np.dtype(dtype)).astype(np.float64)
