"""verify_attention on Keras 3's MultiHeadAttention, Attention and AdditiveAttention and on the
attention corpus.

Keras's own layers must pass (three seeds each); each corpus layer, MultiHeadAttention with one
defect in the dropout on its attention probabilities, must fail the check made for that class of
defect, and the same construction with a plain dropout layer must pass.
Budget: each verify_attention at false_fail_rate=1e-9.  A corpus defect fails an exact check or a
statistical one where its effect is total (two heads, two queries, two calls with identical
masks: agreement 1 over thousands of pairs).
"""

import keras
import pytest

from dropout_stats import verify_attention
from dropout_stats.calibration import corpus

A = 1e-9
KERAS_3 = int(keras.__version__.split(".")[0]) >= 3
KERAS_3_ONLY = pytest.mark.skipif(not KERAS_3, reason="the corpus builds on Keras 3's MultiHeadAttention")


@pytest.mark.statistical(false_fail_rate=3 * A)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("cls", ["MultiHeadAttention", "Attention", "AdditiveAttention"])
def test_keras_attention_layers_pass(cls, dtype, seed):
    for s in (seed % 2**20, seed % 2**20 + 1, seed % 2**20 + 2):
        r = verify_attention(getattr(keras.layers, cls), rate=0.2, dtype=dtype, seed=s, false_fail_rate=A)
        assert r.passed, str(r)
        assert r.check("scale").passed and r.check("inference_identity").passed
        backward = r.check("backward_mask")  # read from dL/dkey: it runs, and agrees
        if not KERAS_3 and dtype == "bfloat16" and cls == "MultiHeadAttention":
            # Keras 2.12's mixed_bfloat16 MultiHeadAttention cannot be differentiated (an Einsum
            # gets a float32 operand in its gradient): reported n/a with that reason
            assert backward.passed is None and "gradient could not be computed" in backward.detail, backward
        else:
            assert backward.passed, backward


DEFECTS = corpus.keras_attention_defects() if KERAS_3 else {}


@KERAS_3_ONLY
@pytest.mark.statistical(false_fail_rate=A)
@pytest.mark.parametrize("name", list(DEFECTS))
def test_attention_corpus_fails_its_check(name, seed):
    layer_cls, failing = DEFECTS[name]
    r = verify_attention(layer_cls, rate=0.2, seed=seed % 2**20, false_fail_rate=A)
    if failing is None:
        assert r.passed, str(r)
    else:
        assert not r.passed and failing in {c.name for c in r.failures}, str(r)


def test_kept_probabilities_are_read_bit_for_bit():
    """1/16 kept is 1/16 * fl(1/(1 - 0.2)) = 0.078125 exactly; at inference every probability is 1/16."""
    r = verify_attention(keras.layers.MultiHeadAttention, rate=0.2, false_fail_rate=A)
    assert r.check("scale").values["value"] == 0.078125
    assert r.check("inference_identity").values == {"training=False": True, "training omitted": True}


def test_a_layer_without_the_multi_head_layout_is_named():
    def two_dense(num_heads, key_dim, dropout, seed=None, dtype=None):  # Keras 2's takes no seed
        return keras.layers.MultiHeadAttention(
            num_heads=num_heads,
            key_dim=key_dim,
            value_dim=key_dim // 2,
            dropout=dropout,
            dtype=dtype,
            **({"seed": seed} if KERAS_3 else {}),
        )

    with pytest.raises(ValueError, match="not MultiHeadAttention's layout for num_heads=2, key_dim=16"):
        verify_attention(two_dense, rate=0.2)
