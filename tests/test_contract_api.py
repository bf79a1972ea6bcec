"""The contract through verify(): correct dropout written the ways people write it passes, what is
not dropout is named for what it is, and a run replays.  Each passing run is a statistical test at
level A; the failures asserted are exact (contract errors, scale bounds) or far past their level."""

import json
import re
import subprocess
import sys
import textwrap

import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf

import dropout_stats as ds

A = 1e-9  # false-fail rate of each verify() run here


def textbook_tf(x, rate, seed):
    """Inverted dropout as a textbook writes it: no noise_shape, the divide in the dtype."""
    u = tf.random.stateless_uniform(tf.shape(x), seed=seed, dtype=x.dtype)
    return tf.where(u >= rate, x / (1 - rate), tf.zeros_like(x))


@pytest.mark.statistical(false_fail_rate=A)
@pytest.mark.parametrize("rate", [0.6, 0.65])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_textbook_tensorflow_passes_at_every_rate(rate, dtype):
    r = ds.verify(textbook_tf, rate=rate, dtype=dtype, false_fail_rate=A)
    assert r.passed, str(r)
    assert r.check("mechanism").passed  # TensorFlow's stream: the bit-exact mask check still runs
    assert any(f.name == "noise_shape" for f in r.findings)  # called without noise_shape, and says so


def _torch_style(x, rate, seed):
    """A module written ``x * keep / (1 - p)``: the mask as floats, the divide by a Python float."""
    rng = np.random.default_rng(list(seed))
    keep = (rng.random(x.shape) >= rate).astype(x.dtype)
    return (x * keep / x.dtype.type(1 - rate)).astype(x.dtype)


_BUFFERS = {}


def _reuses_its_buffer(x, rate, seed):
    """Correct, but the same output array on every call (``out=``)."""
    rng = np.random.default_rng(list(seed))
    out = _BUFFERS.setdefault((x.shape, x.dtype.name), np.empty_like(x))
    np.multiply(x, (rng.random(x.shape) >= rate) / (1 - rate), out=out, casting="unsafe")
    return out


def _binomial_mask(x, rate, seed):
    """numpy's binomial: exact Bernoulli(1 - rate) draws, a fresh draw per rate (masks do not nest)."""
    rng = np.random.default_rng(list(seed))
    return (x * rng.binomial(1, 1 - rate, x.shape) / (1 - rate)).astype(x.dtype)


def _bf16_rounded_once(x, rate, seed):
    """x * (1 / (1 - rate)) in float64, rounded once to bfloat16."""
    rng = np.random.default_rng(list(seed))
    keep = rng.random(x.shape) >= rate
    y = x.astype(np.float64) * (1 / (1 - rate))
    return np.where(keep, y, 0.0).astype(ml_dtypes.bfloat16)


@pytest.mark.statistical(false_fail_rate=A)
@pytest.mark.parametrize(
    "fn,dtype,rate",
    [
        (_torch_style, "float32", 0.3),
        (_torch_style, "float16", 0.65),
        (_reuses_its_buffer, "float32", 0.2),
        (_binomial_mask, "float64", 0.6),
        (_bf16_rounded_once, "bfloat16", 0.2),
    ],
    ids=lambda v: getattr(v, "__name__", str(v)),
)
def test_correct_numpy_dropout_passes(fn, dtype, rate):
    r = ds.verify(fn, rate=rate, dtype=dtype, backend="numpy", reference=None, false_fail_rate=A)
    assert r.passed, str(r)
    assert [f.value for f in r.findings if f.name == "scale_formula"] in (["bound"], ["multiply"], ["divide"])


@pytest.mark.statistical(false_fail_rate=A)
def test_masks_that_do_not_nest_are_a_finding_unless_the_threshold_is_declared():
    r = ds.verify(_binomial_mask, rate=0.3, backend="numpy", reference=None, false_fail_rate=A)
    found = [f for f in r.findings if f.name == "threshold_mechanism"]
    assert r.passed and len(found) == 1 and found[0].value is False, str(r)
    assert "do not nest" in found[0].detail and "mechanism='threshold'" in found[0].detail
    assert r.check("threshold_nesting").passed is None and "used to test nesting" in r.check("threshold_nesting").detail
    declared = ds.verify(_binomial_mask, rate=0.3, backend="numpy", reference=None, mechanism="threshold")
    assert declared.check("threshold_nesting").passed is False  # exact: masks drawn per rate never nest


def _one_ulp_high(x, rate, seed, noise_shape=None):
    y = tf.nn.experimental.stateless_dropout(x, rate, seed=seed, noise_shape=noise_shape)
    bits = tf.bitcast(y, tf.int32)
    return tf.bitcast(tf.where(y != 0, bits + 1, bits), tf.float32)


@pytest.mark.statistical(false_fail_rate=A)
def test_one_ulp_off_the_framework_passes_by_default_and_fails_when_exact_is_asked():
    r = ds.verify(_one_ulp_high, rate=0.3, false_fail_rate=A)
    assert r.passed and r.check("scale").passed, str(r)
    assert [f.value for f in r.findings if f.name == "scale_formula"] == ["bound"]
    exact = ds.verify(_one_ulp_high, rate=0.3, exact_scale=True, false_fail_rate=A)
    assert exact.check("scale").passed is False
    assert "exact_scale=True" in exact.check("scale").reproduce


def _scale_1pct(x, rate, seed, noise_shape=None):
    return tf.nn.experimental.stateless_dropout(x, rate, seed=seed, noise_shape=noise_shape) * 1.01


def test_a_scale_one_percent_off_fails_the_bound():
    r = ds.verify(_scale_1pct, rate=0.3)
    c = r.check("scale")
    assert c.passed is False and "outside the rounding bound" in c.observed and "u" in c.expected


def test_a_noise_shape_for_a_function_without_one_is_refused():
    with pytest.raises(ValueError, match=r"noise_shape \(\[64, 1\]\) needs fn to take a noise_shape argument"):
        ds.verify(textbook_tf, rate=0.2, shape=(64, 16), noise_shape=(64, 1))


def test_nan_outputs_and_inputs_changed_in_place_are_named():
    def nan(x, rate, seed):
        return np.full_like(x, np.nan)

    def in_place(x, rate, seed):
        x *= (np.random.default_rng(list(seed)).random(x.shape) >= rate) / x.dtype.type(1 - rate)
        return x

    r = ds.verify(nan, rate=0.2, backend="numpy", reference=None)
    detail = r.check("contract").detail
    assert "returned NaN at 262,144 of 262,144 positions where x is finite (every position)" in detail
    r = ds.verify(in_place, rate=0.2, backend="numpy", reference=None)
    assert "modified its input x in place (call 1)" in r.check("contract").detail


def test_all_zero_and_identity_outputs_lead_the_diagnosis():
    from dropout_stats.diagnosis import diagnose

    zeros = ds.verify(lambda x, rate, seed: np.zeros_like(x), rate=0.2, backend="numpy", reference=None)
    words, follows, others = diagnose(zeros)
    assert words == "fn returns all zeros: nothing kept in 262,144 draws" and "keep_fraction" in follows
    assert others == []
    same = ds.verify(lambda x, rate, seed: x.copy(), rate=0.2, backend="numpy", reference=None)
    assert diagnose(same)[0].startswith("fn drops nothing")
    for c in zeros.checks:  # a constant mask has no correlation: never a number outside [-1, 1]
        if "correlation" in c.values and c.values["correlation"] is not None:
            assert -1 <= c.values["correlation"] <= 1


def _rate_bug(x, rate, seed, noise_shape=None):
    """Drops at rate + 0.05 and scales for that rate: the keep is wrong, and so is the scale."""
    return tf.nn.experimental.stateless_dropout(x, rate + 0.05, seed=seed, noise_shape=noise_shape)


def test_a_rate_bug_leads_with_the_rate_and_the_scale_follows():
    from dropout_stats.diagnosis import diagnose

    words, follows, _ = diagnose(ds.verify(_rate_bug, rate=0.3))
    assert words.startswith("the keep rate is wrong") and "scale" in follows


def _backward_of(y_fn):
    @tf.custom_gradient
    def f(t):
        y = y_fn(t)

        def grad(dy):
            return tf.where(y != 0, dy / tf.constant(0.7, t.dtype), tf.zeros_like(dy))

        return y, grad

    return f


def test_a_forward_scale_error_is_not_blamed_on_the_backward_pass():
    from dropout_stats.diagnosis import diagnose

    def fwd_wrong(x, rate, seed, noise_shape=None):
        return _backward_of(lambda t: _scale_1pct(t, rate, seed, noise_shape))(x)

    words, follows, _ = diagnose(ds.verify(fwd_wrong, rate=0.3))
    assert words.startswith("kept values are scaled wrongly") and "backward" not in words


def make_dropout(rate, seed):
    """A factory the reproduce line can name (module-level: importable)."""
    import keras

    return keras.layers.Dropout(rate, seed=seed)


@pytest.mark.statistical(false_fail_rate=2 * A)
def test_verify_layer_reproduce_lines_replay_the_report():
    r = ds.verify_layer(make_dropout, rate=0.3, false_fail_rate=A)
    lines = {c.reproduce.split("; ")[0] for c in r.checks if c.reproduce}
    line = "verify_layer(test_contract_api.make_dropout, rate=0.3, dtype='float32', shape=[64, 4096], seed=0, " + (
        "false_fail_rate=1e-09)"
    )
    assert lines == {line}, lines
    import test_contract_api

    again = eval(line, {"verify_layer": ds.verify_layer, "test_contract_api": test_contract_api})  # as printed
    assert [(c.name, c.passed, c.pvalue) for c in again.checks] == [(c.name, c.passed, c.pvalue) for c in r.checks]


STATEFUL = textwrap.dedent("""
    import json, sys
    import numpy as np
    import dropout_stats as ds

    def stateful(x, rate):
        return np.where(np.random.random(x.shape) >= rate, x / x.dtype.type(1 - rate), 0).astype(x.dtype)

    r = ds.verify(stateful, rate=0.3, stateful=True, backend="numpy", reference=None, false_fail_rate=1e-9)
    print(json.dumps([[c.name, c.passed, c.pvalue, c.observed] for c in r.checks]
                     + [[f.name, f.detail] for f in r.findings]))
""")


@pytest.mark.statistical(false_fail_rate=2e-9)
def test_a_stateful_run_replays_in_another_process():
    """A stateful fn draws from numpy's global generator: verify seeds it (and says so), so two
    processes give the same report."""
    runs = [
        subprocess.run([sys.executable, "-c", STATEFUL], capture_output=True, text=True, timeout=600) for _ in range(2)
    ]
    assert runs[0].returncode == 0, runs[0].stderr
    first, second = (json.loads(r.stdout.strip().splitlines()[-1]) for r in runs)
    assert first == second
    assert any(item[0] == "seeded" and "numpy.random.seed(0)" in item[1] for item in first)


@pytest.mark.statistical(false_fail_rate=A)
def test_a_function_that_raises_mid_run_keeps_what_was_measured():
    calls = {"n": 0}

    def breaks_at_8(x, rate, seed):
        calls["n"] += 1
        if calls["n"] == 8:
            raise RuntimeError("boom")
        rng = np.random.default_rng(list(seed))
        return np.where(rng.random(x.shape) >= rate, x / x.dtype.type(1 - rate), x.dtype.type(0))

    r = ds.verify(breaks_at_8, rate=0.2, backend="numpy", reference=None, false_fail_rate=A)
    contract, keep = r.check("contract"), r.check("keep_fraction")
    assert contract.passed is False and "raised RuntimeError: boom (at call 8)" in contract.detail
    assert keep.passed and keep.values["n"] > 0 and "before fn broke the contract" in keep.detail


def test_a_hanging_call_is_stopped_by_the_timeout():
    import time

    def hangs(x, rate, seed):
        time.sleep(3600)

    t0 = time.perf_counter()
    r = ds.verify(hangs, rate=0.2, backend="numpy", reference=None, call_timeout=0.5)
    assert time.perf_counter() - t0 < 30
    assert "did not return within call_timeout (0.5 s) at call 1" in r.check("contract").detail
    with pytest.raises(ValueError, match=r"call_timeout \(-1"):
        ds.verify(hangs, rate=0.2, call_timeout=-1)


REPLAY = textwrap.dedent("""
    import tensorflow as tf

    def test_other(dropout_verifier):
        assert dropout_verifier.false_fail_rate > 0

    def test_broken(dropout_verifier):
        fn = lambda x, r, s, noise_shape=None: tf.nn.experimental.stateless_dropout(
            x, r + 0.1, seed=s, noise_shape=noise_shape
        )
        dropout_verifier(fn, rate=0.3, shape=[64, 1024])
""")


def test_the_plugins_replay_line_pins_the_tests_share_of_the_budget(pytester):
    """Two tests share 1e-6: the failure's replay line selects one test, which alone would get the
    whole budget, so the line pins its share (5e-07) and the replay runs at the same level."""
    pytester.makepyfile(test_replay=REPLAY)
    first = pytester.runpytest_subprocess("--dropout-stats-seed=3", "-p", "no:xdist", "-p", "no:randomly")
    first.assert_outcomes(passed=1, failed=1)
    line = re.search(
        r"replay with (--dropout-stats-seed=3 --dropout-stats-false-fail-rate=5e-07 \S+)", first.stdout.str()
    )
    assert line, first.stdout.str()
    args = line.group(1).split()
    again = pytester.runpytest_subprocess(*args, "-p", "no:xdist", "-p", "no:randomly")
    again.assert_outcomes(failed=1)
    level = re.compile(r"false_fail_rate=([0-9.e-]+)")
    assert level.findall(first.stdout.str())[:1] == level.findall(again.stdout.str())[:1] == ["5e-07"]


def _float32_uniform(x, rate, seed):
    """The textbook line on a 16-bit x: stateless_uniform's default dtype is float32."""
    u = tf.random.stateless_uniform(tf.shape(x), seed=seed)
    return tf.where(u >= rate, x / (1 - rate), tf.zeros_like(x))


def _float32_uniform_swapped(x, rate, seed):
    u = tf.random.stateless_uniform(tf.shape(x), seed=tf.stack([seed[1], seed[0]]))
    return tf.where(u >= rate, x / (1 - rate), tf.zeros_like(x))


@pytest.mark.statistical(false_fail_rate=A)
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_tensorflows_float32_stream_on_16_bit_inputs_is_its_mechanism(dtype):
    r = ds.verify(_float32_uniform, rate=0.2, dtype=dtype, false_fail_rate=A)
    assert r.passed, str(r)
    assert [f.value for f in r.findings if f.name == "stream"] == ["tensorflow-float32"]
    swapped = ds.verify(_float32_uniform_swapped, rate=0.2, dtype=dtype, false_fail_rate=A)
    assert swapped.check("mechanism").passed is False  # bit for bit still: another seed is another mask
