"""verify_attention on Keras 3's MultiHeadAttention, Attention and AdditiveAttention and on the
attention corpus.

Keras's own layers must pass (three seeds each); each corpus layer, MultiHeadAttention with one
defect in the dropout on its attention probabilities, must fail the check made for that class of
defect, and the same construction with a plain dropout layer must pass.
dropout_site: the dropout moved to the attention output, the values or the scores (a Keras
MultiHeadAttention subclass, a single-head Keras layer written out, torch modules written as
Hugging Face's eager attention, a torch.nn.MultiheadAttention subclass) fails, and the same
constructions with the dropout on the probabilities pass.
mask_repeats: masks tiled over the queries (every 4, every 3), the batch halves or heads h and h + 2
on one mask, and call i's masks moved by i sequences (Keras and torch) fail it alone; its window
and p-value are checked on fixed draws.
Budget: each verify_attention at false_fail_rate=1e-9.  A corpus defect fails an exact check or a
statistical one where its effect is total (two heads, two queries, two calls with identical
masks: agreement 1 over thousands of pairs).
"""

import keras
import numpy as np
import pytest

from dropout_stats import verify_attention
from dropout_stats.calibration import corpus
from dropout_stats.diagnosis import diagnose

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


# -- mask_repeats: a mask row that comes back at any distance --------------------------------------
# Each layer below keeps its rate, its scale, its backward and independent neighbours (sequences,
# queries and heads 2i and 2i + 1, call 1 against call 0 at the same place): before mask_repeats
# every entry passed it.  Its masks are tiled, so the tables of the neighbour entries hold each
# pair of rows twice (their variance doubles and their p-values are anti-conservative): they run at
# false_fail_rate=1e-30 (entry levels 1.7e-31, z = 11.7 two-sided, 8.3 on the doubled table's
# scale: each passes with probability > 1 - 1e-15), so "every other entry passes" holds with
# probability > 1 - 1e-14 and the marks declare 1e-12.  mask_repeats itself fails them with
# certainty (a repeated window is there by construction).
T = 1e-30
AXIS = {"sequence": 0, "head": 1, "query": 2}


def _keras_tiled(axis, period):
    """MultiHeadAttention whose dropout draws the mask for ``period`` indices of ``axis``
    (sequence, head or query; "half": half the batch, as two micro-batches seeded the same) and
    tiles it: index i carries the mask of index i mod period."""

    class Tiled(keras.layers.Layer):
        def __init__(self, rate, seed=None):
            super().__init__()
            self.rate, self.gen = rate, keras.random.SeedGenerator(seed)

        def call(self, x, training=None):
            if not training:
                return x
            ops, at = keras.ops, AXIS[axis]
            shape = list(ops.shape(x))
            n = shape[at]
            k = -(-n // 2) if period == "half" else min(period, n)
            shape[at] = k
            mask = keras.random.dropout(ops.ones(shape, x.dtype), self.rate, seed=self.gen)
            return x * ops.take(mask, np.arange(n) % k, axis=at)

    return _keras_mha_with(Tiled, f"{axis} mask tiled every {period}")


def _keras_offset_by_one():
    """MultiHeadAttention whose masks come from one fixed stream of (sequence) mask rows, call i
    reading rows i, i + 1, ...: an RNG offset advanced by one sequence per call instead of by
    the batch.  Call 1's sequence b has call 0's sequence b + 1 mask."""

    class Offset(keras.layers.Layer):
        def __init__(self, rate, seed=None):
            super().__init__()
            self.rate, self.seed, self.calls, self.stream = rate, seed, 0, None

        def call(self, x, training=None):
            if not training:
                return x
            ops, shape = keras.ops, tuple(keras.ops.shape(x))
            if self.stream is None or self.stream.shape[1:] != shape[1:]:
                self.stream = keras.random.dropout(ops.ones((1024,) + shape[1:], x.dtype), self.rate, seed=self.seed)
            self.calls += 1
            return x * self.stream[self.calls - 1 : self.calls - 1 + shape[0]]

    return _keras_mha_with(Offset, "offset by one sequence per call")


def _keras_mha_with(drop_cls, words):
    class Attention(keras.layers.MultiHeadAttention):
        def build(self, query_shape, value_shape, key_shape=None):
            super().build(query_shape, value_shape, key_shape)
            self._dropout_layer = drop_cls(self._dropout, seed=getattr(self, "seed", None))

    def make(num_heads, key_dim, dropout, seed, dtype=None):
        return Attention(num_heads=num_heads, key_dim=key_dim, dropout=dropout, seed=seed, dtype=dtype)

    make.__qualname__ = f"MultiHeadAttention({words})"
    return make


def _torch_tiled(axis, period):
    """Attention written out in torch (Hugging Face's eager attention) whose dropout on the
    probabilities draws the mask for ``period`` indices of ``axis`` and tiles it."""
    import torch
    import torch.nn.functional as F

    class TiledEager(torch.nn.Module):
        def __init__(self, num_heads, dropout):
            super().__init__()
            self.num_heads, self.dropout = num_heads, dropout

        def forward(self, query, key, value):
            def heads(t):
                return t.view(t.shape[0], t.shape[1], self.num_heads, -1).transpose(1, 2)

            q, k, v = heads(query), heads(key), heads(value)
            p = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
            if self.training:
                at, shape = AXIS[axis], list(p.shape)
                n = shape[at]
                shape[at] = k = -(-n // 2) if period == "half" else min(period, n)
                mask = F.dropout(torch.ones(shape, dtype=p.dtype), self.dropout, training=True)
                p = p * mask.index_select(at, torch.arange(n) % k)
            out = p @ v
            return out.transpose(1, 2).reshape(query.shape[0], query.shape[1], -1)

    def make(num_heads, key_dim, dropout, seed=None, dtype="float32"):
        return TiledEager(num_heads, dropout)

    make.__qualname__, make.framework = f"EagerAttention({axis} mask tiled every {period})", "torch"
    return make


# name: (layer_cls factory, verify_attention's keywords, the displacement found, words of the diagnosis)
REPEATED = {
    "keras: queries tiled every 4": (lambda: _keras_tiled("query", 4), {}, {"query": 4}, "query 4's mask is query 0's"),
    "keras: batch halves share one mask": (
        lambda: _keras_tiled("sequence", "half"),
        {},
        {"sequence": "half"},
        "sequence {half}'s mask is sequence 0's ({half} sequences apart)",
    ),
    "keras: heads h and h + 2 share one mask": (
        lambda: _keras_tiled("head", 2),
        {"num_heads": 4},
        {"head": 2},
        "head 2's mask is head 0's",
    ),
    "keras: queries tiled every 3": (lambda: _keras_tiled("query", 3), {}, {"query": 3}, "query 3's mask is query 0's"),
    "keras: call i offset by i sequences": (
        _keras_offset_by_one,
        {},
        {"call": 1, "sequence": -1},
        "(call 1, sequence 0)'s mask is (call 0, sequence 1)'s",
    ),
    "torch: queries tiled every 4": (lambda: _torch_tiled("query", 4), {}, {"query": 4}, "query 4's mask is query 0's"),
    "torch: batch halves share one mask": (
        lambda: _torch_tiled("sequence", "half"),
        {},
        {"sequence": "half"},
        "sequence {half}'s mask is sequence 0's ({half} sequences apart)",
    ),
    "torch: heads h and h + 2 share one mask": (
        lambda: _torch_tiled("head", 2),
        {"num_heads": 4},
        {"head": 2},
        "head 2's mask is head 0's",
    ),
}


@pytest.mark.statistical(false_fail_rate=1e-12)
@pytest.mark.parametrize("name", list(REPEATED))
def test_a_mask_row_repeated_at_any_distance_fails_mask_repeats_alone(name, seed):
    """Queries tiled every 4 or 3, the batch halves on one mask, heads h and h + 2 on one mask,
    call i's masks moved by i sequences (Keras and torch): mask_repeats fails, names the
    displacement, and every other entry passes (module comment above)."""
    make, kwargs, where, words = REPEATED[name]
    if name.startswith("torch"):
        pytest.importorskip("torch")
    elif not KERAS_3:
        pytest.skip("the Keras layers build on Keras 3's MultiHeadAttention")
    r = verify_attention(make(), rate=0.2, seed=seed % 2**20, false_fail_rate=T, **kwargs)
    assert {c.name for c in r.failures} == {"mask_repeats"}, str(r)
    c = r.check("mask_repeats")
    half = -(-r.config["batch"] // 2)
    assert c.values["displacement"] == {k: half if v == "half" else v for k, v in where.items()}, c
    assert c.values["equal_rows"] == c.values["compared_rows"] and c.pvalue <= c.level <= 1e-30, c
    assert words.format(half=half) in c.observed, c.observed
    assert diagnose(r)[0] == c.values["words"], diagnose(r)  # the report's diagnosis names the repeat


def test_mask_repeats_windows_meet_the_bound_at_the_defaults():
    """At verify_attention's defaults (2 calls x 56 sequences x 2 heads x 8 queries, rows of 16
    keys, c = 0.68 at rate 0.2): windows of 14 rows, the fewest whose expected chance repeats over
    both orders stay <= 1e-30 (13 would not).  A fixed draw: no statistical risk."""
    import math

    from dropout_stats.battery.attention import AXES, ORDERS
    from dropout_stats.battery.mask_repeats import mask_repeats

    m = np.random.default_rng(3).random((2, 56, 2, 8, 16)) < 0.8
    c = mask_repeats("mask_repeats", m, AXES, ORDERS, [0.8], 1e-30)
    assert c.passed and c.pvalue == 1.0 and c.values["window_rows"] == 14 and c.values["rows"] == 1792, c
    assert c.values["bound"] == pytest.approx(2 * math.comb(1792 - 14 + 1, 2) * 0.68 ** (14 * 16), rel=1e-9), c
    assert c.values["bound"] <= 1e-30, c
    assert 2 * math.comb(1792 - 13 + 1, 2) * 0.68 ** (13 * 16) > 1e-30


def test_mask_repeats_p_value_is_valid_on_independent_masks():
    """Calibration of p = E / repeats (Markov) where chance repeats do happen (a loose bound of 0.5
    and short rows: 64 rows of 8 units, windows of 3 rows): over 300 fixed draws of independent masks the
    share with p <= x stays within what a valid p-value allows (the binomial's 1 - 1e-9 quantile
    of 300 draws at x).  Fixed draws: no statistical risk."""
    from scipy.stats import binom

    from dropout_stats.battery.attention import AXES, ORDERS
    from dropout_stats.battery.mask_repeats import mask_repeats

    rng = np.random.default_rng(2029)
    checks = [mask_repeats("m", rng.random((2, 4, 2, 4, 8)) < 0.8, AXES, ORDERS, [0.8], 0.5) for _ in range(300)]
    assert {c.values["window_rows"] for c in checks} == {3}
    ps = np.array([c.pvalue for c in checks])
    assert 0 < np.count_nonzero(ps < 1) < 300  # chance repeats are found, in some draws
    for x in (0.05, 0.25, 0.5):
        assert np.count_nonzero(ps <= x) <= binom.ppf(1 - 1e-9, 300, x), (x, np.sort(ps)[:10])
