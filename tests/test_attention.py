"""verify_attention on Keras 3's MultiHeadAttention, Attention and AdditiveAttention and on the
attention corpus.

Keras's own layers must pass (three seeds each); each corpus layer, MultiHeadAttention with one
defect in the dropout on its attention probabilities, must fail the check made for that class of
defect, and the same construction with a plain dropout layer must pass.
dropout_site: the dropout moved to the attention output, the values or the scores (a Keras
MultiHeadAttention subclass, a single-head Keras layer written out, torch modules written as
Hugging Face's eager attention, a torch.nn.MultiheadAttention subclass) fails, and the same
constructions with the dropout on the probabilities pass.
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


# -- dropout_site: dropout on the probabilities, not on the output, values or scores -------------
def _keras_mha(site):
    """Keras MultiHeadAttention whose dropout acts at ``site``: "probabilities" (as Keras's own),
    "output" (the attention output, per element), "values" (the projected values) or "scores"
    (the logits before the softmax)."""

    class Attention(keras.layers.MultiHeadAttention):
        def build(self, query_shape, value_shape, key_shape=None):
            super().build(query_shape, value_shape, key_shape)
            self._site_seed = keras.random.SeedGenerator(getattr(self, "seed", None))

        def _compute_attention(self, query, key, value, attention_mask=None, training=None, *args, **kwargs):
            ops = keras.ops

            def drop(t, here):
                return keras.random.dropout(t, self._dropout, seed=self._site_seed) if training and here else t

            value = drop(value, site == "values")
            query = ops.multiply(query, ops.cast(self._inverse_sqrt_key_dim, query.dtype))
            scores = drop(ops.einsum(self._dot_product_equation, key, query), site == "scores")
            p = self._masked_softmax(scores, attention_mask)
            out = ops.einsum(self._combine_equation, drop(p, site == "probabilities"), value)
            return drop(out, site == "output"), p

    def make(num_heads, key_dim, dropout, seed, dtype=None):
        return Attention(num_heads=num_heads, key_dim=key_dim, dropout=dropout, seed=seed, dtype=dtype)

    make.__qualname__ = f"MultiHeadAttention(dropout on the {site})"
    return make


def _keras_single_head(site):
    """A Keras layer written out, called as layer([query, value, key]) like keras.layers.Attention:
    softmax(q k^T) v with its dropout at ``site``."""

    class ScratchAttention(keras.layers.Layer):
        def __init__(self, dropout=0.0, seed=None, dtype=None):
            super().__init__(dtype=dtype)
            self.rate, self.gen = dropout, keras.random.SeedGenerator(seed)

        def call(self, inputs, training=None):
            ops = keras.ops
            q, v, k = inputs

            def drop(t, here):
                return keras.random.dropout(t, self.rate, seed=self.gen) if training and here else t

            scores = drop(ops.matmul(q, ops.transpose(k, (0, 2, 1))), site == "scores")
            p = drop(ops.softmax(scores, axis=-1), site == "probabilities")
            return drop(ops.matmul(p, drop(v, site == "values")), site == "output")

    def make(dropout, seed, dtype=None):
        return ScratchAttention(dropout=dropout, seed=seed, dtype=dtype)

    make.__qualname__ = f"ScratchAttention(dropout on the {site})"
    return make


# the check each site fails: the output's masks and the values' fail dropout_site (the values'
# mask is also shared by every query); dropout on zero scores changes nothing: no dropout at all
SITES = {"probabilities": None, "output": "dropout_site", "values": "dropout_site", "scores": "keep_rate"}


@KERAS_3_ONLY
@pytest.mark.statistical(false_fail_rate=A)
@pytest.mark.parametrize("site", list(SITES))
@pytest.mark.parametrize("make", [_keras_mha, _keras_single_head])
def test_keras_dropout_elsewhere_than_the_probabilities_fails(make, site, seed):
    r = verify_attention(make(site), rate=0.2, seed=seed % 2**20, false_fail_rate=A)
    if SITES[site] is None:
        assert r.passed and r.check("dropout_site").values["differing"] == 0, str(r)
        return
    assert SITES[site] in {c.name for c in r.failures}, str(r)
    if site == "output":  # every other check passes: only dropout_site tells the two apart
        assert {c.name for c in r.failures} == {"dropout_site"}, str(r)


@pytest.mark.statistical(false_fail_rate=4 * A)
@pytest.mark.parametrize("rate", [0.02, 0.5, 0.9])
def test_dropout_site_passes_keras_multi_head_attention_at_other_rates(rate, seed):
    r = verify_attention(keras.layers.MultiHeadAttention, rate=rate, seed=seed % 2**20, false_fail_rate=A)
    assert r.passed and r.check("dropout_site").values["differing"] == 0, str(r)
    assert r.check("dropout_site").values["dropped"] > 0  # the pairs it compares hold dropped probabilities


def _torch_eager(site):
    """Attention written out in torch as Hugging Face's eager attention does (softmax(q k^T /
    sqrt(d)), F.dropout(..., training=self.training), times the values) over the heads' slices of
    (batch, length, heads * d) inputs, its dropout at ``site``."""
    import torch
    import torch.nn.functional as F

    class EagerAttention(torch.nn.Module):
        def __init__(self, num_heads, dropout):
            super().__init__()
            self.num_heads, self.dropout = num_heads, dropout

        def forward(self, query, key, value):
            def heads(t):
                return t.view(t.shape[0], t.shape[1], self.num_heads, -1).transpose(1, 2)

            def drop(t, here):
                return F.dropout(t, self.dropout, training=self.training) if here else t

            q, k, v = heads(query), heads(key), drop(heads(value), site == "values")
            scores = drop(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, site == "scores")
            p = drop(torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype), site == "probabilities")
            out = drop(p @ v, site == "output")
            return out.transpose(1, 2).reshape(query.shape[0], query.shape[1], -1)

    def make(num_heads, key_dim, dropout, seed=None, dtype="float32"):
        return EagerAttention(num_heads, dropout)

    make.__qualname__, make.framework = f"EagerAttention(dropout on the {site})", "torch"
    return make


def _torch_mha_output_dropout():
    """torch.nn.MultiheadAttention with its dropout moved to the attention output (the module's
    own dropout 0, F.dropout on what it returns)."""
    import torch
    import torch.nn.functional as F

    class OutputDropout(torch.nn.MultiheadAttention):
        def __init__(self, embed_dim, num_heads, dropout, dtype):
            super().__init__(embed_dim, num_heads, dropout=0.0, batch_first=True, dtype=dtype)
            self.output_dropout = dropout

        def forward(self, query, key, value, need_weights=False, **kwargs):
            out, weights = super().forward(query, key, value, need_weights=need_weights, **kwargs)
            return F.dropout(out, self.output_dropout, training=self.training), weights

    def make(num_heads, key_dim, dropout, seed=None, dtype="float32"):
        return OutputDropout(num_heads * key_dim, num_heads, dropout, getattr(torch, dtype))

    make.__qualname__, make.framework = "MultiheadAttention(dropout on the output)", "torch"
    return make


TORCH_SITES = {f"eager, {site}": (lambda site=site: _torch_eager(site), check) for site, check in SITES.items()}
TORCH_SITES["nn.MultiheadAttention, output"] = (_torch_mha_output_dropout, "dropout_site")


@pytest.mark.statistical(false_fail_rate=A)
@pytest.mark.parametrize("name", list(TORCH_SITES))
def test_torch_dropout_elsewhere_than_the_probabilities_fails(name, seed):
    pytest.importorskip("torch")
    make, failing = TORCH_SITES[name]
    r = verify_attention(make(), rate=0.2, seed=seed % 2**20, false_fail_rate=A)
    if failing is None:  # Hugging Face's eager attention itself
        assert r.passed and r.check("dropout_site").values["differing"] == 0, str(r)
        return
    assert failing in {c.name for c in r.failures}, str(r)
    if "output" in name:
        assert {c.name for c in r.failures} == {"dropout_site"}, str(r)


@KERAS_3_ONLY
@pytest.mark.statistical(false_fail_rate=A)
def test_keras_multi_head_attention_on_the_torch_backend_is_read_as_keras(seed):
    """Keras 3's layers on the torch backend are torch modules too: they are still set up and
    called as Keras layers (their weights, ``training=``), and pass."""
    import os
    import subprocess
    import sys

    pytest.importorskip("torch")
    code = (
        "import keras, dropout_stats as ds; assert keras.backend.backend() == 'torch'\n"
        f"r = ds.verify_attention(keras.layers.MultiHeadAttention, rate=0.2, seed={seed % 2**20}, "
        f"false_fail_rate={A})\n"
        "assert r.passed and r.config['backend'] == 'torch', str(r)\n"
        "assert r.check('dropout_site').passed and r.check('backward_mask').passed, str(r)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, KERAS_BACKEND="torch", PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
