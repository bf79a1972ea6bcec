"""Every TensorFlow and Keras dropout entry point, in every execution mode and float dtype,
verified against the installed TensorFlow.

Budget: each verify() at false_fail_rate=1e-9.
"""

import keras
import pytest
from hypothesis import given, settings

from dropout_stats import strategies
from dropout_stats.adapters import adapters

A = 1e-9
ADAPTERS = adapters()
KERAS_3 = int(keras.__version__.split(".")[0]) >= 3

# Real deviations, asserted as such in their own tests below.  Keras 3 (TF 2.21: Keras 3.15) has
# the Gaussian one; Keras 2.15 (TF 2.15) does not.
KNOWN_DEVIATIONS = (
    {
        ("keras.layers.GaussianDropout[jit]", "float16"): {"gaussian_variance"},
    }
    if KERAS_3
    else {}
)


@pytest.mark.statistical(false_fail_rate=A)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("adapter", ADAPTERS, ids=[a.name for a in ADAPTERS])
def test_entry_point_passes(adapter, dtype, seed):
    r = adapter.verify(rate=0.2, dtype=dtype, seed=seed % 2**20, false_fail_rate=A)
    known = KNOWN_DEVIATIONS.get((adapter.name, dtype), set())
    unexpected = [c for c in r.failures if c.name not in known]
    assert not unexpected, str(r)
    if not adapter.stateful:
        assert r.check("mechanism").passed  # bit for bit against TF's (or XLA's) uniform


@pytest.mark.statistical(false_fail_rate=2e-9)
def test_gaussian_dropout_under_xla_in_float16_variance_per_keras_version():
    """Keras 3 (TF 2.21, Keras 3.15): GaussianDropout with jit_compile=True in float16 gives noise
    variance about 1.1% above rate/(1-rate) (rate 0.5: 1.0108 on 786k draws, p = 1e-11); eager
    float16 and XLA float32 are exact.  Keras 2 (TF 2.15): exact under XLA too.  Sized at 0.25%
    of sigma the variance check needs ~5.4M draws, where a 1.1% excess is ~18 sigma out: a miss
    has probability below 1e-12; the eager run (and on Keras 2 the XLA one) false-fails with
    probability <= 1e-9 each."""
    adapter = next(a for a in ADAPTERS if a.name == "keras.layers.GaussianDropout[jit]")
    r = adapter.verify(rate=0.5, dtype="float16", seed=2, false_fail_rate=A, discrepancy=0.0025)
    var = r.check("gaussian_variance")
    if KERAS_3:
        assert var.passed is False and float(var.observed) > 1.0, str(r)  # too much variance, not too little
    else:
        assert r.passed, str(r)
    eager = next(a for a in ADAPTERS if a.name == "keras.layers.GaussianDropout[eager]")
    assert eager.verify(rate=0.5, dtype="float16", seed=2, false_fail_rate=A, discrepancy=0.0025).passed


def test_adapters_cover_every_entry_point():
    names = {a.entry_point for a in ADAPTERS}
    for required in (
        "tf.nn.experimental.stateless_dropout",
        "tf.nn.dropout",
        "tf.compat.v1.nn.dropout(keep_prob=...)",
        "keras.layers.Dropout",
        "keras.layers.SpatialDropout1D",
        "keras.layers.SpatialDropout2D",
        "keras.layers.SpatialDropout3D",
        "keras.layers.AlphaDropout",
        "keras.layers.GaussianDropout",
    ):
        assert required in names
    assert {a.mode for a in ADAPTERS} == {"eager", "function", "jit"}


STATELESS = [a for a in ADAPTERS if not a.stateful and a.mode == "eager"]


@pytest.mark.statistical(false_fail_rate=10 * A)
@settings(max_examples=10)
@given(
    config=strategies.dropout_configs(
        rate=strategies.rates(min_value=0.01, max_value=0.95, edges=False),
        shape=strategies.shapes_and_noise_shapes(min_rank=2, max_side=32, min_units=4096),
    )
)
def test_stateless_entry_points_on_generated_configurations(config):
    """Shapes, noise shapes, rates and dtypes vary here; sensitivity is the corpus tests' job, so
    the rate check is sized for 5% of min(keep, 1 - keep) to keep the run short."""
    from dropout_stats import expected_keep_probability

    keep = expected_keep_probability(config["rate"], config["dtype"])
    delta = 0.05 * min(keep, 1 - keep) if 0 < keep < 1 else None
    for adapter in STATELESS:
        r = adapter.verify(seed=3, false_fail_rate=A / len(STATELESS), discrepancy=delta, max_calls=3000, **config)
        assert r.passed, str(r)


@pytest.mark.statistical(false_fail_rate=A)
def test_backend_keras_means_the_framework_keras_runs_on(seed):
    """backend="keras" resolves to keras.backend.backend() (here TensorFlow; JAX in tox -e keras-jax)."""
    adapter = next(a for a in ADAPTERS if a.name == "keras.layers.Dropout[eager]")
    r = adapter.verify(rate=0.2, seed=seed % 2**20, backend="keras", false_fail_rate=A)
    assert r.passed and r.config["backend"] == keras.backend.backend() == "tensorflow", str(r)
