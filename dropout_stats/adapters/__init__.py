"""Every dropout entry point of the installed frameworks, wrapped to verify()'s contract: one
module per framework (``tensorflow``: TensorFlow and Keras on it; ``jax``: JAX and Flax;
``keras-jax``: Keras 3 on JAX; ``torch``: PyTorch), each a list of ``Adapter``s.  The libraries
that ship structured dropout of their own on torch (``timm``, ``torchvision``: DropPath, stochastic
depth, DropBlock, verified by verify_drop_path and verify_dropblock) and ``transformers`` (its
attention dropout, verified by verify_attention) are in ``LIBRARIES``: audited when named.  A new
framework's entry points go in a new module here and a line in ``FRAMEWORKS``.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

from .._floats import FLOAT_DTYPES

# framework -> (module here, the packages that must be importable)
FRAMEWORKS = {
    "tensorflow": (".tensorflow", ("tensorflow",)),
    "jax": (".jax", ("jax",)),
    "keras-jax": (".keras_jax", ("keras", "jax")),
    "torch": (".torch", ("torch",)),
    "timm": (".timm", ("timm", "torch")),
    "torchvision": (".torchvision", ("torchvision", "torch")),
    "transformers": (".transformers", ("transformers", "torch")),
}
# libraries on a framework: audited when named (``--framework timm``), not by default
LIBRARIES = ("timm", "torchvision", "transformers")


@dataclass(frozen=True)
class Adapter:
    """One entry point in one execution mode, with what verify() needs to know about it."""

    entry_point: str
    mode: str
    stateful: bool
    make: Callable[[int], Callable]  # seed -> fn (fresh state: layers, generators)
    reference: str | None = "tensorflow"
    shape: tuple | None = None  # the input shape the entry point needs, if any
    noise_shape: tuple | None = None  # the noise shape it applies by itself, if any
    dtypes: tuple = FLOAT_DTYPES
    notes: str = ""
    kind: str = "dropout"  # "dropout", "alpha", "gaussian", "drop_path" or "dropblock"
    keep_dtype: str | None = None  # dtype of the uniform, when not the input's
    backend: str = "tensorflow"  # the framework it runs on (dropout_stats.backends)
    # drop_path / dropblock: the declared variant, (name, value) pairs passed to
    # verify_drop_path / verify_dropblock (block_size among them for dropblock)
    options: tuple = ()

    def seed_framework(self, seed: int) -> None:
        """A stateful entry point's global generator, seeded before it is made."""
        if not self.stateful:
            return
        if self.backend == "tensorflow":
            import tensorflow as tf

            tf.random.set_seed(seed)
        elif self.backend == "torch":
            import torch

            torch.manual_seed(seed)

    @property
    def name(self) -> str:
        return f"{self.entry_point}[{self.mode}]"

    def verify(self, *, rate, dtype="float32", seed=0, **kwargs):
        from ..battery import verify, verify_alpha_dropout, verify_gaussian_dropout

        exact_scale = kwargs.pop("exact_scale", False)  # plain dropout's scale formulas only
        self.seed_framework(seed)
        fn = self.make(seed)
        fn.__qualname__ = self.name
        kwargs.setdefault("shape", self.shape)
        kwargs.setdefault("backend", self.backend)
        if self.kind in ("drop_path", "dropblock"):
            return self._verify_structured(fn, rate=rate, dtype=dtype, seed=seed, **kwargs)
        if self.kind == "gaussian":
            kwargs.pop("noise_shape", None)
            return verify_gaussian_dropout(fn, rate=rate, dtype=dtype, seed=seed, **kwargs)
        if self.kind == "alpha":
            kwargs.setdefault("noise_shape", self.noise_shape)
            return verify_alpha_dropout(fn, rate=rate, dtype=dtype, seed=seed, keep_dtype=self.keep_dtype, **kwargs)
        kwargs.setdefault("noise_shape", self.noise_shape)
        return verify(
            fn,
            rate=rate,
            dtype=dtype,
            seed=seed,
            stateful=self.stateful,
            reference=self.reference,
            exact_scale=exact_scale,
            **kwargs,
        )

    def _verify_structured(self, fn, *, rate, **kwargs):
        """verify_drop_path / verify_dropblock with the declared variant (``options``)."""
        from ..battery import verify_drop_path, verify_dropblock

        kwargs.pop("noise_shape", None)
        shape = kwargs.pop("shape")
        options = dict(self.options, **kwargs)
        if not options.get("layer"):  # a layer is stateful by itself
            options.setdefault("stateful", self.stateful)
        if self.kind == "drop_path":
            return verify_drop_path(fn, rate, shape, **options)
        block_size = options.pop("block_size")
        return verify_dropblock(fn, rate, block_size, shape, **options)


def installed_frameworks() -> list[str]:
    """The frameworks whose packages import here; keras-jax only with Keras 3 (Keras 2 runs on
    TensorFlow alone)."""
    out = []
    for name, (_, packages) in FRAMEWORKS.items():
        if all(importlib.util.find_spec(p) is not None for p in packages):
            if name == "keras-jax" and not _keras3():
                continue
            out.append(name)
    return out


def _keras3() -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return int(version("keras").split(".")[0]) >= 3
    except (PackageNotFoundError, ValueError):
        return False


def adapters(*, framework: str = "tensorflow", modes=None) -> list[Adapter]:
    """The adapters of ``framework`` in this installation (all its modes unless named)."""
    if framework not in FRAMEWORKS:
        raise ValueError(f"framework ({framework!r}) must be one of {', '.join(repr(f) for f in FRAMEWORKS)}")
    try:
        module = importlib.import_module(FRAMEWORKS[framework][0], __name__)
        return module.adapters(modes=modes or module.MODES)
    except ImportError as exc:  # not installed, or installed without what it needs
        raise ValueError(
            f'framework ({framework!r}) is not installed (or not whole): pip install "dropout_stats[{framework}]" '
            f"({type(exc).__name__}: {exc})"
        ) from None


def layer_factories(dtype: str = "float32", *, framework: str = "tensorflow") -> list:
    """(name, make_layer(rate, seed)) for verify_layer: every dropout layer class of ``framework``
    (tensorflow: Keras's and tf_keras's; torch: torch.nn's modules)."""
    module = importlib.import_module(FRAMEWORKS[framework][0], __name__)
    return module.layer_factories(dtype)


def recompute_agreement(framework: str = "tensorflow", *, rate: float = 0.2, shape=(256, 1024)) -> dict:
    """Under activation checkpointing, does the backward pass use the forward's mask?  For each
    dropout entry point of ``framework`` (eager) and each rematerialising wrapper of its backend
    (tf.recompute_grad, keras.remat, torch.utils.checkpoint with and without preserve_rng_state,
    jax.checkpoint): the agreement between the positions with a non-zero gradient and the kept
    positions of the same call, with exact binomial p-values against the same mask (agreement 1:
    any difference gives 0) and against independent masks (p^2 + q^2).  One draw per unit (a
    noise shape broadcasts a draw), so the positions compared are independent.
    Reproduce (torch): y = checkpoint(lambda a: F.dropout(a, 0.2), x, use_reentrant=False,
    preserve_rng_state=False); compare x.grad != 0 after y.sum().backward() with y != 0."""
    import numpy as np

    from ..backends import get_backend
    from ..binomial import rate_test

    independent = (1 - rate) ** 2 + rate**2
    out = {}
    for adapter in adapters(framework=framework, modes=("eager",)):
        if adapter.kind != "dropout":
            continue
        backend = get_backend(adapter.backend)
        ashape = adapter.shape or shape
        x_np = np.random.default_rng(0).uniform(0.5, 2.0, ashape).astype(np.float32)
        noise = adapter.noise_shape
        for wrapper in backend.recompute_wrappers:
            adapter.seed_framework(0)
            fn = adapter.make(0)
            seed = backend.seed((0, 1))
            body = (
                (lambda t, fn=fn, noise=noise: fn(t, rate, noise_shape=noise))
                if adapter.stateful
                else (lambda t, fn=fn, seed=seed, noise=noise: fn(t, rate, seed, noise_shape=noise))
            )
            key = f"{adapter.entry_point} / {wrapper}"
            try:
                y, g = backend.vjp(
                    backend.recompute(body, wrapper), backend.native(x_np), backend.native(np.ones_like(x_np))
                )
                if g is None or isinstance(g, str):
                    raise RuntimeError(g or "no gradient")
                y, g = backend.to_numpy(y), backend.to_numpy(g)
            except Exception as exc:  # noqa: BLE001 - a wrapper that cannot run is itself a fact
                out[key] = f"failed: {type(exc).__name__}: {str(exc)[:80]}"
                continue
            unit = tuple(slice(0, 1) if d == 1 else slice(None) for d in (noise or g.shape))
            agree = int(np.count_nonzero((y[unit] != 0) == (g[unit] != 0)))
            n = g[unit].size
            out[key] = {
                "agreement": round(agree / n, 6),
                "p_vs_same_mask": 1.0 if agree == n else 0.0,
                "p_vs_independent": rate_test(agree, n, independent).pvalue,
            }
    return out


__all__ = [
    "Adapter",
    "FRAMEWORKS",
    "LIBRARIES",
    "adapters",
    "installed_frameworks",
    "layer_factories",
    "recompute_agreement",
]
