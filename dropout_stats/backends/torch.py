"""The PyTorch backend: ``fn(x, rate, noise_shape=None)`` under the stateful contract, the battery
seeding torch's generator (``torch.manual_seed``) before the first call; or ``fn(x, rate,
generator, noise_shape=None)`` under the stateless one, ``generator`` a ``torch.Generator`` seeded
from the seed pair.

Model of a correct implementation (measured on torch 2.13 and 2.14, CPU): the mask is
``bernoulli_(1 - rate)`` drawn in double precision, so the keep probability is 1 - rate in every
dtype; kept values are ``x * fl(1/(1 - rate))`` in every dtype.  Reference stream ``"torch"``
(stateless contract): ``empty(shape, dtype).bernoulli_(1 - rate, generator)``, bit for bit, which
is the mask F.dropout draws from the same generator state.  ``F.dropout`` has no noise shape: the
battery does not probe one (Dropout1d/2d/3d draw per channel by themselves).  Gradients through
autograd; rematerialisation through ``torch.utils.checkpoint`` with and without
``preserve_rng_state``.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from ..precision import ScaleFormula, expected_scale
from . import Backend, bfloat16_dtype


class TorchBackend(Backend):
    name = "torch"
    references = ("torch",)
    default_reference = "torch"
    has_noise_shape = False
    differentiable = True
    seed_form = "a torch.Generator seeded from the pair"
    recompute_wrappers = ("torch.utils.checkpoint", "torch.utils.checkpoint(preserve_rng_state=False)")

    def __init__(self):
        import torch

        self.torch = torch

    def native(self, x: np.ndarray):
        torch = self.torch
        if x.dtype.name == "bfloat16":
            return torch.from_numpy(np.ascontiguousarray(x).view(np.int16)).view(torch.bfloat16)
        return torch.from_numpy(np.ascontiguousarray(x))

    def reshape(self, x, shape):
        return x.reshape(tuple(shape))

    def seed(self, pair):
        """A CPU generator for the pair.  torch's CPU generator keeps only the low 32 bits of
        manual_seed's argument (mt19937 seeded from a uint32: manual_seed(1) and
        manual_seed(1 + 2**32) give one stream), so the pair is packed into 32 bits:
        (s0 * 2^24 + s1) mod 2^32, one-to-one over the pairs of a battery run (seeds s to s + 5,
        fewer than 2^24 calls); seeds 256 apart share streams."""
        return self.torch.Generator().manual_seed((int(pair[0]) * (1 << 24) + int(pair[1])) % (1 << 32))

    def to_numpy(self, y) -> np.ndarray:
        torch = self.torch
        if not isinstance(y, torch.Tensor):
            return np.asarray(y)
        y = y.detach().cpu()
        if y.dtype == torch.bfloat16:  # numpy has no bfloat16: through the bits
            return y.view(torch.int16).numpy().view(bfloat16_dtype())
        return y.numpy()

    def keep_fraction(self, rate, dtype, reference) -> Fraction:
        return Fraction(1.0 - rate)

    def keep_note(self, rate, dtype, reference) -> str:
        return "torch draws bernoulli(1 - rate) in double precision"

    def scale_formulas(self, rate, dtype) -> list:
        return [expected_scale(rate, dtype)]

    def reference_keep(self, shape, seed_pair, dtype, rate, reference) -> np.ndarray:
        """``torch.empty(shape, dtype).bernoulli_(1 - rate, generator)`` with the generator seeded
        from the pair: F.dropout's own mask for that generator state, in every dtype (measured on
        torch 2.13: F.dropout after torch.manual_seed(s) keeps exactly these positions)."""
        torch = self.torch
        noise = torch.empty(tuple(shape), dtype=getattr(torch, dtype))
        return noise.bernoulli_(1.0 - rate, generator=self.seed(seed_pair)).ne(0).numpy()

    def vjp(self, f, x, cotangent):
        torch = self.torch
        x = x.detach().clone().requires_grad_(True)
        y = f(x)
        if not isinstance(y, torch.Tensor) or not y.requires_grad:
            return y, None
        try:
            (g,) = torch.autograd.grad(y, x, grad_outputs=cotangent, allow_unused=True)
        except Exception as exc:  # noqa: BLE001 - reported in the report
            return y, f"{type(exc).__name__}: {exc}"
        return y, g

    def recompute(self, f, wrapper: str):
        from torch.utils.checkpoint import checkpoint

        preserve = wrapper == "torch.utils.checkpoint"
        return lambda t: checkpoint(f, t, use_reentrant=False, preserve_rng_state=preserve)

    def start(self, cfg) -> None:
        """Before the first call of a stateful fn: seed torch's generator."""
        self.torch.manual_seed(cfg.seed)


__all__ = ["TorchBackend", "ScaleFormula"]
