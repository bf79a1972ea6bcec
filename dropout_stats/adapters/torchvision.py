"""torchvision's structured dropout (``torchvision.ops``), each declared with the contract its
source implements: ``stochastic_depth`` in modes "row" (one decision per sample) and "batch" (one
per call) and the ``StochasticDepth`` module (verify_drop_path), ``DropBlock2d`` and
``DropBlock3d`` (verify_dropblock's default contract: valid centres only, square blocks, a mask
per (sample, channel), kept values ``x * numel / (1e-6 + count)`` over the whole tensor, even
blocks refused).

torchvision sums the mask in x's dtype: in float16 the count overflows once more than 65,504
positions are kept and the whole output is zero (the float16 row of DropBlock2d on (32, 16, 14,
14) shows it); in bfloat16 the count has 8 significant bits.  PyPI's Linux torchvision is a CUDA
build: beside a CPU torch it imports through ``_torchvision_import`` (its detection ops do not
load; these ops are pure Python).
"""

from __future__ import annotations

from ._torchvision_import import import_torchvision

import_torchvision()

import torchvision  # noqa: E402, F401 - the version the audit reports
from torchvision.ops import DropBlock2d, DropBlock3d, StochasticDepth, stochastic_depth  # noqa: E402

from . import Adapter  # noqa: E402

MODES = ("eager",)
SHAPE = (32, 16, 14, 14)  # (N, C, H, W)
SHAPE_3D = (16, 8, 8, 8, 8)  # (N, C, D, H, W)
SHAPE_BATCH = (8, 16, 4, 4)  # mode "batch": one decision per call, ~8,300 calls: small calls
BLOCK, BLOCK_3D = 7, 3
DTYPES = ("float32", "bfloat16")


def _stochastic_depth(mode):
    def make(seed):
        def fn(x, rate):
            return stochastic_depth(x, rate, mode, training=True)

        return fn

    return make


def _layer(cls, *args):
    def make(seed):  # layer=True: make_layer(rate, seed); torch's generator draws the masks
        return lambda rate, seed=None: cls(rate, *args)

    return make


def adapters(*, modes=MODES) -> list[Adapter]:
    if "eager" not in modes:
        return []

    def adapter(name, make, kind, notes, shape=SHAPE, dtypes=DTYPES, **declared):
        return Adapter(
            name,
            "eager",
            True,
            make,
            reference=None,
            shape=shape,
            dtypes=dtypes,
            notes=notes,
            kind=kind,
            backend="torch",
            options=tuple(declared.items()),
        )

    return [
        adapter('torchvision stochastic_depth(mode="row")', _stochastic_depth("row"), "drop_path", "", mode="row"),
        adapter(
            'torchvision stochastic_depth(mode="batch")',
            _stochastic_depth("batch"),
            "drop_path",
            "one decision per call",
            shape=SHAPE_BATCH,
            mode="batch",
        ),
        adapter(
            'torchvision StochasticDepth(mode="row")',
            _layer(StochasticDepth, "row"),
            "drop_path",
            "a module: train() and eval()",
            mode="row",
            layer=True,
        ),
        adapter(
            "torchvision DropBlock2d",
            _layer(DropBlock2d, BLOCK),
            "dropblock",
            "valid centres, a mask per (sample, channel); the kept count is summed in x's dtype: in float16 "
            "more than 65,504 kept positions overflow it to inf and zero the whole output",
            dtypes=("float16", "bfloat16", "float32"),  # float16: the count overflows
            block_size=BLOCK,
            layer=True,
        ),
        adapter(
            "torchvision DropBlock3d",
            _layer(DropBlock3d, BLOCK_3D),
            "dropblock",
            "3-D blocks",
            shape=SHAPE_3D,
            block_size=BLOCK_3D,
            layer=True,
        ),
    ]


def layer_factories(dtype: str = "float32") -> list:
    return []


__all__ = ["adapters", "layer_factories"]
