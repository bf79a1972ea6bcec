"""JAX's and Flax's dropout through the battery, against the installed jax and flax (skipped
without them): every entry point passes in every dtype eagerly and under jax.jit, the
reference stream is jax.random.bernoulli bit for bit, jax.checkpoint keeps the mask, and broken
implementations built on JAX fail the check made for their class of defect.

Budget: each verify() at false_fail_rate=1e-9.  A broken implementation below fails through an
exact check or through a rate test whose miss probability is below 1e-12 (tests/_power.py).
"""

import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("flax")
import jax.numpy as jnp  # noqa: E402

from dropout_stats import verify  # noqa: E402
from dropout_stats.adapters import adapters  # noqa: E402
from dropout_stats.backends import get_backend  # noqa: E402

A = 1e-9


def _keras_on_jax() -> bool:
    """Keras 3 runs on JAX in this process (it picks one backend, at import)."""
    import os
    import sys

    if "keras" not in sys.modules and os.environ.get("KERAS_BACKEND") != "jax":
        return False
    try:
        import keras
    except ImportError:
        return False
    return keras.backend.backend() == "jax"


# with KERAS_BACKEND=jax (tox -e keras-jax): Keras 3's layers on JAX too
ADAPTERS = adapters(framework="jax") + (adapters(framework="keras-jax") if _keras_on_jax() else [])

# A real deviation (test_normal_in_16_bit_dtypes_is_biased): Keras 3's GaussianDropout on JAX
# draws jax.random.normal in x's dtype.  bfloat16: noise mean 1 - 0.5 * 0.01202 = 0.99399 at
# rate 0.2, 10.7 standard errors out at the check's 786k draws: it fails, asserted below.
# float16: mean 0.99911, 1.6 standard errors: below the check's 0.5% design, so its verdict is
# random (it fails at its 1e-9 level with probability ~1e-4): not run.
KNOWN = {("keras.layers.GaussianDropout (JAX)[eager]", "bfloat16"): {"gaussian_mean"}}
UNDECIDED = {("keras.layers.GaussianDropout (JAX)[eager]", "float16")}


@pytest.mark.statistical(false_fail_rate=A)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("adapter", ADAPTERS, ids=[a.name for a in ADAPTERS])
def test_entry_point_passes(adapter, dtype, seed):
    if (adapter.name, dtype) in UNDECIDED:
        pytest.skip("a real bias below the check's design: its verdict is random (see UNDECIDED)")
    r = adapter.verify(rate=0.2, dtype=dtype, seed=seed % 2**20, false_fail_rate=A)
    assert {c.name for c in r.failures} == KNOWN.get((adapter.name, dtype), set()), str(r)
    if adapter.kind != "dropout":
        return
    if adapter.reference == "jax":
        assert r.check("mechanism").passed, str(r)  # bit for bit against jax.random.bernoulli
    # x / (1 - rate): XLA multiplies by fl(1/fl(1-rate)) in float16 and float32, divides in bfloat16
    scale = next(f for f in r.findings if f.name == "scale_formula")
    assert scale.value == ("divide" if dtype == "bfloat16" else "multiply"), str(r)


def test_keep_probability_is_the_float32_uniform_model():
    """bernoulli(key, 1 - rate) with a Python-float p draws a float32 uniform (2^23 levels) and
    keeps U < fl32(1 - rate) in every dtype of x: exact, from the bits."""
    from fractions import Fraction

    import numpy as np

    b = get_backend("jax")
    for rate in (0.1, 0.2, 0.3, 0.5):
        want = Fraction(int(np.ceil(float(np.float32(1 - rate)) * 2**23)), 2**23)
        for dtype in ("float16", "bfloat16", "float32"):
            assert b.keep_fraction(rate, dtype, "jax") == want, (rate, dtype)
    u = jax.random.uniform(jax.random.key(0), (1 << 20,), jnp.float32)  # the levels: k / 2^23
    assert np.all(np.asarray(u) * 2**23 == np.floor(np.asarray(u) * 2**23))


@pytest.mark.statistical(false_fail_rate=2e-12)
@pytest.mark.parametrize("dtype, levels", [("bfloat16", 128), ("float16", 1024)])
def test_normal_in_16_bit_dtypes_is_biased(dtype, levels):
    """jax.random.normal(key, shape, bfloat16 | float16) is sqrt(2) erfinv(u) of a uniform u on
    [-1, 1) with 2^7 (2^10) equally likely levels -1 + 2k/levels: not symmetric about 0, so the
    normal has mean -0.01202 (-0.00179), the mean of its `levels` values.  Measured: 4M draws
    show every level (missing one has probability < 1e-100) and a t statistic near -24 (-3.6):
    the test at 1e-12 misses with probability < 1e-12 for bfloat16; float16 is asserted by its
    levels' mean only.  Reproduce: jax.random.normal(jax.random.key(1), (4_000_000,),
    jnp.bfloat16).astype(jnp.float32).mean()."""
    import numpy as np
    from scipy import stats

    z = np.asarray(jax.random.normal(jax.random.key(1), (4_000_000,), getattr(jnp, dtype)).astype(jnp.float32))
    values = np.unique(z).astype(np.float64)
    assert values.size == levels
    assert values.mean() < -0.001  # bfloat16: -0.01202, float16: -0.00179
    if dtype == "bfloat16":
        assert stats.ttest_1samp(z.astype(np.float64), 0.0).pvalue < 1e-12


@pytest.mark.statistical(false_fail_rate=2 * A)
@pytest.mark.parametrize("name", ["jax.random.bernoulli dropout[eager]", "flax.linen.Dropout[jit]"])
def test_jax_checkpoint_keeps_the_forward_mask(name, seed):
    adapter = next(a for a in ADAPTERS if a.name == name)
    r = adapter.verify(rate=0.3, seed=seed % 2**20, recompute="jax.checkpoint", false_fail_rate=A)
    assert r.passed and r.check("backward_mask").passed, str(r)


# -- broken implementations on JAX, one class of defect each -----------------------------------
def ignores_the_seed(x, rate, key, noise_shape=None):
    """A constant key: every seed gives the same mask."""
    keep = jax.random.bernoulli(jax.random.key(7), 1 - rate, x.shape)
    return jnp.where(keep, x / (1 - rate), 0)


def keeps_rate_not_one_minus_rate(x, rate, key, noise_shape=None):
    """bernoulli(key, rate): keeps the dropped share."""
    keep = jax.random.bernoulli(key, rate, x.shape)
    return jnp.where(keep, x / (1 - rate), 0)


@jax.custom_vjp
def _dropout_other_backward(x, rate, key):
    keep = jax.random.bernoulli(key, 1 - rate, x.shape)
    return jnp.where(keep, x / (1 - rate), 0)


def _fwd(x, rate, key):
    return _dropout_other_backward(x, rate, key), (rate, key)


def _bwd(res, g):
    rate, key = res
    keep = jax.random.bernoulli(jax.random.fold_in(key, 1), 1 - rate, g.shape)  # a second draw
    return jnp.where(keep, g / (1 - rate), 0), None, None


_dropout_other_backward.defvjp(_fwd, _bwd)


def backward_other_mask(x, rate, key, noise_shape=None):
    return _dropout_other_backward(x, rate, key)


@pytest.mark.statistical(false_fail_rate=A)
@pytest.mark.parametrize(
    "fn, failing",
    [
        (ignores_the_seed, "seed_independence"),
        (keeps_rate_not_one_minus_rate, "keep_fraction"),
        (backward_other_mask, "backward_mask"),
    ],
)
def test_broken_jax_dropout_fails_its_check(fn, failing, seed):
    r = verify(fn, rate=0.3, seed=seed % 2**20, false_fail_rate=A, backend="jax", reference=None)
    assert not r.passed and failing in {c.name for c in r.failures}, str(r)


def test_jax_backend_rejects_what_it_cannot_do():
    with pytest.raises(ValueError, match=r"reference \('tensorflow'\) is not a stream of backend 'jax'"):
        verify(ignores_the_seed, rate=0.2, backend="jax", reference="tensorflow")


@pytest.mark.statistical(false_fail_rate=A)
def test_backend_keras_means_jax_under_keras_backend_jax(seed):
    adapter = next((a for a in ADAPTERS if a.name == "keras.layers.Dropout (JAX)[eager]"), None)
    if adapter is None:
        pytest.skip("Keras runs on another backend here (tox -e keras-jax sets KERAS_BACKEND=jax)")
    r = adapter.verify(rate=0.2, seed=seed % 2**20, backend="keras", false_fail_rate=A)
    assert r.passed and r.config["backend"] == "jax", str(r)


@pytest.mark.statistical(false_fail_rate=2 * A)
def test_recurrent_and_attention_layers_on_jax(seed):
    """verify_recurrent and verify_attention through the JAX backend (tox -e keras-jax)."""
    if not any(a.name.startswith("keras.layers.Dropout (JAX)") for a in ADAPTERS):
        pytest.skip("Keras runs on another backend here (tox -e keras-jax sets KERAS_BACKEND=jax)")
    import keras

    from dropout_stats import verify_attention, verify_recurrent

    r = verify_recurrent(keras.layers.LSTM, dropout=0.2, recurrent_dropout=0.4, seed=seed % 2**20, false_fail_rate=A)
    assert r.passed and r.config["backend"] == "jax" and r.check("backward_input_mask").passed, str(r)
    r = verify_attention(keras.layers.MultiHeadAttention, rate=0.2, seed=seed % 2**20, false_fail_rate=A)
    assert r.passed and r.config["backend"] == "jax" and r.check("backward_mask").passed, str(r)


# -- verify_layer: Flax NNX modules (train()/eval() and deterministic=) and Keras 3 on JAX -------
from flax import nnx  # noqa: E402

from dropout_stats import verify_layer  # noqa: E402


def _nnx_dropout(rate, seed):
    return nnx.Dropout(rate, rngs=nnx.Rngs(dropout=seed))


@pytest.mark.statistical(false_fail_rate=A)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_nnx_dropout_passes_verify_layer(dtype, seed):
    r = verify_layer(_nnx_dropout, rate=0.3, dtype=dtype, seed=seed % 2**20, false_fail_rate=A)
    assert r.passed, r.text()
    assert r.check("inference_identity").values == {
        "deterministic=True": True,
        "eval()": True,
        **{f"eval(), batch {b}": True for b in (1, 2, 3, 7)},
        "eval() under nnx.jit": True,
        "a parent module's eval()": True,
    }
    assert r.check("fit").passed and r.check("config_round_trip").passed and r.check("instances").passed


class IgnoresDeterministic(nnx.Dropout):
    """drops whatever deterministic says"""

    def __call__(self, inputs, *, deterministic=None, rngs=None):
        return super().__call__(inputs, deterministic=False, rngs=rngs)


class OnlyTheCallArgument(nnx.Module):
    """reads deterministic= from the call only: no attribute, so eval() never reaches it"""

    def __init__(self, rate, seed):
        self.drop = nnx.Dropout(rate, rngs=nnx.Rngs(dropout=seed))

    def __call__(self, x, deterministic=None):
        return self.drop(x, deterministic=bool(deterministic))


class FixedKey(nnx.Module):
    """a key held as a constant: the same mask on every call, eager or under nnx.jit"""

    def __init__(self, rate, seed):
        self.rate, self.key = rate, jax.random.key(seed)

    def __call__(self, x, deterministic=None):
        keep = jax.random.bernoulli(self.key, 1.0 - self.rate, x.shape)
        return jnp.where(keep, x / (1.0 - self.rate), jnp.zeros_like(x))


@pytest.mark.statistical(false_fail_rate=A)
@pytest.mark.parametrize(
    "make,failing",
    [
        (lambda rate, seed: IgnoresDeterministic(rate, rngs=nnx.Rngs(dropout=seed)), "inference_identity"),
        (OnlyTheCallArgument, "inference_identity"),
        (FixedKey, "cross_correlation"),
    ],
    ids=["ignores deterministic", "only the call argument", "a fixed key"],
)
def test_nnx_module_defects_fail_their_check(make, failing, seed):
    """Certain failures: exact inference checks; the same mask on every call (correlation 1 at
    displacement 0, z in the hundreds)."""
    r = verify_layer(make, rate=0.3, seed=seed % 2**20, false_fail_rate=A)
    assert failing in {c.name for c in r.failures}, r.text()


@pytest.mark.statistical(false_fail_rate=A)
def test_a_key_that_never_advances_fails_fit_too(seed):
    """verify_layer's fit entry for Flax also tests its two nnx.jit calls for independent masks:
    a fixed key gives them one mask (agreement 1 against p^2 + q^2 = 0.58 on 262,144 units)."""
    c = verify_layer(FixedKey, rate=0.3, seed=seed % 2**20, false_fail_rate=A).check("fit")
    assert c.passed is False and "agreement 1 between the calls" in c.observed, c


def test_a_module_without_the_attribute_escapes_eval():
    c = verify_layer(OnlyTheCallArgument, rate=0.3, false_fail_rate=A).check("inference_identity")
    assert c.values == {
        "deterministic=True": True,
        "eval()": False,
        **{f"eval(), batch {b}": False for b in (1, 2, 3, 7)},
        "eval() under nnx.jit": False,
        "a parent module's eval()": False,
    }, c.values


@pytest.mark.statistical(false_fail_rate=A)
@pytest.mark.parametrize("cls", ["Dropout", "AlphaDropout", "SpatialDropout2D"])
def test_keras_layers_on_jax_pass_verify_layer(cls, seed):
    """fit, predict, evaluate and saving on Keras 3's JAX backend (tox -e keras-jax)."""
    if not any(a.name.startswith("keras.layers.Dropout (JAX)") for a in ADAPTERS):
        pytest.skip("Keras runs on another backend here (tox -e keras-jax sets KERAS_BACKEND=jax)")
    import keras

    r = verify_layer(
        lambda rate, s: getattr(keras.layers, cls)(rate, seed=s), rate=0.3, seed=seed % 2**20, false_fail_rate=A
    )
    assert r.passed and r.config["backend"] == "jax", r.text()
    assert r.check("fit").passed and r.check("config_round_trip").passed


@pytest.mark.statistical(false_fail_rate=20 * A)
def test_the_audit_of_keras_on_jax(tmp_path):
    """`audit --framework keras-jax`: Keras's 6 dropout layers (float32), then verify_layer on the
    same 6, the recurrent (3) and attention (3) layers on JAX, each at A: 18 reports, 20 * A
    declared.  One JSON with the framework's version."""
    if not _keras_on_jax():
        pytest.skip("Keras runs on another backend here (tox -e keras-jax sets KERAS_BACKEND=jax)")
    import json
    import subprocess
    import sys

    out = tmp_path / "audit.json"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "dropout_stats.cli",
            "audit",
            "--framework",
            "keras-jax",
            "--quick",
            "--dtypes",
            "float32",
            "--false-fail-rate",
            str(A),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    data = json.loads(out.read_text())
    assert list(data["frameworks"]) == ["keras-jax"]
    assert [x["layer"] for x in data["recurrent"]] == [
        f"keras.layers.{c} (JAX) [eager]" for c in ("SimpleRNN", "GRU", "LSTM")
    ]
    assert len(data["layers"]) == 6 and len(data["attention"]) == 3 and len(data["results"]) == 6


# -- dropout_stats.testing on JAX arrays (issue 28) ----------------------------------------------
# A JAX array's keep is jax.random.bernoulli's (a float32 uniform of 2^23 levels, U < fl32(1 -
# rate), in every dtype), not TensorFlow's: bfloat16 at rate 0.2 keeps 0.80000007, where the
# assertion used to expect TensorFlow's 102/128 and fail.  Broken outputs fail: the keep 1% off
# at draws computed to catch it, the scale wrong or missing.
import numpy as np  # noqa: E402

from dropout_stats.design import min_num_samples_for_rate_test, power_of_rate_test  # noqa: E402
from dropout_stats.precision import expected_keep_probability  # noqa: E402
from dropout_stats.testing import (  # noqa: E402
    assert_keep_fraction,
    assert_mask_is_uniform_threshold,
    assert_scaled_by_inverse_keep,
)

T = 1e-10  # each assertion's false-fail rate in the tests below
MISS = 1e-10  # the chance a wrong keep passes, by the draws computed below
JAX_DTYPES = ["float16", "bfloat16", "float32"]  # float64 needs jax_enable_x64


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


def _jx(shape, dtype, seed):
    """x of both signs, magnitudes in [0.5, 2]: every position informative."""
    k1, k2 = jax.random.split(jax.random.key(seed % 2**31))
    x = jax.random.uniform(k1, shape, jnp.float32, 0.5, 2.0) * jnp.where(jax.random.bernoulli(k2, 0.5, shape), 1, -1)
    return x.astype(dtype)


def _bernoulli_dropout(x, rate, key):
    return jnp.where(jax.random.bernoulli(key, 1.0 - rate, x.shape), x / (1 - rate), 0).astype(x.dtype)


def _jax_outputs(x, rate, seed, source):
    key = jax.random.key(seed % 2**31 + 1)
    if source == "flax.linen.Dropout":
        import flax.linen as nn

        return x, nn.Dropout(rate, deterministic=False).apply({}, x, rngs={"dropout": key})
    if source == "x * mask / (1 - rate)":
        return x, x * jax.random.bernoulli(key, 1.0 - rate, x.shape).astype(x.dtype) / (1 - rate)
    y = jax.jit(_bernoulli_dropout, static_argnums=1)(x, rate, key)
    return {
        "bernoulli dropout under jit": (x, y),
        "x numpy, y jax": (np.asarray(x), y),
        "x jax, y numpy": (x, np.asarray(y)),
    }[source]


JAX_SOURCES = [
    "bernoulli dropout under jit",
    "flax.linen.Dropout",
    "x * mask / (1 - rate)",
    "x numpy, y jax",
    "x jax, y numpy",
]


@pytest.mark.statistical(false_fail_rate=T)
@pytest.mark.parametrize("source", JAX_SOURCES)
@pytest.mark.parametrize("dtype", JAX_DTYPES)
def test_testing_assertions_pass_correct_jax_dropout(dtype, source, seed):
    x, y = _jax_outputs(_jx((300, 300), dtype, seed), 0.2, seed, source)
    assert_keep_fraction(x, y, 0.2, false_fail_rate=T, seed=seed)
    assert_scaled_by_inverse_keep(x, y, 0.2)


@pytest.mark.parametrize("dtype", JAX_DTYPES)
def test_jax_dropout_is_bit_identical_to_its_formula(dtype):
    x = _jx((64, 64), dtype, 0)
    y = jax.jit(_bernoulli_dropout, static_argnums=1)(x, 0.3, jax.random.key(1))
    assert_scaled_by_inverse_keep(x, y, 0.3, exact_scale=True)


@pytest.mark.statistical(false_fail_rate=T + MISS)
def test_jax_bfloat16_is_held_to_jaxs_keep_not_tensorflows(seed):
    """The reported defect: JAX's bfloat16 dropout expected TensorFlow's 102/128.  At draws
    computed to tell the two keeps apart, the detected framework's keep passes (false fail T)
    and TensorFlow's fails (a miss <= MISS)."""
    jax_keep = float(get_backend("jax").keep_fraction(0.2, "bfloat16", "jax"))
    tf_keep = expected_keep_probability(0.2, "bfloat16")
    n = draws_to_catch([tf_keep], jax_keep)
    x = _jx((n,), "bfloat16", seed)
    y = jax.jit(_bernoulli_dropout, static_argnums=1)(x, 0.2, jax.random.key(seed % 2**31 + 2))
    assert_keep_fraction(x, y, 0.2, false_fail_rate=T, seed=seed)
    with pytest.raises(AssertionError) as info:
        assert_keep_fraction(x, y, 0.2, framework="tensorflow", false_fail_rate=T, seed=seed)
    first = str(info.value).splitlines()[0]
    assert first.endswith(f"expected TensorFlow's keep {tf_keep:.10g}"), first


@pytest.mark.statistical(false_fail_rate=MISS)
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_jax_keep_one_percent_off_fails(dtype, seed):
    """bernoulli(key, 0.792) asserted at rate 0.2: JAX's keep at 0.2 is 0.8000000715."""
    b = get_backend("jax")
    want, actual = float(b.keep_fraction(0.2, dtype, "jax")), float(b.keep_fraction(0.208, dtype, "jax"))
    n = draws_to_catch([want], actual)
    x = _jx((n,), dtype, seed)
    y = jax.jit(_bernoulli_dropout, static_argnums=1)(x, 0.208, jax.random.key(seed % 2**31 + 3))
    with pytest.raises(AssertionError) as info:
        assert_keep_fraction(x, y, 0.2, false_fail_rate=T, seed=seed)
    msg = str(info.value)
    assert msg.splitlines()[0].endswith(f"expected JAX's keep {want:.10g}"), msg
    assert "jax.random.bernoulli draws a float32 uniform (8388608 levels)" in msg and "detected from y" in msg


@pytest.mark.parametrize("broken", ["scale 1% off", "scale in bfloat16 for float32 values", "x unscaled"])
def test_a_wrong_jax_scale_fails(broken):
    x = _jx((100, 100), "float32", 0)
    mask = jax.random.bernoulli(jax.random.key(4), 0.7, x.shape).astype(x.dtype)
    scale = {
        "scale 1% off": jnp.float32(1.01 / 0.7),
        "scale in bfloat16 for float32 values": jnp.asarray(1 / 0.7, jnp.bfloat16).astype(jnp.float32),
        "x unscaled": jnp.float32(1),
    }[broken]
    with pytest.raises(AssertionError) as info:
        assert_scaled_by_inverse_keep(x, x * mask * scale, 0.3)
    first = str(info.value).splitlines()[0]
    assert first.startswith("Kept values are not x / (1 - rate) within the rounding bound: "), first


def test_the_tensorflow_mask_assertion_refuses_jax_arrays():
    x = _jx((8, 8), "float32", 0)
    with pytest.raises(TypeError) as info:
        assert_mask_is_uniform_threshold(x, _bernoulli_dropout(x, 0.2, jax.random.key(0)), 0.2, [1, 2])
    msg = str(info.value)
    assert "is a JAX array: assert_mask_is_uniform_threshold checks TensorFlow's stream" in msg
    assert "verify(fn, backend='jax')" in msg and "jax.random.bernoulli" in msg
