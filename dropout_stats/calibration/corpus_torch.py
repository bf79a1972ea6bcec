"""Deliberately broken PyTorch dropout modules (imports torch, not TensorFlow): one defect of the
training flag each, for verify_layer, and one defect each in attention dropout, for
verify_attention.  tests/test_torch.py checks that each fails the check named with it and that
the control (``correct``) passes."""

import torch
import torch.nn.functional as F


class _Drop(torch.nn.Module):
    def __init__(self, p):
        super().__init__()
        self.p = p


class Correct(_Drop):
    """F.dropout with the module's own flag"""

    def forward(self, x):
        return F.dropout(x, self.p, self.training)


class DropsInEval(_Drop):
    """drops whatever the mode (NVIDIA/apex#1449: dropout applied in eval mode)"""

    def forward(self, x):
        return F.dropout(x, self.p, training=True)


class OverridesEval(_Drop):
    """keeps a flag of its own, cleared by overriding eval(); a parent's eval() calls
    train(False) on its children, never eval(), so in a model it drops at inference"""

    active = True

    def eval(self):
        self.active = False
        return super().eval()

    def forward(self, x):
        return F.dropout(x, self.p, training=self.active)


class RateZeroAfterEval(_Drop):
    """one evaluation pass sets the rate to 0 for good (NVIDIA/Megatron-LM#411)"""

    def forward(self, x):
        if not self.training:
            self.p = 0.0
        return F.dropout(x, self.p, self.training)


class ReseedsEveryCall(_Drop):
    """reseeds a generator of its own on every call: the same mask every time
    (tensorflow/tensorflow#29391; Dao-AILab/flash-attention#314 in attention)"""

    def forward(self, x):
        if not self.training:
            return x
        g = torch.Generator().manual_seed(1234)
        keep = torch.rand(x.shape, generator=g) >= self.p
        return torch.where(keep, x * (1 / (1 - self.p)), torch.zeros_like(x))


class OffWithoutGrad(_Drop):
    """drops only while gradients are recorded: train() under torch.no_grad() (Monte Carlo
    dropout at inference time) returns x unchanged"""

    def forward(self, x):
        return F.dropout(x, self.p, self.training and torch.is_grad_enabled())


class DropsAtBatchOne(_Drop):
    """drops in eval mode for a batch of one (a branch taken for single examples)"""

    def forward(self, x):
        return F.dropout(x, self.p, self.training or x.shape[0] == 1)


def torch_layer_defects() -> dict:
    """name -> (module class taking the rate, the check of verify_layer that must fail)."""
    return {
        "correct": (Correct, None),
        "drops in eval mode": (DropsInEval, "inference_identity"),
        "overrides eval() instead of train()": (OverridesEval, "inference_identity"),
        "rate 0 after one eval pass": (RateZeroAfterEval, "mode_transitions"),
        "the same mask on every call": (ReseedsEveryCall, "cross_correlation"),
        "off without gradients (no MC dropout)": (OffWithoutGrad, "mode_transitions"),
        "drops at inference for a batch of one": (DropsAtBatchOne, "inference_identity"),
    }


def _heads(t, num_heads):
    """(batch, length, heads * d) -> (batch, heads, length, d)."""
    return t.view(t.shape[0], t.shape[1], num_heads, -1).transpose(1, 2)


class _Attention(torch.nn.Module):
    """Multi-head attention written out: softmax(q k^T / sqrt(d)), dropout on the probabilities
    in training mode (``drop``), times the values; (batch, length, heads * d) in and out."""

    def __init__(self, num_heads, dropout):
        super().__init__()
        self.num_heads, self.dropout = num_heads, dropout

    def forward(self, query, key, value):
        q, k, v = (_heads(t, self.num_heads) for t in (query, key, value))
        p = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
        p = self.drop(p) if self.training else p
        return (p @ v).transpose(1, 2).reshape(query.shape[0], query.shape[1], -1)

    def drop(self, p):
        return F.dropout(p, self.dropout)


class SdpaIgnoresEval(_Attention):
    """passes dropout_p to scaled_dot_product_attention whatever the mode (pytorch/pytorch#124464)"""

    def forward(self, query, key, value):
        q, k, v = (_heads(t, self.num_heads) for t in (query, key, value))
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout)
        return out.transpose(1, 2).reshape(query.shape[0], query.shape[1], -1)


class OneMaskForAllHeads(_Attention):
    """one dropout mask shared by every head"""

    def drop(self, p):
        keep = torch.rand(p[:, :1].shape) >= self.dropout
        return torch.where(keep, p * (1 / (1 - self.dropout)), torch.zeros_like(p))


class SameMaskEveryCall(_Attention):
    """a generator reseeded on every call: consecutive calls share their masks
    (Dao-AILab/flash-attention#314: an RNG offset that never advanced)"""

    def drop(self, p):
        keep = torch.rand(p.shape, generator=torch.Generator().manual_seed(7)) >= self.dropout
        return torch.where(keep, p * (1 / (1 - self.dropout)), torch.zeros_like(p))


class _DropWithOtherBackwardMask(torch.autograd.Function):
    @staticmethod
    def forward(ctx, p, rate):
        ctx.rate = rate
        return torch.where(torch.rand(p.shape) >= rate, p * (1 / (1 - rate)), torch.zeros_like(p))

    @staticmethod
    def backward(ctx, g):
        return torch.where(torch.rand(g.shape) >= ctx.rate, g * (1 / (1 - ctx.rate)), torch.zeros_like(g)), None


class BackwardOtherMask(_Attention):
    """a fused kernel whose backward draws its own mask (pytorch/pytorch#102038: wrong gradients
    with dropout; zhuzilin/ring-flash-attention#36)"""

    def drop(self, p):
        return _DropWithOtherBackwardMask.apply(p, self.dropout)


class UnscaledProbabilities(_Attention):
    """zeroes dropped probabilities but does not rescale the kept ones"""

    def drop(self, p):
        return torch.where(torch.rand(p.shape) >= self.dropout, p, torch.zeros_like(p))


def _factory(cls):
    def make(num_heads, key_dim, dropout, seed=None, dtype="float32"):
        return cls(num_heads, dropout)

    make.__qualname__, make.framework = cls.__name__, "torch"
    return make


def torch_attention_defects() -> dict:
    """name -> (layer_cls for verify_attention, the check that must fail); ``correct`` is the
    written-out attention with F.dropout."""
    return {
        "correct": (_factory(_Attention), None),
        "scaled_dot_product_attention drops in eval mode": (_factory(SdpaIgnoresEval), "inference_identity"),
        "one mask for all heads": (_factory(OneMaskForAllHeads), "head_independence"),
        "the same mask on every call": (_factory(SameMaskEveryCall), "call_independence"),
        "the backward draws its own mask": (_factory(BackwardOtherMask), "backward_mask"),
        "kept probabilities not rescaled": (_factory(UnscaledProbabilities), "scale"),
    }


__all__ = ["torch_layer_defects", "torch_attention_defects"]
