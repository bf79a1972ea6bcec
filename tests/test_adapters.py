"""Every TensorFlow and Keras dropout entry point, in every execution mode and float dtype,
verified against the installed TensorFlow.

Budget: each verify() at false_fail_rate=1e-9.
"""
import pytest
from hypothesis import given, settings

from dropout_stats import strategies
from dropout_stats.adapters import adapters

A = 1e-9
ADAPTERS = adapters()


@pytest.mark.statistical(false_fail_rate=A)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("adapter", ADAPTERS, ids=[a.name for a in ADAPTERS])
def test_entry_point_passes(adapter, dtype, seed):
    r = adapter.verify(rate=0.2, dtype=dtype, seed=seed % 2**20, false_fail_rate=A)
    assert r.passed, str(r)
    if not adapter.stateful:
        assert r.check("mechanism").passed  # bit for bit against TF's (or XLA's) uniform


def test_adapters_cover_every_entry_point():
    names = {a.entry_point for a in ADAPTERS}
    for required in ("tf.nn.experimental.stateless_dropout", "tf.nn.dropout",
                     "tf.compat.v1.nn.dropout(keep_prob=...)", "keras.layers.Dropout",
                     "keras.layers.SpatialDropout1D", "keras.layers.SpatialDropout2D",
                     "keras.layers.SpatialDropout3D"):
        assert required in names
    assert {a.mode for a in ADAPTERS} == {"eager", "function", "jit"}


STATELESS = [a for a in ADAPTERS if not a.stateful and a.mode == "eager"]


@pytest.mark.statistical(false_fail_rate=10 * A)
@settings(max_examples=10)
@given(config=strategies.dropout_configs(rate=strategies.rates(min_value=0.01, max_value=0.95, edges=False),
                                         shape=strategies.shapes_and_noise_shapes(min_rank=2, max_side=32, min_units=4096)))
def test_stateless_entry_points_on_generated_configurations(config):
    """Shapes, noise shapes, rates and dtypes vary here; sensitivity is the corpus tests' job, so
    the rate check is sized for 5% of min(keep, 1 - keep) to keep the run short."""
    from dropout_stats import expected_keep_probability

    keep = expected_keep_probability(config["rate"], config["dtype"])
    delta = 0.05 * min(keep, 1 - keep) if 0 < keep < 1 else None
    for adapter in STATELESS:
        r = adapter.verify(seed=3, false_fail_rate=A / len(STATELESS), discrepancy=delta, max_calls=3000, **config)
        assert r.passed, str(r)
