"""timm's structured dropout, each declared with the variant its source implements: ``drop_path``
and ``DropPath`` (stochastic depth, verify_drop_path: one decision per sample) and ``DropBlock2d``
(verify_dropblock) in its default and documented modes.

The DropBlock contract changed in timm 1.0.23 (huggingface/pytorch-image-models#2620), so the
declaration follows the installed release:

* >= 1.0.23: block centres anywhere with the gamma derived for valid centres (so the realized drop
  fraction exceeds ``drop_prob``: 0.209 at 0.1 on 14x14 with block 7), blocks clipped per axis,
  even blocks asymmetric, one mask per sample shared by the channels (``couple_channels=False``:
  per channel), kept values ``numel / (count + 1e-7)`` (``scale_by_keep=False``: unscaled);
* <= 1.0.22: ``fast=True`` (default) centres anywhere, per channel, eps 1e-6; ``fast=False`` valid
  centres, eps 1e-7, and ``batchwise=True`` one mask for the whole batch.  Its valid-centre mask is
  scrambled on non-square maps (a (W, H) grid reshaped to (H, W)): the 7x14 row audits that.

``with_noise=True`` puts N(0, 1) noise in the dropped places instead of zeros: not a dropout
contract, not audited.  ``drop_path(x, p)`` with its default ``training=False`` returns x: the
rows call it with ``training=True``.
"""

from __future__ import annotations

from ._torchvision_import import import_torchvision

import_torchvision()  # timm imports torchvision where it is installed: before the first import

import timm  # noqa: E402
from timm.layers import DropBlock2d, DropPath, drop_path  # noqa: E402

from . import Adapter  # noqa: E402

MODES = ("eager",)
SHAPE = (32, 16, 14, 14)  # (N, C, H, W): a ResNet stage-3 map, the speed reference
BLOCK = 7  # DropBlock2d's default block_size
DTYPES = ("float32", "bfloat16")


def _release() -> tuple:
    return tuple(int(p) for p in timm.__version__.split("+")[0].split(".")[:3] if p.isdigit())


def _drop_path(seed):
    def fn(x, rate):
        return drop_path(x, rate, training=True)

    return fn


def _layer(cls, *args, **kw):
    def make(seed):  # verify_drop_path / verify_dropblock with layer=True: make_layer(rate, seed)
        return lambda rate, seed=None: cls(rate, *args, **kw)

    return make


def _drop_block_layer(**kw):
    return _layer(DropBlock2d, BLOCK, **kw)


def _dropblock(name, make, notes, shape=SHAPE, **declared) -> Adapter:
    return Adapter(
        name,
        "eager",
        True,
        make,
        reference=None,
        shape=shape,
        dtypes=DTYPES,
        notes=notes,
        kind="dropblock",
        backend="torch",
        options=tuple(dict(block_size=BLOCK, layer=True, **declared).items()),
    )


def _dropblock_adapters() -> list:
    if _release() >= (1, 0, 23):
        common = dict(centres="all", block_clip="per_axis", even="asymmetric", eps=1e-7)
        return [
            _dropblock(
                "timm DropBlock2d",
                _drop_block_layer(),
                "default: centres anywhere, channels coupled",
                shared_across_channels=True,
                **common,
            ),
            _dropblock(
                "timm DropBlock2d(couple_channels=False)",
                _drop_block_layer(couple_channels=False),
                "a mask per channel",
                **common,
            ),
            _dropblock(
                "timm DropBlock2d(scale_by_keep=False)",
                _drop_block_layer(scale_by_keep=False),
                "kept values unscaled",
                shared_across_channels=True,
                normalization="none",
                **common,
            ),
        ]
    # timm <= 1.0.22: square blocks, even block sizes fail inside max_pool2d
    old = dict(block_clip="square", even="reject")
    return [
        _dropblock(
            "timm DropBlock2d",
            _drop_block_layer(),
            "default (fast=True): centres anywhere, a mask per channel",
            centres="all",
            eps=1e-6,
            **old,
        ),
        _dropblock(
            "timm DropBlock2d(fast=False)",
            _drop_block_layer(fast=False),
            "valid centres",
            centres="valid",
            eps=1e-7,
            **old,
        ),
        _dropblock(
            "timm DropBlock2d(fast=False) 7x14",
            _drop_block_layer(fast=False),
            "valid centres on a non-square map; this release builds them on a (W, H) grid reshaped to (H, W)",
            shape=(32, 16, 7, 14),
            centres="valid",
            eps=1e-7,
            **old,
        ),
        _dropblock(
            "timm DropBlock2d(fast=False, batchwise=True)",
            _drop_block_layer(fast=False, batchwise=True),
            "valid centres, one mask for the batch",
            shape=(2, 64, 14, 14),  # a call's maps are its channels: two samples, many channels
            centres="valid",
            per_sample=False,
            eps=1e-7,
            **old,
        ),
    ]


def adapters(*, modes=MODES) -> list[Adapter]:
    if "eager" not in modes:
        return []

    def path(name, make, notes, **declared):
        return Adapter(
            name,
            "eager",
            True,
            make,
            reference=None,
            shape=SHAPE,
            dtypes=DTYPES,
            notes=notes,
            kind="drop_path",
            backend="torch",
            options=tuple(dict(mode="row", **declared).items()),
        )

    return [
        path("timm drop_path", _drop_path, "called with training=True (its default is False)"),
        path("timm DropPath", _layer(DropPath), "a module: train() and eval()", layer=True),
        path(
            "timm DropPath(scale_by_keep=False)",
            _layer(DropPath, scale_by_keep=False),
            "kept samples unscaled",
            layer=True,
            scale_by_keep=False,
        ),
        *_dropblock_adapters(),
    ]


def layer_factories(dtype: str = "float32") -> list:
    return []


__all__ = ["adapters", "layer_factories"]
