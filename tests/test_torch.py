"""PyTorch's dropout entry points through the battery, against the installed torch (skipped
without it): every entry point passes in every dtype, torch.utils.checkpoint keeps the mask
only with its RNG state preserved, and broken implementations built on torch fail the check
made for their class of defect.

Budget: each verify() at false_fail_rate=1e-9.  A broken implementation below fails through
an exact check, or one whose miss probability tests/_power.py bounds.
"""
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from dropout_stats import verify  # noqa: E402
from dropout_stats.adapters import adapters  # noqa: E402

A = 1e-9
EAGER = adapters(framework="torch", modes=("eager",))


def _by_name(name):
    return next(a for a in adapters(framework="torch") if a.name == name)


@pytest.mark.statistical(false_fail_rate=A)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("adapter", EAGER, ids=[a.name for a in EAGER])
def test_entry_point_passes(adapter, dtype, seed):
    r = adapter.verify(rate=0.2, dtype=dtype, seed=seed % 2**20, false_fail_rate=A)
    assert r.passed, str(r)
    if adapter.kind == "dropout":
        # torch computes noise / (1 - p) in double, then multiplies: x * fl(1/(1-rate)) in every dtype
        scale = next(f for f in r.findings if f.name == "scale_formula")
        assert scale.value == "multiply", str(r)
        assert r.check("backward_mask").passed and r.check("backward_scale").passed, str(r)


@pytest.mark.statistical(false_fail_rate=A)
def test_functional_dropout_under_torch_compile_passes(seed):
    r = _by_name("torch.nn.functional.dropout[compile]").verify(rate=0.3, seed=seed % 2**20, false_fail_rate=A)
    assert r.passed, str(r)


@pytest.mark.statistical(false_fail_rate=2 * A)
@pytest.mark.parametrize("entry", ["torch.nn.functional.dropout[eager]", "torch.nn.Dropout2d[eager]"])
def test_checkpoint_redraws_the_mask_unless_it_preserves_the_rng_state(entry, seed):
    """torch.utils.checkpoint(preserve_rng_state=False) reruns dropout in the backward pass from
    the generator's next state: the gradient's mask is a fresh draw (backward_mask, exact: two
    independent masks agree everywhere with probability (p^2 + q^2)^n)."""
    adapter = _by_name(entry)
    s = seed % 2**20
    ok = adapter.verify(rate=0.3, seed=s, recompute="torch.utils.checkpoint", false_fail_rate=A)
    assert ok.passed, str(ok)
    bad = adapter.verify(rate=0.3, seed=s, recompute="torch.utils.checkpoint(preserve_rng_state=False)",
                         false_fail_rate=A)
    assert [c.name for c in bad.failures] == ["backward_mask"], str(bad)


# -- broken implementations on torch, one class of defect each ---------------------------------
def reseeds_every_call(x, rate, noise_shape=None):
    """The generator reseeded inside the layer: every call draws the same mask."""
    torch.manual_seed(1234)
    return F.dropout(x, rate, training=True)


def scales_by_keep(x, rate, noise_shape=None):
    """Kept values multiplied by (1 - rate) instead of divided by it."""
    return F.dropout(x, rate, training=True) * (1 - rate) ** 2


class _OtherMaskInBackward(torch.autograd.Function):
    """A hand-written backward that draws its own mask instead of saving the forward's."""

    @staticmethod
    def forward(ctx, x, rate):
        ctx.rate = rate
        keep = torch.rand_like(x) >= rate
        return torch.where(keep, x / (1 - rate), torch.zeros_like(x))

    @staticmethod
    def backward(ctx, g):
        keep = torch.rand_like(g) >= ctx.rate
        return torch.where(keep, g / (1 - ctx.rate), torch.zeros_like(g)), None


def backward_other_mask(x, rate, noise_shape=None):
    return _OtherMaskInBackward.apply(x, rate)


@pytest.mark.statistical(false_fail_rate=A)
@pytest.mark.parametrize("fn, failing", [
    (reseeds_every_call, "cross_correlation"),
    (scales_by_keep, "scale"),
    (backward_other_mask, "backward_mask"),
])
def test_broken_torch_dropout_fails_its_check(fn, failing, seed):
    """Each defect fails through an exact check (scale, backward_mask) or a correlation at
    displacement 0 between calls that is 1 instead of 0 (z in the hundreds)."""
    r = verify(fn, rate=0.3, stateful=True, seed=seed % 2**20, false_fail_rate=A, backend="torch")
    assert not r.passed and failing in {c.name for c in r.failures}, str(r)


def test_torch_backend_rejects_what_it_cannot_do():
    with pytest.raises(ValueError, match=r"reference \('jax'\) is not a stream of backend 'torch'"):
        verify(F.dropout, rate=0.2, stateful=True, backend="torch", reference="jax")
    with pytest.raises(ValueError, match="recompute"):
        verify(F.dropout, rate=0.2, stateful=True, backend="torch", recompute="jax.checkpoint")
