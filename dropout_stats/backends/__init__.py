"""Frameworks behind one interface: what verify() needs to know about where ``fn`` runs.

A backend turns the battery's numpy input into the framework's array and a seed pair into the
framework's seed, reads ``fn``'s output back as numpy (bfloat16 from its bits), says whether
``noise_shape`` exists, and models what a correct implementation of that framework does: its
keep probability per dtype (the dtype its uniform is drawn in, its levels, ``U >= fl(rate)`` or
``U < fl(1 - rate)``), the scale formulas it may use, and an optional bit-exact reference stream.

Adding a framework means one module here with a ``Backend`` subclass and one line in
``_BACKENDS``.  Nothing in this package imports a framework before a backend of it is used.
"""

from __future__ import annotations

import importlib
from fractions import Fraction

import numpy as np

from .._floats import float32_to_bfloat16_bits

__all__ = ["Backend", "get_backend", "backend_names", "reference_names", "detect_backend", "make_input_array"]

# name -> (module, class); imported on first use
_BACKENDS = {
    "numpy": (".numpy", "NumpyBackend"),
    "tensorflow": (".tensorflow", "TensorFlowBackend"),
    "jax": (".jax", "JaxBackend"),
    "torch": (".torch", "TorchBackend"),
}


class Backend:
    """What the battery needs from a framework.  Subclasses set the class attributes and
    override what differs; the defaults describe a numpy-like framework."""

    name = "backend"
    references: tuple = ()  # bit-exact reference streams this backend offers
    default_reference = None  # what reference="auto" means here
    has_noise_shape = True
    seed_form = "a tuple of two Python ints"
    recompute_wrappers: tuple = ()  # ways to rematerialise fn in the backward pass (first: default)
    differentiable = False  # vjp() works

    # -- arrays --------------------------------------------------------------------------
    def native(self, x: np.ndarray):
        """The battery's numpy input as the framework's array (bit for bit)."""
        return x

    def reshape(self, x, shape):
        return x.reshape(tuple(shape))

    def seed(self, pair):
        """A stateless seed pair (two ints) in the framework's form."""
        return tuple(int(v) for v in pair)

    def to_numpy(self, y) -> np.ndarray:
        """fn's output as a numpy array; raises TypeError with the reason when it cannot."""
        if isinstance(y, np.ndarray):
            return y
        if hasattr(y, "numpy"):
            return y.numpy()
        return np.asarray(y)

    # -- what a correct implementation does ---------------------------------------------
    def keep_fraction(self, rate: float, dtype: str, reference) -> Fraction:
        """The exact keep probability of a correct implementation at ``rate`` in ``dtype``."""
        raise NotImplementedError

    def keep_note(self, rate: float, dtype: str, reference) -> str:
        """Why keep_fraction differs from 1 - rate, in words (for the keep_probability finding)."""
        return ""

    def scale_formulas(self, rate: float, dtype: str) -> list:
        """The ScaleFormulas a correct implementation may use, most likely first."""
        raise NotImplementedError

    def reference_keep(self, shape, seed_pair, dtype: str, rate: float, reference: str) -> np.ndarray:
        """The kept set of the reference stream ``reference`` (bit for bit)."""
        raise NotImplementedError(f"backend {self.name!r} has no reference stream")

    # -- gradients ------------------------------------------------------------------------
    def vjp(self, f, x, cotangent):
        """(y, dL/dx) for y = f(x) and dL/dy = cotangent, from one call of f.  The gradient is
        None when no gradient flows from y to x; f's own errors propagate, errors of the
        gradient computation come back as the string in place of the gradient."""
        raise NotImplementedError(f"backend {self.name!r} has no gradients")

    def recompute(self, f, wrapper: str):
        """f wrapped so that the backward pass recomputes it (activation checkpointing)."""
        raise NotImplementedError(f"backend {self.name!r} has no rematerialisation")

    def start(self, cfg) -> None:
        """Before the battery's first call (torch seeds its global generator here)."""

    def variants(self, reference: str, dtype: str) -> tuple:
        """Other streams as documented as ``reference`` for ``dtype``: the mechanism check accepts
        each, bit for bit, and the keep check tests each one's keep."""
        return ()

    def other_reference(self, reference: str):
        """A second stream worth naming when the kept set matches it instead (or None)."""
        return None

    def stream_note(self, reference: str, other: str) -> str:
        return ""

    def reference_text(self, reference: str, dtype: str) -> str:
        """The reference stream's kept set as code a reader knows (for the mechanism check)."""
        return {
            "tensorflow": f"tf.random.stateless_uniform(shape, seed, {dtype}) >= fl(rate)",
            "tensorflow-xla": f"XLA's tf.random.stateless_uniform(shape, seed, {dtype}) >= fl(rate)",
            "jax": "jax.random.bernoulli(key(seed), 1 - rate, shape)",
            "torch": f"torch.empty(shape, dtype={dtype}).bernoulli_(1 - rate, generator seeded from seed)",
        }.get(reference, f"the {reference!r} stream")


def seed_globals(seed: int) -> list:
    """Seed the global generators a stateful fn may draw from, in every framework this process
    has imported (none is imported here): Python's ``random``, numpy's legacy global generator,
    ``keras.utils.set_random_seed`` (which seeds those and its backend), ``tf.random.set_seed``
    and ``torch.manual_seed``.  Returns what was seeded, as calls a reader can repeat."""
    import random
    import sys

    random.seed(seed)
    np.random.seed(seed % 2**32)
    seeded = [f"random.seed({seed})", f"numpy.random.seed({seed})"]
    # a module set to None in sys.modules is one the process has blocked: not imported
    keras, tf, torch = (sys.modules.get(name) for name in ("keras", "tensorflow", "torch"))
    if keras is not None and hasattr(keras, "utils"):
        keras.utils.set_random_seed(seed)
        seeded.append(f"keras.utils.set_random_seed({seed})")
    if tf is not None and hasattr(tf, "random"):
        tf.random.set_seed(seed)
        seeded.append(f"tf.random.set_seed({seed})")
    if torch is not None and hasattr(torch, "manual_seed"):
        torch.manual_seed(seed)
        seeded.append(f"torch.manual_seed({seed})")
    return seeded


def keep_model(framework: str):
    """A backend's model of a correct implementation (``keep_fraction``, ``keep_note``,
    ``scale_formulas``, ``default_reference``: pure functions of their arguments) without its
    constructor, which imports the framework: a framework's exact keep needs no framework."""
    if framework not in _BACKENDS:
        raise ValueError(f"framework ({framework!r}) must be one of {', '.join(repr(n) for n in _BACKENDS)}")
    module, cls = _BACKENDS[framework]
    klass = getattr(importlib.import_module(module, __name__), cls)
    return klass.__new__(klass)


def backend_names() -> tuple:
    """The backends by name, and "keras": Keras 3's own backend (KERAS_BACKEND)."""
    return (*_BACKENDS, "keras")


def reference_names() -> tuple:
    """Every backend's reference streams (backend modules import no framework at load)."""
    names = []
    for module, cls in _BACKENDS.values():
        names += getattr(importlib.import_module(module, __name__), cls).references
    return tuple(names)


def get_backend(name: str) -> Backend:
    """The backend called ``name``; a clear error for an unknown or uninstalled one.  "keras"
    means the framework Keras 3 runs on here (keras.backend.backend())."""
    if name == "keras":
        try:
            import keras
        except ImportError as exc:
            raise ValueError(
                "backend ('keras') needs keras installed: pip install \"dropout_stats[tensorflow]\" (Keras on "
                f'TensorFlow) or "dropout_stats[keras-jax]" (Keras 3 on JAX) ({type(exc).__name__}: {exc})'
            ) from None
        name = keras.backend.backend()
    if name not in _BACKENDS:
        raise ValueError(f"backend ({name!r}) must be one of {', '.join(repr(n) for n in _BACKENDS)}")
    module, cls = _BACKENDS[name]
    try:
        mod = importlib.import_module(module, __name__)
        return getattr(mod, cls)()
    except ImportError as exc:  # the framework, or a package it needs (torch: ml_dtypes), is missing
        extra = f' pip install "dropout_stats[{name}]"' if name != "numpy" else ""
        raise ValueError(
            f"backend ({name!r}) needs its framework installed:{extra} ({type(exc).__name__}: {exc})"
        ) from None


def detect_backend(y):
    """The backend that owns ``y`` (fn's first output), or None: numpy arrays, TensorFlow tensors,
    JAX arrays, torch tensors."""
    module = type(y).__module__.split(".")[0]
    owner = {
        "numpy": "numpy",
        "tensorflow": "tensorflow",
        "ml_dtypes": "numpy",
        "jax": "jax",
        "jaxlib": "jax",
        "torch": "torch",
    }.get(module)
    if owner is None and module == "builtins":
        return None
    return owner


def make_input_array(shape, dtype: str, seed: int) -> np.ndarray:
    """The battery's input as a numpy array, the same for every backend: non-zero values of both
    signs with magnitudes in [0.5, 2] (2 only by rounding to a 16-bit dtype), mantissa bits
    uniformly random, so every position is informative for the mask and a scale error shows in
    the bits.  Built from random bits in one cheap pass; 16-bit dtypes are rounded from float32
    to nearest even (as TensorFlow's cast does).  bfloat16 needs ml_dtypes."""
    rng = np.random.default_rng([seed, 0x5EED])
    n = int(np.prod(shape, dtype=np.int64))
    if dtype == "float64":
        bits = np.frombuffer(rng.bytes(8 * n), dtype=np.uint64)
        values = ((bits & np.uint64(0x801FFFFFFFFFFFFF)) | np.uint64(0x3FE0000000000000)).view(np.float64)
        return values.reshape(tuple(shape))
    bits = np.frombuffer(rng.bytes(4 * n), dtype=np.uint32)
    values = ((bits & np.uint32(0x80FFFFFF)) | np.uint32(0x3F000000)).view(np.float32).reshape(tuple(shape))
    if dtype == "float32":
        return values
    if dtype == "float16":
        return values.astype(np.float16)  # round to nearest even
    return float32_to_bfloat16_bits(values).view(bfloat16_dtype())


def bfloat16_dtype():
    """ml_dtypes' bfloat16 (TensorFlow and JAX ship it); a clear error without it."""
    try:
        import ml_dtypes
    except ImportError:
        raise ValueError(
            "dtype ('bfloat16') needs the ml_dtypes package for numpy arrays: pip install ml_dtypes"
        ) from None
    return np.dtype(ml_dtypes.bfloat16)
