"""DropPath (stochastic depth) implementations for verify_drop_path: CORRECT ones written the ways
people write them (timm, torchvision, numpy, TensorFlow, JAX; functions and modules; 16-bit
inputs), and BROKEN ones, each defect class written at least two ways.

    CORRECT: list[Entry]   must pass
    BROKEN: list[Entry]    must fail, with every check in ``fails`` failing (``only``: and no other)

``entry.run(**overrides)`` calls ``ds.verify_drop_path`` with the entry's declaration.
Frameworks are imported inside the builders: this module imports with numpy only.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable

import numpy as np

SMALL = (32, 4, 3, 3)  # one decision per sample: the size of a sample changes nothing but the cost


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    needs: tuple  # modules that must import
    build: Callable  # () -> fn or make_layer
    kwargs: dict = dataclasses.field(default_factory=dict)  # verify_drop_path's keyword arguments
    rate: float = 0.2
    fails: frozenset = frozenset()
    only: bool = True  # broken: no check outside ``fails`` fails

    def available(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in self.needs)

    def run(self, **overrides):
        import dropout_stats as ds

        kw = {"shape": SMALL, **self.kwargs, **overrides}
        return ds.verify_drop_path(self.build(), self.rate, **kw)


def _timm():
    from dropout_stats.adapters._torchvision_import import import_torchvision

    import_torchvision()
    import timm.layers

    return timm.layers


def _torchvision_ops():
    from dropout_stats.adapters._torchvision_import import import_torchvision

    return import_torchvision().ops


def _sample_shape(x):
    return (x.shape[0],) + (1,) * (len(x.shape) - 1)


# -- correct ------------------------------------------------------------------------------------


def timm_drop_path():
    drop_path = _timm().drop_path
    return lambda x, rate: drop_path(x, rate, training=True)


def timm_drop_path_unscaled():
    drop_path = _timm().drop_path
    return lambda x, rate: drop_path(x, rate, training=True, scale_by_keep=False)


def timm_module():
    DropPath = _timm().DropPath
    return lambda rate, seed: DropPath(rate)


def torchvision_fn(mode):
    def build():
        ops = _torchvision_ops()
        return lambda x, rate: ops.stochastic_depth(x, rate, mode)

    return build


def torchvision_module(mode):
    def build():
        ops = _torchvision_ops()
        return lambda rate, seed: ops.StochasticDepth(rate, mode)

    return build


def torch_hand_written():
    """keep = rand(N) < 1 - rate, x * keep / (1 - rate): the textbook."""
    import torch

    def drop_path(x, rate):
        keep = torch.rand(_sample_shape(x)) < 1 - rate
        return x * keep.to(x.dtype) / (1 - rate) if rate < 1 else torch.zeros_like(x)

    return drop_path


def numpy_stateless():
    def drop_path(x, rate, seed):
        keep = np.random.default_rng(list(seed)).random(_sample_shape(x)) >= rate
        kept = x / x.dtype.type(1 - rate) if rate < 1 else np.zeros_like(x)
        return np.where(keep, kept, x.dtype.type(0)).astype(x.dtype)

    return drop_path


def numpy_binomial_multiply():
    """A binomial draw, x * (1 / keep) in float64, rounded once."""

    def drop_path(x, rate, seed):
        keep = 1.0 - rate
        mask = np.random.default_rng(list(seed)).binomial(1, keep, _sample_shape(x))
        return (x.astype(np.float64) * mask * (1 / keep if keep else 0.0)).astype(x.dtype)

    return drop_path


def tf_stateless():
    import tensorflow as tf

    def drop_path(x, rate, seed):
        u = tf.random.stateless_uniform(_sample_shape(x), seed=seed)
        return tf.where(u >= rate, x / tf.cast(1 - rate, x.dtype), tf.zeros_like(x)) if rate < 1 else tf.zeros_like(x)

    return drop_path


def jax_stateless(batch=False):
    def build():
        import jax
        import jax.numpy as jnp

        def drop_path(x, rate, key):
            shape = (1,) * x.ndim if batch else _sample_shape(x)
            if rate >= 1:
                return jnp.zeros_like(x)
            keep = jax.random.bernoulli(key, 1 - rate, shape)
            return jnp.where(keep, x / jnp.asarray(1 - rate, x.dtype), jnp.zeros((), x.dtype))

        return drop_path

    return build


def _module(forward):
    """A torch module whose forward(self, x) is ``forward``, made by make_layer(rate, seed)."""

    def build():
        import torch

        class DropPathModule(torch.nn.Module):
            def __init__(self, rate):
                super().__init__()
                self.rate = rate

            def forward(self, x):
                return forward(self, x)

        return lambda rate, seed: DropPathModule(rate)

    return build


def _torch_fn(body):
    """fn(x, rate) = body(torch, x, rate, keep mask of one draw per sample)."""

    def build():
        import torch

        def fn(x, rate):
            return body(torch, x, rate, torch.rand(_sample_shape(x)) >= rate)

        return fn

    return build


def _numpy_fn(body):
    """fn(x, rate, seed) = body(x, rate, keep mask of one draw per sample, rng)."""

    def fn(x, rate, seed):
        rng = np.random.default_rng(list(seed))
        with np.errstate(divide="ignore", invalid="ignore"):
            return body(x, rate, rng.random(_sample_shape(x)) >= rate, rng).astype(x.dtype)

    return lambda: fn


def _where(x, keep, value):
    return np.where(keep, value, x.dtype.type(0))


T, NP, TIMM, TV = ("torch",), (), ("torch", "timm"), ("torch", "torchvision")
STATEFUL = {"stateful": True}
CORRECT = [
    Entry("timm.drop_path(training=True)", TIMM, timm_drop_path, STATEFUL),
    Entry("timm.drop_path bfloat16", TIMM, timm_drop_path, {**STATEFUL, "dtype": "bfloat16"}),
    Entry("timm.drop_path float16", TIMM, timm_drop_path, {**STATEFUL, "dtype": "float16"}, rate=0.1),
    Entry("timm.drop_path scale_by_keep=False", TIMM, timm_drop_path_unscaled, {**STATEFUL, "scale_by_keep": False}),
    Entry("timm.DropPath", TIMM, timm_module, {"layer": True}),
    Entry("torchvision stochastic_depth row", TV, torchvision_fn("row"), STATEFUL, rate=0.3),
    Entry("torchvision stochastic_depth batch", TV, torchvision_fn("batch"), {**STATEFUL, "mode": "batch"}, rate=0.5),
    Entry("torchvision StochasticDepth row", TV, torchvision_module("row"), {"layer": True}),
    Entry("torchvision StochasticDepth batch", TV, torchvision_module("batch"), {"layer": True, "mode": "batch"}),
    Entry("torch rand < keep, x * mask / keep", T, torch_hand_written, {**STATEFUL, "dtype": "float64"}, rate=0.6),
    Entry("numpy default_rng, x / keep", NP, numpy_stateless),
    Entry("numpy float16", NP, numpy_stateless, {"dtype": "float16"}, rate=0.5),
    Entry("numpy binomial, x * (1/keep) in float64", NP, numpy_binomial_multiply, {"shape": (16, 5)}, rate=0.1),
    Entry("numpy 1-D: one element per sample", NP, numpy_stateless, {"shape": (256,)}),
    Entry("tensorflow stateless_uniform", ("tensorflow",), tf_stateless, {"backend": "tensorflow"}),
    Entry("jax bernoulli", ("jax",), jax_stateless(), {"backend": "jax"}),
    Entry("jax bernoulli bfloat16", ("jax",), jax_stateless(), {"backend": "jax", "dtype": "bfloat16"}),
    Entry("jax bernoulli batch", ("jax",), jax_stateless(batch=True), {"backend": "jax", "mode": "batch"}, rate=0.5),
]

# -- broken ---------------------------------------------------------------------------------------


def _fixed_generator():
    import torch

    def drop_path(x, rate):
        g = torch.Generator().manual_seed(0)  # a seed fixed inside: the same decisions every call
        return _scaled(x, torch.rand(_sample_shape(x), generator=g) >= rate, rate)

    return drop_path


def _per_element_dropout():
    import torch

    return lambda x, rate: torch.nn.functional.dropout(x, rate, training=True)


def _scaled(x, keep, rate):
    """x * keep / (1 - rate), zeros at rate 1."""
    return x * keep.to(x.dtype) / (1 - rate) if rate < 1 else x * 0


def _eval_drops(self, x):
    import torch

    return _scaled(x, torch.rand(_sample_shape(x)) >= self.rate, self.rate)  # self.training never read


def _eval_drops_half(self, x):
    import torch

    if not self.training:  # "a lighter drop at inference": still a drop
        return x * (torch.rand(_sample_shape(x)) >= self.rate / 2).to(x.dtype)
    return _scaled(x, torch.rand(_sample_shape(x)) >= self.rate, self.rate)


def _numpy_ignores_training():
    def drop_path(x, rate, seed, training=False):  # the flag accepted, never read
        keep = np.random.default_rng(list(seed)).random(_sample_shape(x)) >= rate
        kept = x / x.dtype.type(1 - rate) if rate < 1 else np.zeros_like(x)
        return np.where(keep, kept, x.dtype.type(0)).astype(x.dtype)

    return drop_path


def _torch_ignores_training():
    import torch

    def drop_path(x, rate, training=False):  # the flag accepted, never read
        return _scaled(x, torch.rand(_sample_shape(x)) >= rate, rate)

    return drop_path


def _cached_every_other_call():
    """mode "batch": a new decision on every second call only (a cached draw)."""
    import torch

    state = {"calls": 0, "keep": None}

    def drop_path(x, rate):
        if state["calls"] % 2 == 0:
            state["keep"] = torch.rand(()) >= rate
        state["calls"] += 1
        return _scaled(x, state["keep"], rate)

    return drop_path


def _counter_period_three():
    """mode "batch", stateless: the decision seeded by seed[1] % 3 (a counter that wraps)."""

    def drop_path(x, rate, seed):
        keep = np.random.default_rng([seed[0], seed[1] % 3, 7]).random() >= rate
        kept = x / x.dtype.type(1 - rate) if rate < 1 else np.zeros_like(x)
        return np.where(keep, kept, x.dtype.type(0)).astype(x.dtype)

    return drop_path


def _by_index(x, rate, shape, pattern: str):
    """A keep probability that depends on the sample's index, 1 - rate on average (and 1 at rate 0,
    0 at rate 1), m = min(rate, 1 - rate): halves of the batch at +-m/2, even and odd indices at
    +-m/2, or a linear ramp from +m to -m."""
    n, m, i = x.shape[0], min(rate, 1 - rate), np.arange(x.shape[0])
    step = {
        "ramp": np.linspace(1, -1, n),
        "halves": np.where(i < n // 2, 0.5, -0.5),
        "parity": np.where(i % 2 == 0, 0.5, -0.5),
    }[pattern]
    return ((1 - rate) + m * step).reshape(shape)


def _custom_backward(fresh_mask: bool, forward_scaled: bool = True):
    """An autograd Function: the forward is right; the backward draws a mask of its own
    (``fresh_mask``) or forgets the scale.  ``forward_scaled=False``: the forward is right for
    scale_by_keep=False (x * keep) and the backward scales by 1/(1 - rate) all the same."""

    def build():
        import torch

        class DropPathFunction(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x, rate):
                keep = (torch.rand(_sample_shape(x)) >= rate).to(x.dtype)
                ctx.rate = rate
                ctx.save_for_backward(keep)
                return _scaled(x, keep, rate) if forward_scaled else x * keep

            @staticmethod
            def backward(ctx, grad):
                (keep,) = ctx.saved_tensors
                if not forward_scaled:  # F.dropout's own scale: * fl(1 / (1 - rate))
                    return grad * keep * (1 / (1 - ctx.rate)), None
                if fresh_mask:
                    return _scaled(grad, (torch.rand(keep.shape) >= ctx.rate).to(grad.dtype), ctx.rate), None
                return grad * keep, None

        return DropPathFunction.apply

    return build


def _index_dependent(pattern: str):
    return _numpy_fn(
        lambda x, r, k, rng: _where(x, rng.random(k.shape) < _by_index(x, r, k.shape, pattern), x / (1 - r))
    )


def _timm_per_sample():  # timm's drop_path declared mode="batch"
    return timm_drop_path()


EVAL = frozenset({"inference_identity", "mode_transitions", "fit"})
BROKEN = [
    # per-element decisions instead of per-sample
    Entry("per element: F.dropout", T, _per_element_dropout, STATEFUL, fails=frozenset({"sample_fate"}), only=False),
    Entry(
        "per element: numpy mask of x's shape",
        NP,
        _numpy_fn(lambda x, r, k, rng: _where(x, rng.random(x.shape) >= r, x / (1 - r))),
        fails=frozenset({"sample_fate"}),
        only=False,
    ),
    # one decision per batch where one per sample is declared
    Entry(
        "per batch: stochastic_depth 'batch' declared row",
        TV,
        torchvision_fn("batch"),
        STATEFUL,
        fails=frozenset({"row_independence"}),
        only=False,
    ),
    Entry(
        "per batch: numpy one draw",
        NP,
        _numpy_fn(lambda x, r, k, rng: _where(x, np.broadcast_to(k[:1], k.shape), x / (1 - r))),
        fails=frozenset({"row_independence"}),
        only=False,
    ),
    # one decision per sample where one per call is declared
    Entry(
        "per sample declared batch: timm",
        TIMM,
        _timm_per_sample,
        {**STATEFUL, "mode": "batch"},
        fails=frozenset({"batch_fate"}),
        only=False,
    ),
    Entry(
        "per sample declared batch: stochastic_depth row",
        TV,
        torchvision_fn("row"),
        {**STATEFUL, "mode": "batch"},
        fails=frozenset({"batch_fate"}),
        only=False,
    ),
    # wrong scale
    Entry(
        "scale 1/rate", NP, _numpy_fn(lambda x, r, k, rng: _where(x, k, x / r)), fails=frozenset({"scale", "rate_zero"})
    ),
    Entry(
        "scale 1 + rate",
        T,
        _torch_fn(lambda t, x, r, k: x * k.to(x.dtype) * (1 + r)),
        STATEFUL,
        fails=frozenset({"scale", "backward_scale"}),
    ),
    Entry(
        "unscaled where scale_by_keep=True: timm",
        TIMM,
        timm_drop_path_unscaled,
        STATEFUL,
        fails=frozenset({"scale", "backward_scale"}),
    ),
    Entry(
        "unscaled where scale_by_keep=True: numpy",
        NP,
        _numpy_fn(lambda x, r, k, rng: _where(x, k, x)),
        fails=frozenset({"scale"}),
    ),
    Entry(
        "scaled where scale_by_keep=False: timm",
        TIMM,
        timm_drop_path,
        {**STATEFUL, "scale_by_keep": False},
        fails=frozenset({"scale", "backward_scale"}),
    ),
    # decisions shared across calls
    Entry(
        "fixed generator seed (stateful)",
        T,
        _fixed_generator,
        STATEFUL,
        fails=frozenset({"cross_correlation"}),
        only=False,
    ),
    Entry(
        "seed ignored (stateless)",
        NP,
        _numpy_fn(lambda x, r, k, rng: _where(x, np.random.default_rng(0).random(k.shape) >= r, x / (1 - r))),
        fails=frozenset({"seed_independence"}),
        only=False,
    ),
    # a keep rate that depends on the sample's index (right on average)
    Entry(
        "keep by parity of the sample index",  # pairs (2j, 2j + 1) alike: the pair checks see nothing
        NP,
        _numpy_fn(
            lambda x, r, k, rng: _where(x, rng.random(k.shape) < _by_index(x, r, k.shape, "parity"), x / (1 - r))
        ),
        fails=frozenset({"sample_homogeneity"}),
    ),
    # (neighbours share a rate: row_independence sees the mixture too)
    Entry(
        "keep by half of the batch",
        NP,
        _numpy_fn(
            lambda x, r, k, rng: _where(x, rng.random(k.shape) < _by_index(x, r, k.shape, "halves"), x / (1 - r))
        ),
        fails=frozenset({"sample_homogeneity"}),
        only=False,
    ),
    Entry(
        "keep ramped over the batch",
        NP,
        _index_dependent("ramp"),
        fails=frozenset({"sample_homogeneity"}),
        only=False,
    ),
    # mode "batch": one decision reused by the next calls
    Entry(
        "cached decision every other call",
        T,
        _cached_every_other_call,
        {**STATEFUL, "mode": "batch"},
        fails=frozenset({"call_independence"}),
        rate=0.5,
        only=False,
    ),  # the rate-0 call reuses one too
    Entry(
        "stateless counter wrapping every 3 calls",
        NP,
        _counter_period_three,
        {"mode": "batch"},
        fails=frozenset({"call_independence"}),
        rate=0.5,
        only=False,
    ),  # seeds (s, i), (s, i + 3) collide
    # a backward pass with another mask, or without the scale
    Entry(
        "backward draws its own mask",
        T,
        _custom_backward(True),
        STATEFUL,
        fails=frozenset({"backward_mask"}),
        only=False,
    ),
    Entry("backward unscaled", T, _custom_backward(False), STATEFUL, fails=frozenset({"backward_scale"})),
    Entry(
        "backward scaled where scale_by_keep=False",
        T,
        _custom_backward(False, forward_scaled=False),
        {**STATEFUL, "scale_by_keep": False},
        fails=frozenset({"backward_scale"}),
    ),
    # dropping at inference
    # (an inference call between training calls changes x: mode_transitions and fit say so too)
    Entry("module drops in eval()", T, _module(_eval_drops), {"layer": True}, fails=EVAL),
    Entry("module drops at half the rate in eval()", T, _module(_eval_drops_half), {"layer": True}, fails=EVAL),
    Entry("numpy training=False ignored", NP, _numpy_ignores_training, fails=frozenset({"inference_identity"})),
    Entry(
        "torch training=False ignored", T, _torch_ignores_training, STATEFUL, fails=frozenset({"inference_identity"})
    ),
    # rate 0 not the identity
    Entry(
        "x / (keep + 1e-6)",
        T,
        _torch_fn(lambda t, x, r, k: x * k.to(x.dtype) / (1 - r + 1e-6)),
        STATEFUL,
        fails=frozenset({"rate_zero", "scale", "backward_scale"}),
    ),
    Entry(
        "rate 0 drops everything",
        NP,
        _numpy_fn(lambda x, r, k, rng: _where(x, k & (r > 0), x / (1 - r))),
        fails=frozenset({"rate_zero"}),
    ),
    # zeros at rate 1
    Entry(
        "(x * mask) / keep: NaN at rate 1",
        T,
        _torch_fn(lambda t, x, r, k: x * k.to(x.dtype) / (1 - r)),
        STATEFUL,
        fails=frozenset({"rate_one"}),
    ),
    Entry(
        "numpy x * mask / keep: NaN at rate 1",
        NP,
        _numpy_fn(lambda x, r, k, rng: x * k / (1 - r)),
        fails=frozenset({"rate_one"}),
    ),
    # keep probability off: the rate used as the keep probability
    Entry(
        "bernoulli(rate)",
        T,
        _torch_fn(lambda t, x, r, k: x * t.bernoulli(t.full(_sample_shape(x), r)) / (1 - r)),
        STATEFUL,
        fails=frozenset({"keep_fraction"}),
        only=False,
    ),
    Entry(
        "numpy rand < rate",
        NP,
        _numpy_fn(lambda x, r, k, rng: _where(x, ~k, x / (1 - r))),
        fails=frozenset({"keep_fraction"}),
        only=False,
    ),
]
