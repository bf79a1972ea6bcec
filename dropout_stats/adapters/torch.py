"""PyTorch's dropout entry points, wrapped to verify()'s stateful contract ``fn(x, rate,
noise_shape=None)`` (the battery seeds torch's generator first): ``F.dropout``, ``nn.Dropout``,
``nn.Dropout1d/2d/3d`` (one draw per channel), ``nn.AlphaDropout``, ``nn.FeatureAlphaDropout``;
eagerly, and ``F.dropout`` under ``torch.compile`` (the first compile takes ~18 s on 2 cores)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import Adapter

MODES = ("eager", "compile")


def _functional(mode):
    def make(seed):
        def body(x, rate, noise_shape=None):
            return F.dropout(x, rate, training=True)
        return torch.compile(body, dynamic=True) if mode == "compile" else body
    return make


def _module(cls_name):
    def make(seed):
        modules = {}

        def fn(x, rate, noise_shape=None):
            if rate not in modules:
                modules[rate] = getattr(torch.nn, cls_name)(rate).train()
            return modules[rate](x)
        return fn
    return make


def adapters(*, modes=MODES) -> list[Adapter]:
    out = []
    for mode in modes:
        out.append(Adapter("torch.nn.functional.dropout", mode, True, _functional(mode), reference=None,
                           backend="torch", dtypes=("float32",) if mode == "compile" else
                           ("float16", "bfloat16", "float32", "float64")))
        if mode != "eager":
            continue
        out.append(Adapter("torch.nn.Dropout", mode, True, _module("Dropout"), reference=None, backend="torch"))
        for dims in (1, 2, 3):  # one draw per (batch, channel): few elements per unit
            shape = (64, 64) + (2,) * dims
            out.append(Adapter(f"torch.nn.Dropout{dims}d", mode, True, _module(f"Dropout{dims}d"), reference=None,
                               shape=shape, noise_shape=(64, 64) + (1,) * dims, backend="torch",
                               notes="drops whole channels: one draw per (batch, channel)"))
        out.append(Adapter("torch.nn.AlphaDropout", mode, True, _module("AlphaDropout"), reference=None,
                           kind="alpha", backend="torch", notes="dropped positions hold a*alpha'+b"))
        out.append(Adapter("torch.nn.FeatureAlphaDropout", mode, True, _module("FeatureAlphaDropout"), reference=None,
                           kind="alpha", shape=(64, 64, 4), noise_shape=(64, 64, 1), backend="torch",
                           notes="alpha dropout of whole channels"))
    return out


def layer_factories(dtype: str = "float32") -> list:
    return []
