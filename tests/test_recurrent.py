"""verify_recurrent on Keras's SimpleRNN, GRU and LSTM (Keras 3, and Keras 2 in tox's tf212) and
on the recurrent corpus (Keras 3).

Keras's own layers must pass (several seeds: the fixture's, and two more per class); each
corpus layer, a SimpleRNN cell with one defect in its dropout, must fail the check made for
that class of defect, and the same construction without the defect must pass.
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
