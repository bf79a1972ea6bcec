"""verify_recurrent on Keras's SimpleRNN, GRU and LSTM (Keras 3, and Keras 2 in tox's tf212) and
on the recurrent corpus (Keras 3).

Keras's own layers must pass (several seeds: the fixture's, and two more per class); each
corpus layer, a SimpleRNN cell with one defect in its dropout, must fail the check made for
that class of defect, and the same construction without the defect must pass.
input_recurrent_independence: Keras SimpleRNN, LSTM and GRU whose cell derives the recurrent mask
from the input mask (the same, rolled, permuted, complemented) and a recurrent layer written out
(both masks from one seed; the previous sequence's mask) fail it alone.
input_mask_repeats, recurrent_mask_repeats: Keras 3 LSTMs (TensorFlow and the torch backend) whose
masks are drawn for part of the batch and tiled, and a recurrent layer written out whose masks move
by a sequence per call, fail them alone.
Budget: each verify_recurrent at false_fail_rate=1e-9.  A corpus defect fails an exact check
or a statistical one where its effect is total (a whole batch on one mask row, identical masks
on two calls, a keep rate of 0.8 tested against 0.6 over 42,240 draws: z > 80).
"""

import keras
import numpy as np
import pytest

from dropout_stats import verify_recurrent
from dropout_stats.battery.recurrent import layout
from dropout_stats.calibration import corpus
from dropout_stats.diagnosis import diagnose

A = 1e-9
KERAS_3 = int(keras.__version__.split(".")[0]) >= 3
KERAS_3_ONLY = pytest.mark.skipif(not KERAS_3, reason="the corpus cells override Keras 3's mask methods")
CLASSES = ["SimpleRNN", "GRU", "LSTM"]


@pytest.mark.statistical(false_fail_rate=3 * A)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("cls", CLASSES)
def test_keras_recurrent_layers_pass(cls, dtype, seed):
    for s in (seed % 2**20, seed % 2**20 + 1, seed % 2**20 + 2):
        r = verify_recurrent(
            getattr(keras.layers, cls), dropout=0.2, recurrent_dropout=0.4, dtype=dtype, seed=s, false_fail_rate=A
        )
        assert r.passed, str(r)
        # Keras 3 documents one mask per sequence, and does it
        assert r.check("input_time_sharing").passed and r.check("recurrent_time_sharing").passed
        assert r.check("input_scale").passed and r.check("backward_input_mask").passed


@pytest.mark.statistical(false_fail_rate=2 * A)
@pytest.mark.parametrize("cls", ["GRU", "LSTM"])
def test_each_rate_alone_is_applied(cls, seed):
    """recurrent_dropout alone drops the state at its own rate (keras-team/keras#19395 made it
    read dropout, so it did nothing); dropout alone leaves the state alone."""
    layer_cls = getattr(keras.layers, cls)
    r = verify_recurrent(layer_cls, dropout=0.0, recurrent_dropout=0.3, seed=seed % 2**20, false_fail_rate=A)
    assert r.passed and r.check("recurrent_keep_rate").pvalue is not None, str(r)
    assert r.check("input_keep_rate").values["kept"] == r.check("input_keep_rate").values["n"]
    # Keras 2 (2.12): without recurrent dropout GRU and LSTM take their fused path, which draws the
    # input mask for the whole (batch, time, features) input: a fresh one per step (below)
    r = verify_recurrent(
        layer_cls, dropout=0.3, recurrent_dropout=0.0, seed=seed % 2**20, false_fail_rate=A, per_step=not KERAS_3
    )
    assert r.passed and r.check("recurrent_keep_rate").values["kept"] == r.check("recurrent_keep_rate").values["n"]


@pytest.mark.skipif(KERAS_3, reason="a fact of Keras 2")
@pytest.mark.statistical(false_fail_rate=6 * A)
@pytest.mark.parametrize("cls", CLASSES)
def test_keras_2_draws_a_mask_per_time_step_except_eagerly_on_its_cell_path(cls, seed):
    """Measured on Keras 2.12 (tox tf212): one mask per sequence only eagerly on the cell path
    (SimpleRNN; GRU and LSTM with recurrent_dropout > 0).  GRU's and LSTM's fused path
    (recurrent_dropout == 0) draws the input mask for the whole 3-D input (keras/layers/rnn/
    gru.py, _defun_gru_call: get_dropout_mask_for_cell(inputs, ...)); inside tf.function the
    cell's mask cache is keyed by the graph and the time loop's while-loop body is another one.
    Each verdict is exact: the time-sharing check compares masks bit for bit."""
    layer_cls = getattr(keras.layers, cls)
    for mode in ("eager", "function"):
        for rec in (0.0, 0.4):
            r = verify_recurrent(
                layer_cls, dropout=0.2, recurrent_dropout=rec, seed=seed % 2**20, mode=mode, false_fail_rate=A
            )
            per_sequence = mode == "eager" and (cls == "SimpleRNN" or rec > 0)
            assert r.check("input_time_sharing").passed is per_sequence, (mode, rec, str(r))
            if rec > 0:
                assert r.check("recurrent_time_sharing").passed is (mode == "eager"), (mode, rec, str(r))


DEFECTS = corpus.keras_recurrent_defects() if KERAS_3 else {}


@KERAS_3_ONLY
@pytest.mark.statistical(false_fail_rate=A)
@pytest.mark.parametrize("name", list(DEFECTS))
def test_recurrent_corpus_fails_its_check(name, seed):
    layer_cls, failing = DEFECTS[name]
    r = verify_recurrent(layer_cls, dropout=0.2, recurrent_dropout=0.4, seed=seed % 2**20, false_fail_rate=A)
    if failing is None:
        assert r.passed, str(r)
    else:
        assert not r.passed and failing in {c.name for c in r.failures}, str(r)


@pytest.mark.statistical(false_fail_rate=2 * A)
@pytest.mark.parametrize("cls", CLASSES)
def test_keras_recurrent_layers_inside_tf_function(cls, seed):
    """mode='function': every forward call traced once per layer and flag.  Keras 3: still one
    mask per sequence, fresh per call.  Keras 2 (measured on 2.12): a fresh input and recurrent
    mask at every time step inside tf.function (and so inside model.fit), one per sequence
    eagerly: its mask cache is keyed by the graph, and the time loop's tf.while_loop body is a
    graph of its own (keras/backend.py ContextValueCache.setdefault).  Asserted both ways: the
    per-sequence reading fails, the per-step one passes."""
    layer_cls = getattr(keras.layers, cls)
    r = verify_recurrent(
        layer_cls, dropout=0.2, recurrent_dropout=0.4, seed=seed % 2**20, mode="function", false_fail_rate=A
    )
    assert r.config["mode"] == "function" and r.check("input_call_independence").pvalue is not None
    if KERAS_3:
        assert r.passed, str(r)
        return
    assert {c.name for c in r.failures} == {"input_time_sharing", "recurrent_time_sharing"}, str(r)
    r = verify_recurrent(
        layer_cls,
        dropout=0.2,
        recurrent_dropout=0.4,
        seed=seed % 2**20,
        mode="function",
        per_step=True,
        false_fail_rate=A,
    )
    assert r.passed, str(r)


@KERAS_3_ONLY
@pytest.mark.statistical(false_fail_rate=A)
@pytest.mark.parametrize("name", ["the first call's masks on every call", "a fresh input mask at every step"])
def test_recurrent_defects_fail_inside_tf_function_too(name, seed):
    layer_cls, failing = DEFECTS[name]
    r = verify_recurrent(
        layer_cls, dropout=0.2, recurrent_dropout=0.4, seed=seed % 2**20, mode="function", false_fail_rate=A
    )
    assert failing in {c.name for c in r.failures}, str(r)


def test_mask_scale_and_time_sharing_are_read_bit_for_bit():
    """The probes' readout is exact: the input probe's kept outputs are the layer's own output at
    inference on x * 1.25, and every time step carries step 0's mask (0 differing positions)."""
    r = verify_recurrent(keras.layers.LSTM, dropout=0.2, recurrent_dropout=0.4, false_fail_rate=A)
    assert r.check("input_scale").values["factor"] == 1.25
    assert r.check("recurrent_scale").values["factor"] == float(np.float32(1 / 0.6))
    assert r.check("input_time_sharing").values["differing"] == 0


def test_a_layer_without_a_recurrent_layout_is_named():
    def stacked(units, dropout, recurrent_dropout, seed, return_sequences, dtype=None):
        cells = [keras.layers.SimpleRNNCell(units, dropout=dropout, seed=seed) for _ in range(2)]
        return keras.layers.RNN(keras.layers.StackedRNNCells(cells), return_sequences=return_sequences, dtype=dtype)

    with pytest.raises(ValueError, match=r"not a Keras recurrent layout .* k = 1 \(SimpleRNN\), 3 \(GRU"):
        verify_recurrent(stacked, dropout=0.2, recurrent_dropout=0.2)
    with pytest.raises(ValueError, match="not a Keras recurrent layout"):
        layout([np.zeros((4, 8)), np.zeros((4, 8)), np.zeros(8)], 4, 4)  # k = 2: no such layer
    assert layout([np.zeros((4, 12)), np.zeros((4, 12)), np.zeros((2, 12))], 4, 4) == 3  # GRU, reset_after


# -- input_recurrent_independence: the two masks of one layer, one call ------------------------
def _each(mask, f):
    """f on a mask, or on each of a cell's per-gate masks (LSTM/GRU implementation 1)."""
    return [f(m) for m in mask] if isinstance(mask, (list, tuple)) else f(mask)


def _derived(base, derive):
    """``base`` (a Keras 3 recurrent layer) whose cell's recurrent mask is derive(input mask, cell):
    a deterministic function of the input mask of the same call, at the recurrent rate."""
    cell_cls = {"LSTM": keras.layers.LSTMCell, "GRU": keras.layers.GRUCell, "SimpleRNN": keras.layers.SimpleRNNCell}

    class Cell(cell_cls[base.__name__]):
        def get_recurrent_dropout_mask(self, step_input):
            if self.recurrent_dropout == 0:
                return None
            return _each(self.get_dropout_mask(step_input), lambda m: derive(m, self))

    class Layer(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.cell.__class__ = Cell

    Layer.__qualname__ = f"{base.__name__}({derive.__name__})"
    return Layer


def _same(m, cell):
    return m


def _units_rolled(m, cell):
    return keras.ops.roll(m, 1, axis=-1)


PERMUTATION = np.random.default_rng(29).permutation(64)


def _units_permuted(m, cell):
    return keras.ops.take(m, PERMUTATION, axis=-1)


def _complement(m, cell):
    """kept where the input mask dropped: keep 1 - (1 - dropout), right when recurrent_dropout = 1 - dropout"""
    return keras.ops.cast(keras.ops.equal(m, 0), m.dtype) * np.float32(1 / (1 - cell.recurrent_dropout))


def _scratch(same_seed: bool):
    """SimpleRNN written out (h_t = tanh(x_t m_in K + (h_{t-1} m_rec) R + b)), one mask of each kind
    per call.  same_seed: each mask has its own SeedGenerator, both made from the layer's seed, so
    both draw the same uniforms (the masks are nested: kept at 0.4 implies kept at 0.2).  Else: the
    recurrent mask is the input mask of the next sequence of the batch."""

    class ScratchRNN(keras.layers.Layer):
        def __init__(self, units, dropout, recurrent_dropout, seed, return_sequences, dtype=None):
            super().__init__(dtype=dtype)
            self.units, self.rates = units, (dropout, recurrent_dropout)
            self.gens = [keras.random.SeedGenerator(seed), keras.random.SeedGenerator(seed if same_seed else seed + 1)]

        def build(self, shape):
            u = self.units
            self.kernel = self.add_weight(shape=(shape[-1], u), initializer="glorot_uniform", name="kernel")
            self.recurrent_kernel = self.add_weight(shape=(u, u), initializer="glorot_uniform", name="recurrent")
            self.bias = self.add_weight(shape=(u,), initializer="zeros", name="bias")

        def call(self, x, training=None):
            ops = keras.ops
            ones = ops.ones_like(x[:, 0])
            m_in = m_rec = None
            if training and self.rates[0] > 0:
                m_in = keras.random.dropout(ones, self.rates[0], seed=self.gens[0])
            if training and self.rates[1] > 0:
                m_rec = keras.random.dropout(ones, self.rates[1], seed=self.gens[1])
                if not same_seed:
                    m_rec = ops.roll(m_in, 1, axis=0)
            h, ys = ops.zeros_like(ones), []
            for t in range(x.shape[1]):
                xt = x[:, t] if m_in is None else x[:, t] * m_in
                ht = h if m_rec is None else h * m_rec
                h = ops.tanh(ops.matmul(xt, self.kernel) + ops.matmul(ht, self.recurrent_kernel) + self.bias)
                ys.append(h)
            return ops.stack(ys, axis=1)

    ScratchRNN.__qualname__ = "ScratchRNN(same seed)" if same_seed else "ScratchRNN(next sequence's mask)"
    return ScratchRNN


DEPENDENT = (
    {
        # name: (layer_cls, dropout, recurrent_dropout, where the two masks meet: [d_batch, d_unit])
        "SimpleRNN: recurrent mask = input mask": (_derived(keras.layers.SimpleRNN, _same), 0.3, 0.3, [0, 0]),
        "LSTM: recurrent mask = input mask": (_derived(keras.layers.LSTM, _same), 0.3, 0.3, [0, 0]),
        "GRU: input mask rolled by one unit": (_derived(keras.layers.GRU, _units_rolled), 0.3, 0.3, [0, -1]),
        "SimpleRNN: units permuted": (_derived(keras.layers.SimpleRNN, _units_permuted), 0.3, 0.3, None),
        "LSTM: complement of the input mask": (_derived(keras.layers.LSTM, _complement), 0.3, 0.7, [0, 0]),
        "scratch: both masks from one seed (nested)": (_scratch(True), 0.2, 0.4, [0, 0]),
        "scratch: the previous sequence's input mask": (_scratch(False), 0.3, 0.3, [-1, 0]),
    }
    if KERAS_3
    else {}
)


@KERAS_3_ONLY
@pytest.mark.statistical(false_fail_rate=A)
@pytest.mark.parametrize("name", list(DEPENDENT))
def test_a_recurrent_mask_that_depends_on_the_input_mask_fails(name, seed):
    """Each layer keeps both masks at their rates, per sequence, independent across sequences and
    calls: only input_recurrent_independence, which reads both masks from one call, fails, and it
    names the displacement where they meet."""
    layer_cls, r_in, r_rec, where = DEPENDENT[name]
    r = verify_recurrent(layer_cls, dropout=r_in, recurrent_dropout=r_rec, seed=seed % 2**20, false_fail_rate=A)
    assert {c.name for c in r.failures} == {"input_recurrent_independence"}, str(r)
    c = r.check("input_recurrent_independence")
    if where is None:  # no displacement: a pair of units over the sequences
        i, j = c.values["units"]
        assert PERMUTATION[j] == i, c
    else:
        assert c.values["displacement"] == where and not c.values["reflected"], c
    assert c.values["agreement"] == (0.0 if "complement" in name else 1.0) or "nested" in name, c


@pytest.mark.statistical(false_fail_rate=A)
def test_input_recurrent_independence_is_run_and_skipped_when_a_rate_is_0(seed):
    r = verify_recurrent(keras.layers.GRU, dropout=0.3, recurrent_dropout=0.3, seed=seed % 2**20, false_fail_rate=A)
    c = r.check("input_recurrent_independence")
    assert r.passed and c.passed and c.values["tests"] == (2 * r.config["batch"] * 64 + 64 * 64) * 3, str(r)
    r = verify_recurrent(keras.layers.GRU, dropout=0.3, recurrent_dropout=0.0, seed=seed % 2**20, false_fail_rate=A)
    assert r.check("input_recurrent_independence").passed is None


def test_cross_check_counts_every_displacement_exactly():
    """The FFT's counts are the pairs' counts: a recurrent mask built as the input mask moved by
    (d_b, d_u), or with its units reversed, is found there with agreement 1, and its count equals
    the direct one.  A single deterministic draw: no statistical risk."""
    from dropout_stats.battery.recurrent import cross_check

    rng = np.random.default_rng(29)
    a = rng.random((40, 16)) < 0.7
    for db, du, reverse in [(0, 0, False), (3, -5, False), (-1, 7, False), (2, 0, True)]:
        src = a[:, ::-1] if reverse else a
        moved = np.roll(np.roll(src, -db, axis=0), -du, axis=1)  # moved[b, j] = src[b + db, j + du]
        c = cross_check(a, np.stack([rng.random((40, 16)) < 0.5, moved], axis=1), level=1e-9)
        assert not c.passed and c.values["agreement"] == 1.0 and c.values["step"] == 2, c
        assert c.values["displacement"] == [db, du] and c.values["reflected"] is reverse, c
        assert c.values["kept_given_partner_kept"] == 1.0 and c.values["tests"] == (2 * 40 * 16 + 16 * 16) * 2
    perm, a200 = rng.permutation(16), rng.random((200, 16)) < 0.7  # a fixed permutation: pairs of units
    c = cross_check(a200, a200[:, None, perm], level=1e-9)
    assert not c.passed and c.values["agreement"] == 1.0 and perm[c.values["units"][1]] == c.values["units"][0], c
    assert c.values["pairs"] == 200 and "over the 200 sequences" in c.observed, c
    c = cross_check(a, ~a[:, None, :], level=1e-9)  # the complement: agreement 0 at displacement 0
    assert not c.passed and c.values["agreement"] == 0.0 and c.values["displacement"] == [0, 0], c
    assert "input (b, j) at step 0" in c.observed, c.observed


def test_cross_check_is_conservative_on_independent_masks():
    """Calibration of input_recurrent_independence's p-value (exact tables, Bonferroni): over 300
    fixed draws of independent masks, the share with p <= x stays within what a valid p-value
    allows (the binomial's 1 - 1e-9 quantile of 300 draws at x).  Fixed draws: no statistical risk."""
    from scipy.stats import binom

    from dropout_stats.battery.recurrent import cross_check

    rng = np.random.default_rng(2029)
    ps = np.array(
        [cross_check(rng.random((48, 16)) < 0.8, rng.random((48, 2, 16)) < 0.6, level=1e-9).pvalue for _ in range(300)]
    )
    for x in (0.05, 0.25, 0.5):
        assert np.count_nonzero(ps <= x) <= binom.ppf(1 - 1e-9, 300, x), (x, np.sort(ps)[:10])


# -- input_mask_repeats, recurrent_mask_repeats: a mask row that comes back at any distance -------
# Each layer below keeps both rates, one mask per sequence, independent neighbours (sequences 2i
# and 2i + 1, call 1 against call 0 at the same sequence) and independent input and recurrent
# masks: before the repeats entries every entry passed it.  Its masks are tiled or shifted copies,
# so the neighbour tables may hold pairs twice (variance doubled, p-values anti-conservative):
# they run at false_fail_rate=1e-30 (entry levels 1.25e-31, z = 11.7; 8.3 on a doubled table's
# scale; input_recurrent_independence's 408,576 tables at 3.1e-37 each, z = 12.8, 9.0 doubled), so
# "every other entry passes" holds with probability > 1 - 1e-12, the marks' 1e-12.  The repeats
# entries fail them with certainty (a repeated window is there by construction).
T = 1e-30


PERIODS = {"half": lambda n: -(-n // 2), "all but 64": lambda n: max(1, n - 64)}


def _tiled_lstm(period):
    """Keras LSTM whose cell draws its input and recurrent masks for the first k sequences and
    tiles them over the batch: sequence b carries the masks of sequence b mod k.  ``period``:
    "half" (k = half the batch: two micro-batches seeded the same) or "all but 64" (the last 64
    sequences repeat the first 64)."""

    class Cell(keras.layers.LSTMCell):
        def _create_dropout_mask(self, step_input, dropout_rate):
            n = step_input.shape[0]
            k = PERIODS[period](n)
            mask = super()._create_dropout_mask(step_input[:k], dropout_rate)
            return _each(mask, lambda m: keras.ops.take(m, np.arange(n) % k, axis=0))

    class Layer(keras.layers.LSTM):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.cell.__class__ = Cell

    Layer.__qualname__ = f"LSTM(masks of the first k sequences tiled, k = {period})"
    return Layer


def _scratch_offset():
    """SimpleRNN written out whose masks come from one fixed stream of mask rows per path, call i
    of the layer reading rows i, i + 1, ...: an RNG offset advanced by one sequence per call
    instead of by the batch (call 1's sequence b has call 0's sequence b + 1 masks)."""

    class ScratchOffset(keras.layers.Layer):
        def __init__(self, units, dropout, recurrent_dropout, seed, return_sequences, dtype=None):
            super().__init__(dtype=dtype)
            self.units, self.rates, self.seed = units, (dropout, recurrent_dropout), seed
            self.calls, self.streams = 0, {}  # training calls so far; each path's stream of mask rows

        def build(self, shape):
            u = self.units
            self.kernel = self.add_weight(shape=(shape[-1], u), initializer="glorot_uniform", name="kernel")
            self.recurrent_kernel = self.add_weight(shape=(u, u), initializer="glorot_uniform", name="recurrent")
            self.bias = self.add_weight(shape=(u,), initializer="zeros", name="bias")

        def mask(self, path, n):
            rate = self.rates[path]
            if path not in self.streams:
                ones = keras.ops.ones((4096, self.units), self.compute_dtype)
                self.streams[path] = keras.random.dropout(ones, rate, seed=self.seed + path)
            return keras.ops.take(self.streams[path], (np.arange(n) + self.calls) % 4096, axis=0)

        def call(self, x, training=None):
            ops, n = keras.ops, x.shape[0]
            m_in = self.mask(0, n) if training and self.rates[0] > 0 else None
            m_rec = self.mask(1, n) if training and self.rates[1] > 0 else None
            self.calls += bool(training)
            h, ys = ops.zeros((n, self.units), x.dtype), []
            for t in range(x.shape[1]):
                xt = x[:, t] if m_in is None else x[:, t] * m_in
                ht = h if m_rec is None else h * m_rec
                h = ops.tanh(ops.matmul(xt, self.kernel) + ops.matmul(ht, self.recurrent_kernel) + self.bias)
                ys.append(h)
            return ops.stack(ys, axis=1)

    ScratchOffset.__qualname__ = "ScratchRNN(offset by one sequence per call)"
    return ScratchOffset


@KERAS_3_ONLY
@pytest.mark.statistical(false_fail_rate=1e-12)
@pytest.mark.parametrize("period", list(PERIODS))
def test_lstm_masks_tiled_over_the_batch_fail_the_repeats_entries_alone(period, seed):
    """Keras 3 LSTM whose masks are drawn for part of the batch and tiled (the batch halves on
    one mask; the last 64 sequences on the first 64's): both repeats entries fail, naming the
    sequences, and nothing else does.  (Masks of a few sequences tiled over many, each row ten
    times, already fail input_recurrent_independence: its tables count each pair ten times.)"""
    r = verify_recurrent(_tiled_lstm(period), dropout=0.2, recurrent_dropout=0.4, seed=seed % 2**20, false_fail_rate=T)
    assert {c.name for c in r.failures} == {"input_mask_repeats", "recurrent_mask_repeats"}, str(r)
    k = PERIODS[period](r.config["batch"])
    for part in ("input", "recurrent"):
        c = r.check(f"{part}_mask_repeats")
        assert c.values["displacement"] == {"sequence": k} and c.pvalue <= c.level <= 1e-30, c
        assert f"sequence {k}'s {part} mask is sequence 0's ({k} sequences apart) in 2 of 2 calls" in c.observed, c
    assert diagnose(r)[0] == r.check("input_mask_repeats").values["words"], diagnose(r)
    assert diagnose(r)[2] == ["recurrent_mask_repeats"], diagnose(r)  # its own defect, named apart


@KERAS_3_ONLY
@pytest.mark.statistical(false_fail_rate=1e-12)
def test_masks_offset_by_a_sequence_per_call_fail_the_repeats_entries_alone(seed):
    """A recurrent layer written out whose calls read one stream of mask rows, each call one
    sequence further: call 1's masks are call 0's moved by a sequence.  Neighbours and the same
    sequence of two calls are independent; the repeats entries find the displacement."""
    r = verify_recurrent(_scratch_offset(), dropout=0.2, recurrent_dropout=0.4, seed=seed % 2**20, false_fail_rate=T)
    assert {c.name for c in r.failures} == {"input_mask_repeats", "recurrent_mask_repeats"}, str(r)
    for part in ("input", "recurrent"):
        c = r.check(f"{part}_mask_repeats")
        assert c.values["displacement"] == {"call": 1, "sequence": -1}, c
        assert c.values["equal_rows"] == c.values["compared_rows"] == r.config["batch"] - 1, c
        assert f"(call 1, sequence 0)'s {part} mask is (call 0, sequence 1)'s" in c.observed, c


@KERAS_3_ONLY
@pytest.mark.statistical(false_fail_rate=1e-12)
def test_lstm_masks_tiled_over_the_batch_fail_on_the_torch_backend_too(seed):
    """The tiled LSTM of Keras 3 on the torch backend (a torch module: verify_recurrent takes Keras
    recurrent layers, on any backend): the same two entries fail, and only they."""
    import os
    import subprocess
    import sys
    import textwrap

    pytest.importorskip("torch")
    code = textwrap.dedent(
        f"""
        import keras, numpy as np, dropout_stats as ds
        from dropout_stats.diagnosis import diagnose
        assert keras.backend.backend() == "torch"

        class Cell(keras.layers.LSTMCell):
            def _create_dropout_mask(self, step_input, rate):
                n = step_input.shape[0]
                k = -(-n // 2)
                mask = super()._create_dropout_mask(step_input[:k], rate)
                take = lambda m: keras.ops.take(m, np.arange(n) % k, axis=0)
                return [take(m) for m in mask] if isinstance(mask, list) else take(mask)  # per gate, or one

        class Layer(keras.layers.LSTM):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self.cell.__class__ = Cell

        r = ds.verify_recurrent(Layer, dropout=0.2, recurrent_dropout=0.4, seed={seed % 2**20}, false_fail_rate={T})
        assert r.config["backend"] == "torch", str(r)
        assert {{c.name for c in r.failures}} == {{"input_mask_repeats", "recurrent_mask_repeats"}}, str(r)
        k = r.config["batch"] // 2
        assert f"sequence {{k}}'s input mask is sequence 0's" in diagnose(r)[0], diagnose(r)
        """
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, KERAS_BACKEND="torch", PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_repeats_entry_reads_per_step_rows():
    """per_step=True: rows are (call, step, sequence); fresh masks at every step pass, a step
    that repeats step 0 is named.  Fixed draws: no statistical risk (a chance repeat <= 1e-30)."""
    from dropout_stats.battery.recurrent import _repeats_check

    rng = np.random.default_rng(7)
    masks = [rng.random((300, 3, 64)) < 0.8 for _ in range(2)]
    c = _repeats_check("input", 0.2, masks, 0.8, True, 1e-30, "")
    assert c.passed and c.values["rows"] == 2 * 3 * 300 and c.values["window_rows"] == 4, c
    masks[1][:, 2] = masks[1][:, 0]  # call 1: step 2 carries step 0's mask
    c = _repeats_check("input", 0.2, masks, 0.8, True, 1e-30, "")
    assert not c.passed and c.values["displacement"] == {"step": 2}, c
    assert "step 2's input mask is step 0's (2 steps apart) in 300 of 600 (call, sequence) rows" in c.observed, c
    c = _repeats_check("recurrent", 0.2, masks, 0.8, True, 1e-30, "")  # the recurrent mask: read from step 1
    assert "step 3's recurrent mask is step 1's (2 steps apart)" in c.observed, c
    c = _repeats_check("input", 0.2, [m[:3, :, :8] for m in masks], 0.8, True, 1e-30, "")  # 18 rows of 8 units
    assert c.passed is None and "windows of 25 rows, and fewer than two fit" in c.detail, c
