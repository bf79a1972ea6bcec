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
    bad = adapter.verify(
        rate=0.3, seed=s, recompute="torch.utils.checkpoint(preserve_rng_state=False)", false_fail_rate=A
    )
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
@pytest.mark.parametrize(
    "fn, failing",
    [
        (reseeds_every_call, "cross_correlation"),
        (scales_by_keep, "scale"),
        (backward_other_mask, "backward_mask"),
    ],
)
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


# -- modules: train()/eval() are the training flag (verify_layer) -------------------------------
from dropout_stats import verify_attention, verify_layer  # noqa: E402
from dropout_stats.adapters import layer_factories  # noqa: E402
from dropout_stats.adapters.torch import attention_factories  # noqa: E402
from dropout_stats.calibration.corpus_torch import torch_attention_defects, torch_layer_defects  # noqa: E402

MODULES = layer_factories(framework="torch")


@pytest.mark.statistical(false_fail_rate=A)
@pytest.mark.parametrize("name,make", MODULES, ids=[n for n, _ in MODULES])
def test_torch_modules_pass_verify_layer(name, make, seed):
    r = verify_layer(make, rate=0.3, seed=seed % 2**20, false_fail_rate=A)
    assert r.passed, r.text()
    assert r.check("inference_identity").values == {
        "eval()": True,
        **{f"eval(), batch {b}": True for b in (1, 2, 3, 7)},
        "eval() under torch.no_grad()": True,
        "eval() under torch.inference_mode()": True,
        "a parent module's eval()": True,
    }
    assert r.check("fit").passed and r.check("config_round_trip").passed, r.text()


@pytest.mark.statistical(false_fail_rate=A)
def test_an_inplace_module_is_verified_on_copies(seed):
    """nn.Dropout(inplace=True) overwrites its input: each call gets a copy of x, so it passes."""
    r = verify_layer(
        lambda rate, s: torch.nn.Dropout(rate, inplace=True), rate=0.3, seed=seed % 2**20, false_fail_rate=A
    )
    assert r.passed, r.text()


@pytest.mark.statistical(false_fail_rate=A)
@pytest.mark.parametrize("cls,check", [pytest.param(c, k, id=n) for n, (c, k) in torch_layer_defects().items()])
def test_torch_layer_defects_fail_their_check(cls, check, seed):
    """Certain failures: exact inference checks, a keep rate of 1 against 0.7 on 524,288 draws,
    the same mask on every call (correlation 1 at displacement 0).  The control passes at A."""
    r = verify_layer(lambda rate, s: cls(rate), rate=0.3, seed=seed % 2**20, false_fail_rate=A)
    if check is None:
        assert r.passed, r.text()
    else:
        assert check in {c.name for c in r.failures}, r.text()


@pytest.mark.statistical(false_fail_rate=A)
def test_an_eval_override_shows_only_through_a_parent():
    """Overriding eval() instead of train(): the module's own eval() works, a parent's does not."""
    cls = torch_layer_defects()["overrides eval() instead of train()"][0]
    c = verify_layer(lambda rate, s: cls(rate), rate=0.3, false_fail_rate=A).check("inference_identity")
    assert c.values == {
        "eval()": True,
        **{f"eval(), batch {b}": True for b in (1, 2, 3, 7)},
        "eval() under torch.no_grad()": True,
        "eval() under torch.inference_mode()": True,
        "a parent module's eval()": False,
    }, c.values


# -- attention: nn.MultiheadAttention and scaled_dot_product_attention (verify_attention) -------
@pytest.mark.statistical(false_fail_rate=A)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("name,layer_cls", attention_factories(), ids=[n for n, _ in attention_factories()])
def test_torch_attention_passes(name, layer_cls, dtype, seed):
    r = verify_attention(layer_cls, rate=0.2, dtype=dtype, seed=seed % 2**20, false_fail_rate=A)
    assert r.passed, r.text()
    assert r.check("backward_mask").passed and r.check("inference_identity").values == {
        "eval()": True,
        "eval() under torch.no_grad()": True,
    }


@pytest.mark.statistical(false_fail_rate=A)
@pytest.mark.parametrize(
    "layer_cls,check", [pytest.param(f, k, id=n) for n, (f, k) in torch_attention_defects().items()]
)
def test_torch_attention_defects_fail_their_check(layer_cls, check, seed):
    """Certain failures: exact checks (inference, scale, backward), or masks that agree with
    probability 1 against p^2 + q^2 = 0.68 over >= 9,472 pairs (Fisher p < 1e-300).  The control
    passes at A."""
    r = verify_attention(layer_cls, rate=0.2, seed=seed % 2**20, false_fail_rate=A)
    if check is None:
        assert r.passed, r.text()
    elif check in ("head_independence", "call_independence"):  # whole rows repeat: mask_repeats sees it too
        assert [c.name for c in r.failures] in ([check], [check, "mask_repeats"]), r.text()
    else:
        assert [c.name for c in r.failures] == [check], r.text()


def test_a_torch_module_of_another_layout_is_named():
    with pytest.raises(ValueError, match="not torch.nn.MultiheadAttention's layout"):
        verify_attention(
            lambda num_heads, key_dim, dropout, seed=None, dtype="float32": torch.nn.MultiheadAttention(
                num_heads * key_dim, num_heads, dropout=dropout, bias=False, batch_first=True
            ),
            rate=0.2,
        )


# -- the reference stream: bernoulli_(1 - rate) from a generator --------------------------------
def test_f_dropout_draws_the_reference_stream():
    """F.dropout after torch.manual_seed(s) keeps exactly empty_like(x).bernoulli_(1 - p) of a
    generator seeded with s, in every dtype: the stream the "torch" reference reproduces."""
    from dropout_stats.backends import get_backend

    backend = get_backend("torch")
    x = torch.rand(64, 4096) + 0.5
    for dtype in ("float16", "bfloat16", "float32", "float64"):
        torch.manual_seed(7 * 2**24 + 3)  # the generator of seed pair (7, 3)
        y = F.dropout(x.to(getattr(torch, dtype)), 0.3)
        want = backend.reference_keep((64, 4096), (7, 3), dtype, 0.3, "torch")
        assert ((y != 0).numpy() == want).all(), dtype


@pytest.mark.statistical(false_fail_rate=A)
def test_a_torch_rng_of_its_own_fails_only_the_mechanism(seed):
    """rand(generator) >= rate is a correct dropout, but not torch's stream: mechanism (exact)
    fails, nothing else; the diagnosis suggests reference=None."""

    def rand_threshold(x, rate, generator, noise_shape=None):
        keep = torch.rand(x.shape, generator=generator) >= rate
        return torch.where(keep, x * torch.tensor(1 / (1 - rate), dtype=x.dtype), torch.zeros_like(x))

    r = verify(rand_threshold, rate=0.3, backend="torch", seed=seed % 2**20, false_fail_rate=A)
    assert [c.name for c in r.failures] == ["mechanism"] and "reference=None" in r.text(), r.text()
    assert verify(
        rand_threshold, rate=0.3, backend="torch", reference=None, seed=seed % 2**20, false_fail_rate=A
    ).passed


def test_torch_cpu_generators_keep_the_low_32_bits_of_their_seed():
    """A measured fact the backend works around (it packs a seed pair into 32 bits):
    manual_seed(1) and manual_seed(1 + 2**32) give one stream."""
    a = torch.rand(8, generator=torch.Generator().manual_seed(1))
    b = torch.rand(8, generator=torch.Generator().manual_seed(1 + 2**32))
    assert torch.equal(a, b)


# -- dropout_stats.testing on torch tensors (issue 28) -------------------------------------------
# Every assertion reads torch tensors in every dtype (bfloat16 from its bits: Tensor.numpy()
# refuses it), requiring grad or not, and mixed with numpy; torch's keep is 1 - rate.  Broken
# outputs fail: the keep 1% off at draws computed to catch it, the scale wrong or missing.
from dropout_stats.backends import get_backend as _get_backend  # noqa: E402
from dropout_stats.design import min_num_samples_for_rate_test, power_of_rate_test  # noqa: E402
from dropout_stats.testing import (  # noqa: E402
    assert_keep_fraction,
    assert_mask_is_uniform_threshold,
    assert_scaled_by_inverse_keep,
)

T = 1e-10  # each assertion's false-fail rate in the tests below
MISS = 1e-10  # the chance a broken keep passes, by the draws computed below
TORCH_DTYPES = ["float16", "bfloat16", "float32", "float64"]


def draws_to_catch(keeps, actual, alpha=T, miss=MISS):
    """Draws at which an assertion testing each of ``keeps`` at level alpha passes a keep of
    ``actual`` with probability <= miss (each keep's exact test given miss / m; the exact miss
    summed at that n, stepping on where the sawtooth of exact power needs it)."""
    m = len(keeps)
    n = max(
        min_num_samples_for_rate_test(k, abs(actual - k), false_fail_rate=alpha, false_pass_rate=miss / m)
        for k in keeps
    )
    while sum(1 - power_of_rate_test(n, k, abs(actual - k), false_fail_rate=alpha) for k in keeps) > miss:
        n += 1
    return n


def _tx(shape, dtype, seed):
    """x of both signs, magnitudes in [0.5, 2]: every position informative."""
    g = torch.Generator().manual_seed(seed % 2**32)
    x = (torch.rand(shape, generator=g, dtype=torch.float64) * 1.5 + 0.5) * (
        torch.randint(0, 2, shape, generator=g) * 2 - 1
    )
    return x.to(getattr(torch, dtype))


def _as_numpy(t):
    return _get_backend("torch").to_numpy(t)  # bfloat16 as ml_dtypes' bfloat16


def _torch_outputs(x, rate, seed, source):
    torch.manual_seed(seed % 2**32)
    if source == "nn.Dropout, x requiring grad":
        xg = x.clone().requires_grad_(True)
        return xg, torch.nn.Dropout(rate).train()(xg)
    if source == "x * mask / (1 - rate)":
        g = torch.Generator().manual_seed(seed % 2**32 + 1)
        mask = torch.empty(x.shape, dtype=torch.float64).bernoulli_(1 - rate, generator=g)  # keep 1 - rate
        return x, x * mask.to(x.dtype) / (1 - rate)
    y = F.dropout(x, rate)
    return {"F.dropout": (x, y), "x numpy, y torch": (_as_numpy(x), y), "x torch, y numpy": (x, _as_numpy(y))}[source]


TORCH_SOURCES = [
    "F.dropout",
    "nn.Dropout, x requiring grad",
    "x * mask / (1 - rate)",
    "x numpy, y torch",
    "x torch, y numpy",
]


@pytest.mark.statistical(false_fail_rate=T)
@pytest.mark.parametrize("source", TORCH_SOURCES)
@pytest.mark.parametrize("dtype", TORCH_DTYPES)
def test_testing_assertions_pass_correct_torch_dropout(dtype, source, seed):
    """Torch bfloat16 included (it raised a TypeError: Tensor.numpy() refuses bfloat16)."""
    x, y = _torch_outputs(_tx((300, 300), dtype, seed), 0.2, seed, source)
    assert_keep_fraction(x, y, 0.2, false_fail_rate=T, seed=seed)
    assert_scaled_by_inverse_keep(x, y, 0.2)


@pytest.mark.parametrize("dtype", TORCH_DTYPES)
def test_f_dropout_is_bit_identical_to_torchs_formula(dtype):
    x = _tx((64, 64), dtype, 0)
    assert_scaled_by_inverse_keep(x, F.dropout(x, 0.3), 0.3, exact_scale=True)


@pytest.mark.statistical(false_fail_rate=MISS)
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_torch_keep_one_percent_off_fails(dtype, seed):
    """F.dropout at rate 0.208 (keep 0.792) asserted at rate 0.2 (torch's keep 0.8)."""
    n = draws_to_catch([0.8], 0.792)
    torch.manual_seed(seed % 2**32)
    x = _tx((n,), dtype, seed)
    with pytest.raises(AssertionError) as info:
        assert_keep_fraction(x, F.dropout(x, 0.208), 0.2, false_fail_rate=T, seed=seed)
    first = str(info.value).splitlines()[0]
    assert first.startswith("Dropout keep fraction is not consistent with the rate (false-fail rate 1e-10"), first
    assert first.endswith("expected PyTorch's keep 0.8"), first
    assert "torch draws bernoulli(1 - rate) in double precision; detected from y, a torch.Tensor" in str(info.value)


def _torch_broken_scales(x, rate, seed):
    mask = (torch.rand(x.shape, generator=torch.Generator().manual_seed(seed)) >= rate).to(x.dtype)
    bf16_scale = torch.tensor(1 / (1 - rate), dtype=torch.bfloat16).to(x.dtype)  # 1/0.7 -> 1.4296875
    return {
        "scale 1% off": x * mask * (1.01 / (1 - rate)),
        "scale in bfloat16 for float32 values": x * mask * bf16_scale,
        "x unscaled": x * mask,
    }


@pytest.mark.parametrize("broken", ["scale 1% off", "scale in bfloat16 for float32 values", "x unscaled"])
def test_a_wrong_torch_scale_fails(broken):
    x = _tx((100, 100), "float32", 0)
    y = _torch_broken_scales(x, 0.3, 0)[broken]
    with pytest.raises(AssertionError) as info:
        assert_scaled_by_inverse_keep(x, y, 0.3)
    first = str(info.value).splitlines()[0]
    assert first.startswith("Kept values are not x / (1 - rate) within the rounding bound: "), first
    with pytest.raises(AssertionError, match="by any reference formula"):
        assert_scaled_by_inverse_keep(x, y, 0.3, exact_scale=True)


def test_the_tensorflow_mask_assertion_refuses_torch_tensors():
    x = _tx((8, 8), "bfloat16", 0)
    with pytest.raises(TypeError) as info:
        assert_mask_is_uniform_threshold(x, F.dropout(x, 0.2), 0.2, [1, 2])
    msg = str(info.value)
    assert msg.startswith("y (torch.Tensor) is a torch tensor: assert_mask_is_uniform_threshold checks TensorFlow's")
    assert "use assert_keep_fraction and assert_scaled_by_inverse_keep, or verify(fn, backend='torch')" in msg
