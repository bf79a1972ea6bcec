"""Hugging Face transformers: the dropout on the attention probabilities of a standard model,
BERT's self-attention (``BertSelfAttention``), on its eager path (``F.dropout`` on the softmax
probabilities) and its sdpa path (``dropout_p`` of ``F.scaled_dot_product_attention``), both
audited by ``verify_attention``.  transformers has no dropout entry point of its own: ``adapters()``
is empty.

verify_attention reads every probability out through chosen inputs and weights (a query, a key
and a value input); BERT's self-attention takes one ``hidden_states``.  ``bert_self_attention``
gives it hidden states ``[query | key | value]`` side by side (hidden size 3·E, E = heads · S) and
sets its projections to pick each part per head: head h's query and key are that head's slices
of the query and key inputs (zero-padded to BERT's head size 3·S), its value the head's slice of
the value input, so the scores are the probe's ``q · k`` times BERT's scaling and head h's output
columns 0..S-1 are its dropped-or-kept probabilities.  The attention is over the key positions
(the query input is zero-padded to the keys' length, its extra rows dropped from the output); the
module exposes no parameters, so the probe keeps the weights set here.
"""

from __future__ import annotations

from ._torchvision_import import import_torchvision

import_torchvision()  # transformers imports torchvision where it is installed: before the first import

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402, F401 - the version the audit reports
from transformers import BertConfig  # noqa: E402
from transformers.models.bert.modeling_bert import BertSelfAttention  # noqa: E402

MODES = ("eager",)
IMPLEMENTATIONS = ("eager", "sdpa")


def adapters(*, modes=MODES) -> list:
    """transformers ships no dropout entry point of its own (its models use torch's)."""
    return []


def layer_factories(dtype: str = "float32") -> list:
    return []


class BertSelfAttentionProbe(torch.nn.Module):
    """``BertSelfAttention`` (``attn_implementation`` eager or sdpa) called as ``module(query, key,
    value)`` on (batch, length, num_heads * key_dim) inputs, its mode set by ``train()``/``eval()``."""

    def __init__(self, num_heads, key_dim, dropout, attn_implementation, dtype="float32"):
        super().__init__()
        s, e = key_dim, num_heads * key_dim
        config = BertConfig(
            hidden_size=3 * e,
            num_attention_heads=num_heads,
            intermediate_size=4 * e,
            attention_probs_dropout_prob=dropout,
            attn_implementation=attn_implementation,
        )
        attention = BertSelfAttention(config).to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
        self.num_heads, self.key_dim, self.implementation = num_heads, key_dim, attn_implementation
        weights = {name: np.zeros((3 * e, 3 * e)) for name in ("query", "key", "value")}
        for head in range(num_heads):
            rows = slice(head * 3 * s, head * 3 * s + s)  # head h's first S features
            for part, name in enumerate(("query", "key", "value")):
                cols = slice(part * e + head * s, part * e + (head + 1) * s)
                weights[name][rows, cols] = np.eye(s)
        with torch.no_grad():
            for name, w in weights.items():
                layer = getattr(attention, name)
                layer.weight.copy_(torch.from_numpy(w).to(layer.weight.dtype))
                layer.bias.zero_()
        # not a registered submodule: the probe reads a module without parameters as one whose
        # weights are set already
        object.__setattr__(self, "attention", attention)

    def train(self, mode: bool = True):
        self.attention.train(mode)
        return super().train(mode)

    def forward(self, query, key, value):
        b, q, e = query.shape
        length = key.shape[1]
        pad = query.new_zeros((b, length - q, e)) if length > q else None
        query = torch.cat([query, pad], 1) if pad is not None else query[:, :length]
        out, _ = self.attention(torch.cat([query, key, value], -1))
        s = self.key_dim
        heads = out[:, :q].reshape(b, q, self.num_heads, 3 * s)[..., :s]
        return heads.reshape(b, q, self.num_heads * s)


def bert_self_attention(implementation):
    def make(num_heads, key_dim, dropout, seed=None, dtype="float32"):
        return BertSelfAttentionProbe(num_heads, key_dim, dropout, implementation, dtype)

    make.framework = "torch"
    make.__name__ = make.__qualname__ = f"BertSelfAttention_{implementation}"
    return make


def attention_factories() -> list:
    """(name, layer_cls) for verify_attention: BERT's self-attention on each attention path."""
    return [(f"transformers BertSelfAttention [{impl}]", bert_self_attention(impl)) for impl in IMPLEMENTATIONS]
