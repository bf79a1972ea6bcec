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


def bernoulli_dropout(x, rate, generator, noise_shape=None):
    """F.dropout's computation with a generator of its own (the stateless contract): the mask
    ``bernoulli_(1 - rate)`` in x's dtype, kept values ``x * fl(1/(1 - rate))`` in x's dtype."""
    noise = torch.empty_like(x).bernoulli_(1.0 - rate, generator=generator)
    return x * noise * torch.tensor(1.0 / (1.0 - rate), dtype=x.dtype)


def _stateless(seed):
    return bernoulli_dropout


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
    if "eager" in modes:  # the reference: torch's stream from a generator, bit for bit
        out.append(
            Adapter(
                "torch bernoulli_ dropout (generator)",
                "eager",
                False,
                _stateless,
                reference="torch",
                backend="torch",
                notes="empty_like(x).bernoulli_(1 - rate, generator), as F.dropout",
            )
        )
    for mode in modes:
        out.append(
            Adapter(
                "torch.nn.functional.dropout",
                mode,
                True,
                _functional(mode),
                reference=None,
                backend="torch",
                dtypes=("float32",) if mode == "compile" else ("float16", "bfloat16", "float32", "float64"),
            )
        )
        if mode != "eager":
            continue
        out.append(Adapter("torch.nn.Dropout", mode, True, _module("Dropout"), reference=None, backend="torch"))
        for dims in (1, 2, 3):  # one draw per (batch, channel): few elements per unit
            shape = (64, 64) + (2,) * dims
            out.append(
                Adapter(
                    f"torch.nn.Dropout{dims}d",
                    mode,
                    True,
                    _module(f"Dropout{dims}d"),
                    reference=None,
                    shape=shape,
                    noise_shape=(64, 64) + (1,) * dims,
                    backend="torch",
                    notes="drops whole channels: one draw per (batch, channel)",
                )
            )
        out.append(
            Adapter(
                "torch.nn.AlphaDropout",
                mode,
                True,
                _module("AlphaDropout"),
                reference=None,
                kind="alpha",
                backend="torch",
                notes="dropped positions hold a*alpha'+b",
            )
        )
        out.append(
            Adapter(
                "torch.nn.FeatureAlphaDropout",
                mode,
                True,
                _module("FeatureAlphaDropout"),
                reference=None,
                kind="alpha",
                shape=(64, 64, 4),
                noise_shape=(64, 64, 1),
                backend="torch",
                notes="alpha dropout of whole channels",
            )
        )
    return out


LAYER_CLASSES = ("Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout")


def layer_factories(dtype: str = "float32") -> list:
    """(name, make_layer(rate, seed)) for verify_layer: torch's dropout modules (they take no seed:
    torch's generator, seeded by verify_layer, draws their masks)."""
    return [
        (f"torch.nn.{name}", lambda rate, seed, name=name: getattr(torch.nn, name)(rate))
        for name in LAYER_CLASSES
        if hasattr(torch.nn, name)
    ]


class ScaledDotProductAttention(torch.nn.Module):
    """``F.scaled_dot_product_attention`` over the heads' slices of (batch, length, heads * dim)
    inputs, as attention modules call it: ``dropout_p`` only in training mode (SDPA itself has no
    mode and drops whenever dropout_p > 0, pytorch/pytorch#124464)."""

    def __init__(self, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads, self.dropout = num_heads, dropout

    def forward(self, query, key, value):
        def heads(t):
            return t.view(t.shape[0], t.shape[1], self.num_heads, -1).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            heads(query), heads(key), heads(value), dropout_p=self.dropout if self.training else 0.0
        )
        return out.transpose(1, 2).reshape(query.shape[0], query.shape[1], -1)


def _torch_dtype(dtype):
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


def multihead_attention(num_heads, key_dim, dropout, seed=None, dtype="float32"):
    """torch.nn.MultiheadAttention (batch first, embed_dim = num_heads * key_dim) for verify_attention."""
    return torch.nn.MultiheadAttention(
        num_heads * key_dim, num_heads, dropout=dropout, batch_first=True, dtype=_torch_dtype(dtype)
    )


def scaled_dot_product_attention(num_heads, key_dim, dropout, seed=None, dtype="float32"):
    """F.scaled_dot_product_attention in a module (ScaledDotProductAttention) for verify_attention."""
    return ScaledDotProductAttention(num_heads, dropout)


multihead_attention.framework = scaled_dot_product_attention.framework = "torch"


def attention_factories() -> list:
    """(name, layer_cls) for verify_attention: torch's attention with dropout on the probabilities."""
    return [
        ("torch.nn.MultiheadAttention", multihead_attention),
        ("torch.nn.functional.scaled_dot_product_attention", scaled_dot_product_attention),
    ]
