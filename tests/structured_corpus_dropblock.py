"""A corpus of DropBlock implementations for verify_dropblock: correct ones written several ways,
each declared with the variant parameters it implements, and broken ones, each with the check
that must name its defect.

Correct: torchvision's ``drop_block2d``, ``DropBlock2d`` and ``drop_block3d`` (float32 and
bfloat16, square and non-square maps, a block clipped to the map), timm 1.0.31's ``DropBlock2d``
(default: centres anywhere, channels shared, per-axis clipping, even blocks; and
``couple_channels=False``), and our own in numpy (loops over the block's offsets), torch (a padded
max-pool of centres drawn anywhere) and JAX (a window sum of centres), with the normalizations
``count``, ``count_per_sample``, ``rate`` and ``none``, one mask for the batch, and a gamma given.

Broken: the classes a careful reader of the contracts expects (wrong gamma, wrong anchoring or
block size, wrong normalization, masks shared or not against the declaration, inference
dropping, per-element decisions, wrong scale), each written apart from the correct ones by the
one defect.  Frameworks are imported inside the builders: this module imports with numpy only.

    CORRECT: list[Entry]   every entry must pass
    BROKEN: list[Entry]    every entry must fail, ``fails`` among its failed checks
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

SHAPE = (16, 8, 14, 14)


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    build: Callable  # () -> fn (or make_layer)
    kwargs: dict  # verify_dropblock's arguments besides fn
    fails: str = ""  # the check that must fail (broken entries)
    needs: tuple = ("torch",)

    def verify(self, **extra):
        import dropout_stats as ds

        return ds.verify_dropblock(self.build(), **{**self.kwargs, **extra})


def _torchvision():
    from dropout_stats.adapters._torchvision_import import import_torchvision

    return import_torchvision()


def _timm_drop():
    _torchvision()
    import timm.layers.drop as drop

    return drop


# -- the libraries -------------------------------------------------------------------------
def tv_drop_block2d(block_size, **options):
    def build():
        _torchvision()
        from torchvision.ops import drop_block2d

        def fn(x, rate):
            return drop_block2d(x, rate, block_size, **options)

        fn.__qualname__ = f"drop_block2d_bs{block_size}"
        return fn

    return build


def tv_module(block_size):
    def build():
        _torchvision()
        from torchvision.ops import DropBlock2d

        def make_layer(rate, seed):
            return DropBlock2d(rate, block_size)

        return make_layer

    return build


def tv_drop_block3d(block_size):
    def build():
        _torchvision()
        from torchvision.ops import drop_block3d

        def fn(x, rate):
            return drop_block3d(x, rate, block_size)

        return fn

    return build


def timm_module(block_size, **options):
    def build():
        drop = _timm_drop()

        def make_layer(rate, seed):
            return drop.DropBlock2d(rate, block_size, **options)

        return make_layer

    return build


TIMM = dict(centres="all", shared_across_channels=True, block_clip="per_axis", even="asymmetric", eps=1e-7)


# -- our own ---------------------------------------------------------------------------------
def numpy_dropblock(block_size, *, normalization="count", per_sample=True, gamma_per_rate=None):
    """Centres on the grid where the block fits, blocks stamped offset by offset (float64 scale);
    ``gamma_per_rate``: gamma = that * rate, a formula of its own (declared with ``gamma=``)."""

    def build():
        def fn(x, rate, seed):
            rng = np.random.default_rng(list(seed))
            n, c, h, w = x.shape
            k = min(block_size, h, w)
            g = gamma_per_rate * rate if gamma_per_rate else rate * h * w / (k * k * (h - k + 1) * (w - k + 1))
            grid = (n if per_sample else 1, c, h - k + 1, w - k + 1)
            centres = rng.random(grid) < g
            dropped = np.zeros(grid[:2] + (h, w), bool)
            for i in range(k):
                for j in range(k):
                    dropped[:, :, i : i + h - k + 1, j : j + w - k + 1] |= centres
            keep = np.broadcast_to(~dropped, x.shape)
            xv = x.astype(np.float64)
            if normalization == "count":
                y = xv * (keep.size / (1e-6 + keep.sum()))
            elif normalization == "count_per_sample":
                per = keep.reshape(n, -1)
                y = xv * (per.shape[1] / (1e-6 + per.sum(axis=1))).reshape(n, 1, 1, 1)
            elif normalization == "rate":
                y = xv / (1 - rate)
            else:
                y = xv
            return np.where(keep, y, 0).astype(x.dtype)

        return fn

    return build


def torch_all_centres(block_size, shared=True, batch=False):
    """timm >= 1.0.23's contract written another way: centres drawn by torch.rand anywhere, the
    padded max-pool that covers [s - k//2, s - k//2 + k - 1], the count in float64."""

    def build():
        import torch
        import torch.nn.functional as F

        def fn(x, rate):
            n, c, h, w = x.shape
            kh, kw = min(block_size, h), min(block_size, w)
            g = rate * h * w / (kh * kw * (h - kh + 1) * (w - kw + 1))
            centres = (torch.rand(1 if batch else n, 1 if shared else c, h, w) < g).float()
            ah, aw = kh // 2, kw // 2
            padded = F.pad(centres, (kw - 1 - aw, aw, kh - 1 - ah, ah))
            dropped = F.max_pool2d(padded, (kh, kw), stride=1) > 0
            keep = (~dropped).expand(n, c, h, w)
            scale = keep.numel() / (keep.sum(dtype=torch.float64).item() + 1e-7)
            return x * keep.to(x.dtype) * scale

        return fn

    return build


def jax_dropblock(block_size):
    """Valid centres from jax.random.bernoulli, blocks by a window sum (stateless, a JAX key)."""

    def build():
        import jax
        import jax.numpy as jnp

        @jax.jit
        def _mask(key, g, x):
            n, c, h, w = x.shape
            k = min(block_size, h, w)
            centres = jax.random.bernoulli(key, g, (n, c, h - k + 1, w - k + 1)).astype(jnp.int32)
            padded = jnp.pad(centres, ((0, 0), (0, 0), (k - 1, k - 1), (k - 1, k - 1)))
            return jax.lax.reduce_window(padded, 0, jax.lax.add, (1, 1, k, k), (1, 1, 1, 1), "VALID") == 0

        def fn(x, rate, key):
            n, c, h, w = x.shape
            k = min(block_size, h, w)
            keep = _mask(key, rate * h * w / (k * k * (h - k + 1) * (w - k + 1)), x)
            scale = keep.size / (keep.sum(dtype=jnp.float32) + 1e-6)
            return jnp.where(keep, x * scale.astype(x.dtype), 0).astype(x.dtype)

        return fn

    return build


def _kw(rate=0.1, block_size=7, shape=SHAPE, **kw):
    return dict(rate=rate, block_size=block_size, shape=shape, **kw)


def correct() -> list:
    return [
        Entry("torchvision drop_block2d", tv_drop_block2d(7), _kw(stateful=True)),
        Entry("torchvision drop_block2d bs 5 rate 0.2", tv_drop_block2d(5), _kw(0.2, 5, stateful=True)),
        Entry("torchvision drop_block2d bfloat16", tv_drop_block2d(5), _kw(0.2, 5, stateful=True, dtype="bfloat16")),
        Entry("torchvision drop_block2d 7x14 bs 9", tv_drop_block2d(9), _kw(0.2, 9, (16, 8, 7, 14), stateful=True)),
        Entry("torchvision DropBlock2d", tv_module(5), _kw(0.1, 5, layer=True)),
        Entry("torchvision drop_block3d", tv_drop_block3d(3), _kw(0.1, 3, (8, 4, 8, 8, 8), stateful=True)),
        Entry("timm 1.0.31 DropBlock2d", timm_module(7), _kw(layer=True, **TIMM)),
        Entry("timm 1.0.31 DropBlock2d even bs 4", timm_module(4), _kw(0.1, 4, layer=True, **TIMM)),
        Entry(
            "timm 1.0.31 DropBlock2d couple_channels=False",
            timm_module(5, couple_channels=False),
            _kw(0.2, 5, layer=True, **dict(TIMM, shared_across_channels=False)),
        ),
        Entry("timm 1.0.31 DropBlock2d bfloat16", timm_module(5), _kw(0.2, 5, layer=True, dtype="bfloat16", **TIMM)),
        Entry("torchvision drop_block2d inplace=True", tv_drop_block2d(5, inplace=True), _kw(0.1, 5, stateful=True)),
        Entry("numpy float32", numpy_dropblock(5), _kw(0.2, 5), needs=()),
        Entry(
            "numpy float64 count_per_sample",
            numpy_dropblock(3, normalization="count_per_sample"),
            _kw(0.1, 3, dtype="float64", normalization="count_per_sample"),
            needs=(),
        ),
        Entry(
            "numpy rate normalization",
            numpy_dropblock(5, normalization="rate"),
            _kw(0.2, 5, normalization="rate"),
            needs=(),
        ),
        Entry(
            "numpy one mask per batch, unscaled",
            numpy_dropblock(3, per_sample=False, normalization="none"),
            _kw(0.1, 3, (8, 16, 14, 14), per_sample=False, normalization="none"),
            needs=(),
        ),
        Entry("numpy gamma given", numpy_dropblock(5, gamma_per_rate=0.1), _kw(0.2, 5, gamma=0.02), needs=()),
        Entry("torch own, centres anywhere, shared", torch_all_centres(5), _kw(0.1, 5, stateful=True, **TIMM)),
        Entry("jax own", jax_dropblock(5), _kw(0.1, 5), needs=("jax",)),
    ]


# -- broken --------------------------------------------------------------------------------
def _tv_gamma(rate, h, w, k):
    return rate * h * w / (k * k * (h - k + 1) * (w - k + 1))


def torch_valid(block_size, *, gamma=_tv_gamma, shift=0, scale=None, fixed_seed=None, in_eval=False):
    """torchvision's drop_block2d rewritten, with one defect: ``gamma`` a wrong formula, ``shift``
    the centre grid padded unevenly (blocks one row and column off), ``scale(keep, rate)`` a wrong
    normalization, ``fixed_seed`` a generator re-seeded on every call; ``in_eval`` makes a module
    that drops in eval() too."""

    def mask(x, rate):
        import torch
        import torch.nn.functional as F

        n, c, h, w = x.shape
        k = min(block_size, h, w)
        gen = torch.Generator().manual_seed(fixed_seed) if fixed_seed is not None else None
        noise = torch.empty((n, c, h - k + 1, w - k + 1)).bernoulli_(gamma(rate, h, w, k), generator=gen)
        a = k // 2
        noise = F.pad(noise, [a + shift, a - shift, a + shift, a - shift])
        return 1 - F.max_pool2d(noise, (k, k), stride=1, padding=a)

    def apply(x, rate):
        keep = mask(x, rate).to(x.dtype)
        s = keep.numel() / (1e-6 + keep.sum()) if scale is None else scale(keep, rate)
        return x * keep * s

    def build():
        if not in_eval:
            return apply
        import torch

        class AlwaysDrops(torch.nn.Module):
            def __init__(self, rate):
                super().__init__()
                self.rate = rate

            def forward(self, x):
                return apply(x, self.rate) if self.rate else x  # ignores self.training

        return lambda rate, seed: AlwaysDrops(rate)

    return build


def numpy_blocks(
    block_size, *, size=None, anchor=None, centres="valid", per_element=False, rate_floor=0.0, global_rng=False
):
    """Our numpy DropBlock with one defect: blocks of ``size`` with the gamma of ``block_size``,
    blocks anchored at ``anchor`` rows before the centre, ``per_element`` drops at the geometry's
    fraction, ``rate_floor`` a rate never below it, ``global_rng`` numpy's global generator."""

    def build():
        def fn(x, rate, seed):
            rng = np.random if global_rng else np.random.default_rng(list(seed))
            rate = max(rate, rate_floor)
            n, c, h, w = x.shape
            k = min(block_size, h, w)
            b = k if size is None else size
            a = b // 2 if anchor is None else anchor
            g = _tv_gamma(rate, h, w, k)
            lo, hi = (a, h - b + a) if centres == "valid" else (0, h - 1)
            if per_element:
                from dropout_stats.battery.dropblock_geometry import Geometry

                f = Geometry((h, w), (k, k), centres, g).mean() / (h * w)
                dropped = rng.random(x.shape) < f
            else:
                centre = np.zeros(x.shape, bool)
                centre[:, :, lo : hi + 1, lo : hi + 1] = rng.random((n, c, hi - lo + 1, hi - lo + 1)) < g
                dropped = np.zeros(x.shape, bool)
                for s_i, s_j in zip(*np.nonzero(centre.any(axis=(0, 1))), strict=True):
                    hit = centre[:, :, s_i, s_j]
                    rows = slice(max(0, s_i - a), max(0, s_i - a + b))
                    cols = slice(max(0, s_j - a), max(0, s_j - a + b))
                    dropped[:, :, rows, cols] |= hit[:, :, None, None]
            keep = ~dropped
            return np.where(keep, x * (keep.size / (1e-6 + keep.sum())), 0).astype(x.dtype)

        return fn

    return build


def numpy_fixed_seed(block_size):
    """Our numpy DropBlock drawing from one fixed seed, whatever seed it is given."""
    inner = numpy_dropblock(block_size)()

    def build():
        def fn(x, rate, seed):
            return inner(x, rate, (7, 7))

        return fn

    return build


def training_ignored(block_size):
    """A layer called as layer(x, training=...) that drops whatever the flag says."""
    inner = numpy_dropblock(block_size)()

    class Layer:
        def __init__(self, rate, seed):
            self.rate, self.seed, self.calls = rate, seed, 0

        def __call__(self, x, training=None):
            self.calls += 1
            return inner(x, self.rate, (self.seed, self.calls)) if self.rate else x

    def build():
        return Layer

    return build


def _bf16_scale(keep, rate):
    import torch

    return (keep.numel() / (1e-6 + keep.sum(dtype=torch.float64))).to(torch.bfloat16).to(keep.dtype)


def broken() -> list:
    t = dict(stateful=True)
    return [
        Entry("gamma = rate", torch_valid(7, gamma=lambda r, h, w, k: r), _kw(**t), "drop_fraction"),
        Entry(
            "gamma with k, not k^2",
            torch_valid(5, gamma=lambda r, h, w, k: _tv_gamma(r, h, w, k) * k),
            _kw(0.1, 5, **t),
            "drop_fraction",
        ),
        Entry(
            "gamma without the valid-area factor",
            torch_valid(7, gamma=lambda r, h, w, k: r / (k * k)),
            _kw(**t),
            "drop_fraction",
        ),
        Entry("timm 1.0.31 declared as torchvision", timm_module(7), _kw(layer=True), "block_union"),
        Entry("centres anywhere declared valid", torch_all_centres(5, shared=False), _kw(0.1, 5, **t), "block_union"),
        Entry(
            "top-left anchored blocks declared centred",
            numpy_blocks(5, anchor=0, centres="all"),
            _kw(0.1, 5, centres="all"),
            "block_union",
            needs=(),
        ),
        Entry("centre grid shifted by one", torch_valid(5, shift=1), _kw(0.1, 5, **t), "block_union"),
        Entry("blocks smaller than declared", numpy_blocks(7, size=5), _kw(), "block_union", needs=()),
        Entry("blocks larger than declared", numpy_blocks(5, size=7), _kw(0.2, 5), "span_independence", needs=()),
        Entry("per-element drops", numpy_blocks(5, per_element=True), _kw(0.2, 5), "block_union", needs=()),
        Entry(
            "count per sample declared whole",
            numpy_dropblock(5, normalization="count_per_sample"),
            _kw(0.2, 5),
            "normalization",
            needs=(),
        ),
        Entry(
            "1 / (1 - rate) declared count",
            torch_valid(5, scale=lambda keep, r: 1 / (1 - r)),
            _kw(0.2, 5, **t),
            "normalization",
        ),
        Entry(
            "unnormalized declared count", torch_valid(5, scale=lambda keep, r: 1.0), _kw(0.2, 5, **t), "normalization"
        ),
        Entry("scale in bfloat16 for float32", torch_valid(5, scale=_bf16_scale), _kw(0.2, 5, **t), "normalization"),
        Entry(
            "scale 0.1% off",
            torch_valid(5, scale=lambda keep, r: 1.001 * keep.numel() / (1e-6 + keep.sum())),
            _kw(0.2, 5, **t),
            "normalization",
        ),
        Entry(
            "channels shared declared per channel",
            torch_all_centres(5, shared=True),
            _kw(0.1, 5, **t, **dict(TIMM, shared_across_channels=False)),
            "channel_independence",
        ),
        Entry(
            "channels apart declared shared",
            timm_module(5, couple_channels=False),
            _kw(0.2, 5, layer=True, **TIMM),
            "channels_shared",
        ),
        Entry(
            "one mask per batch declared per sample",
            numpy_dropblock(3, per_sample=False),
            _kw(0.1, 3),
            "sample_independence",
            needs=(),
        ),
        Entry("the same mask every call", torch_valid(5, fixed_seed=1234), _kw(0.2, 5, **t), "call_independence"),
        Entry(
            "the same mask every call (numpy, seed ignored)",
            numpy_fixed_seed(5),
            _kw(0.2, 5),
            "call_independence",
            needs=(),
        ),
        Entry(
            "one mask per batch declared per sample (torch)",
            torch_all_centres(5, shared=False, batch=True),
            _kw(0.1, 5, **t, **dict(TIMM, shared_across_channels=False)),
            "sample_independence",
        ),
        Entry(
            "drops at inference (training flag ignored)",
            training_ignored(5),
            _kw(0.2, 5, layer=True),
            "inference_identity",
            needs=(),
        ),
        Entry("drops at inference", torch_valid(5, in_eval=True), _kw(0.2, 5, layer=True), "inference_identity"),
        Entry("drops at rate 0", numpy_blocks(5, rate_floor=0.05), _kw(0.2, 5), "rate_zero_identity", needs=()),
        Entry("ignores the seed", numpy_blocks(5, global_rng=True), _kw(0.2, 5), "seed_determinism", needs=()),
        Entry(
            "torchvision declared as timm (centres anywhere)",
            tv_drop_block2d(5),
            _kw(0.2, 5, **t, **dict(TIMM, shared_across_channels=False)),
            "drop_fraction",
        ),
        Entry(
            "torchvision float16: the kept count overflows",
            tv_drop_block2d(7),
            _kw(shape=(32, 16, 14, 14), dtype="float16", **t),
            "drop_fraction",
        ),
    ]
