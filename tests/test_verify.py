"""verify(): correct implementations pass, every broken one in the corpus fails, bad input is
reported clearly.

Budget: each verify() here runs at false_fail_rate=1e-9 (a correct implementation fails with
probability <= 1e-9) and false_pass_rate=1e-9 where a defect must be caught.
"""

import json

import numpy as np
import pytest
import tensorflow as tf
from _power import corpus_miss

import dropout_stats as ds
from dropout_stats.calibration.corpus import STATEFUL, STATELESS

A = 1e-9


def stateless(x, rate, seed, noise_shape=None):
    return tf.nn.experimental.stateless_dropout(x, rate, seed=seed, noise_shape=noise_shape)


def stateful(x, rate, noise_shape=None):
    return tf.nn.dropout(x, rate, noise_shape=noise_shape)


@pytest.mark.statistical(false_fail_rate=A)  # per parametrized case: one verify() at level A
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("rate", [0.2, 0.7])
def test_tensorflow_stateless_passes(dtype, rate, seed):
    r = ds.verify(stateless, rate=rate, dtype=dtype, seed=seed % 2**31, false_fail_rate=A)
    assert r.passed, str(r)
    assert r.check("mechanism").passed and r.check("scale").passed


@pytest.mark.statistical(false_fail_rate=A)
@pytest.mark.parametrize("seed_index", range(10))
def test_correct_implementation_passes_across_seeds(seed_index):
    r = ds.verify(stateless, rate=0.3, seed=1000 + seed_index, false_fail_rate=A)
    assert r.passed, str(r)


MISS = corpus_miss(A / 16, A)  # name -> (kind of argument, bound): tests/_power.py derives each


def _corpus_params(entries):
    """One case per defect, marked with the chance that verify() misses it, computed in
    tests/_power.py at the smallest share of the run's budget a check gets (A / 16) and the
    fewest calls a run makes; defects an exact check sees in every call carry no mark."""
    params = []
    for e in entries:
        kind, miss = MISS[e[0]]
        assert miss < 1e-9 or kind == "design", (e[0], kind, miss)
        marks = [pytest.mark.statistical(false_fail_rate=max(miss, 1e-300))] if miss > 0 else []
        params.append(pytest.param(*e, id=e[0], marks=marks))
    return params


@pytest.mark.parametrize("name,fn,catchers,kwargs", _corpus_params(STATELESS))
def test_broken_stateless_implementations_fail(name, fn, catchers, kwargs, seed):
    r = ds.verify(fn, rate=0.2, seed=seed % 2**30, false_fail_rate=A, false_pass_rate=A, **kwargs)
    failed = {c.name for c in r.failures}
    assert not r.passed
    assert failed & catchers, f"{name}: expected one of {catchers} to fail, failed {failed}\n{r}"


@pytest.mark.parametrize("name,fn,catchers,kwargs", _corpus_params(STATEFUL))
def test_broken_stateful_implementations_fail(name, fn, catchers, kwargs, seed):
    tf.random.set_seed(seed)
    r = ds.verify(fn, rate=0.2, stateful=True, false_fail_rate=A, false_pass_rate=A, **kwargs)
    failed = {c.name for c in r.failures}
    assert failed & catchers, f"{name}: expected one of {catchers} to fail, failed {failed}\n{r}"


@pytest.mark.statistical(false_fail_rate=A)
def test_stateful_contract_passes_for_tf_nn_dropout():
    tf.random.set_seed(3)
    r = ds.verify(stateful, rate=0.2, stateful=True, false_fail_rate=A)
    assert r.passed, str(r)
    assert r.check("mechanism").passed is None  # not applicable without a seed


def test_bfloat16_keep_probability_is_reported_as_a_finding():
    r = ds.verify(stateless, rate=0.2, dtype="bfloat16", false_fail_rate=A)
    finding = next(f for f in r.findings if f.name == "keep_probability")
    assert finding.value == 0.796875 and "51/64" in finding.detail
    assert "0.796875" in r.check("keep_fraction").expected


def test_bfloat16_mean_bias_is_the_keep_probability_alone():
    """bfloat16 at rate 0.2: TensorFlow keeps 102/128 = 0.796875 and scales by fl(1.25) = 1.25
    exactly, so E[y]/E[x] = 0.796875 * 1.25 = 0.99609375: the finding names the keep
    probability and not the scale."""
    r = ds.verify(stateless, rate=0.2, dtype="bfloat16", false_fail_rate=A)
    bias = next(f for f in r.findings if f.name == "mean_bias")
    assert bias.value == 0.99609375 - 1
    assert bias.detail == (
        "bfloat16 at rate 0.2: with this keep probability and this scale factor E[y]/E[x] = "
        "0.99609375 before each value's rounding, biased by -0.00391 relative (keep 0.796875 "
        "instead of 0.8)"
    )


@pytest.mark.statistical(false_fail_rate=1e-12)
def test_strict_nominal_fails_bfloat16_tensorflow():
    """102/128 against 0.8 is a 0.4% error: far beyond the 1% of 0.2 = 0.002 detectable."""
    r = ds.verify(stateless, rate=0.2, dtype="bfloat16", strict_nominal=True, false_fail_rate=A, false_pass_rate=A)
    assert r.check("keep_fraction").passed is False


@pytest.mark.parametrize("shape,probe", [(None, [256, 1, 1, 256]), ((64, 1024), [64, 1])])
def test_xla_stream_is_named_plainly(shape, probe):
    """An fn under XLA against the eager reference: the first two main masks and the probe's first
    units compared (with 4 masks stored at (64, 1024), still two), every count recomputed."""
    fn = tf.function(stateless, jit_compile=True)
    r = ds.verify(fn, rate=0.2, shape=shape, false_fail_rate=A)
    mech = r.check("mechanism")
    assert mech.passed is False and "XLA" in mech.detail and "tensorflow-xla" in mech.detail
    # compared: the main masks of seeds (0, 0) and (0, 1) and the probe's first units (seed (2, 0)),
    # each against TensorFlow's eager stateless_uniform, recomputed here
    draw = tf.function(lambda shape, seed: tf.random.stateless_uniform(shape, seed=seed), jit_compile=True)
    differ = total = 0
    for where, seed in ((r.config["shape"], [0, 0]), (r.config["shape"], [0, 1]), (probe, [2, 0])):
        eager = tf.random.stateless_uniform(where, seed=seed).numpy() >= np.float32(0.2)
        xla = draw(tf.constant(where), tf.constant(seed)).numpy() >= np.float32(0.2)
        differ += int(np.count_nonzero(eager != xla))
        total += eager.size
    assert mech.values == {"mismatches": differ, "compared": total} and mech.samples == total and differ > 0
    assert mech.observed == f"{differ} mismatches"
    assert mech.detail.startswith(
        f"{differ:,} of {total:,} positions differ from tf.random.stateless_uniform(shape, seed, float32) >= fl(rate); "
    )
    assert mech.expected == "kept == tf.random.stateless_uniform(shape, seed, float32) >= fl(rate), bit for bit"
    assert mech.reproduce.endswith("seed pairs [[0, 0], [0, 1], [2, 0]]")
    r2 = ds.verify(fn, rate=0.2, shape=shape, reference="tensorflow-xla", false_fail_rate=A)
    m2 = r2.check("mechanism")
    assert m2.passed and m2.values == {"mismatches": 0, "compared": total} and m2.detail == ""
    assert m2.expected == "kept == XLA's tf.random.stateless_uniform(shape, seed, float32) >= fl(rate), bit for bit"


def test_a_mask_from_both_streams_is_not_said_to_be_xlas():
    """The very first call (seed (s, 0)) drawn eagerly, every later one under XLA (a first call
    that runs before the compiled one): the mechanism fails, and its detail must not claim the
    masks are XLA's stream, because the first compared mask is eager's.  The mismatch count is
    recomputed with TensorFlow's own stateless_uniform, eager and compiled."""
    compiled = tf.function(stateless, jit_compile=True)

    def first_eager(x, rate, seed, noise_shape=None):
        first = int(seed[0]) == 3 and int(seed[1]) == 0
        return (stateless if first else compiled)(x, rate, seed, noise_shape)

    r = ds.verify(first_eager, rate=0.2, seed=3, false_fail_rate=A)
    mech = r.check("mechanism")
    assert mech.passed is False and "XLA" not in mech.detail and "xla_stream" not in [f.name for f in r.findings]
    # compared: main (3, 0) (eager, as the reference), main (3, 1) and the probe's first units (5, 0)
    draw = tf.function(lambda shape, seed: tf.random.stateless_uniform(shape, seed=seed), jit_compile=True)
    differ = 0
    for shape, seed in ((r.config["shape"], [3, 1]), ([256, 1, 1, 256], [5, 0])):
        eager = tf.random.stateless_uniform(shape, seed=seed).numpy() >= np.float32(0.2)
        xla = draw(tf.constant(shape), tf.constant(seed)).numpy() >= np.float32(0.2)  # seed passed in
        differ += int(np.count_nonzero(eager != xla))
    assert mech.values["mismatches"] == differ > 0


def test_findings_keep_their_order_with_the_worker_thread():
    # findings come in the order their families conclude, however the worker thread and the
    # calling thread interleave: the same list on every run
    fn = tf.function(stateless, jit_compile=True)
    runs = [[f.name for f in ds.verify(fn, rate=0.2, dtype="bfloat16", false_fail_rate=A).findings] for _ in range(3)]
    # bfloat16 with TensorFlow's stream: its keep in float32 (stateless_uniform's default) is tested too,
    # and XLA's bfloat16 uniform (a truncated float32 one) keeps nearly that: keep_model, no mean_bias
    want = ["keep_probability", "keep_model", "xla_stream", "scale_formula"]
    assert runs[0] == want and runs[0] == runs[1] == runs[2]


def test_fn_is_only_called_from_the_callers_thread_and_no_thread_outlives_verify():
    import threading

    idents = set()

    def recording(x, rate, seed, noise_shape=None):
        idents.add(threading.get_ident())
        return stateless(x, rate, seed, noise_shape)

    before = threading.active_count()
    ds.verify(recording, rate=0.2, false_fail_rate=A)
    assert idents == {threading.get_ident()}
    calls = []

    def fails_late(x, rate, seed, noise_shape=None):  # raises in the calls after the main sequence
        calls.append(1)
        if len(calls) > 10:
            raise RuntimeError("device lost")
        return stateless(x, rate, seed, noise_shape)

    r = ds.verify(fails_late, rate=0.2, false_fail_rate=A)
    assert not r.passed and "device lost" in r.check("contract").detail
    assert threading.active_count() == before


@pytest.mark.statistical(false_fail_rate=A)
def test_noise_shape_counts_units():
    r = ds.verify(stateless, rate=0.2, shape=[16, 4, 4, 32], noise_shape=[16, 1, 1, 32], false_fail_rate=A)
    assert r.passed, str(r)
    assert r.check("noise_shape_consistency").passed
    n = r.check("keep_fraction").samples
    # units, not elements: each unit holds 16 elements, so counting elements would give ~16x
    assert n % (16 * 32) == 0 and n <= r.samples / 16


def test_ignored_noise_shape_reports_how_many_units_have_mixed_fate():
    """The probe's 65,536 units of 4 elements each: with the noise shape ignored a unit has mixed
    fate with probability 1 - 0.8^4 - 0.2^4 = 0.5888; fewer than half of them mixed has
    probability below exp(-2 * 65536 * 0.0888^2) < 1e-400 (Hoeffding): no statistical mark."""
    from dropout_stats.calibration.corpus import ignores_noise_shape

    c = ds.verify(ignores_noise_shape, rate=0.2, false_fail_rate=A).check("noise_shape_consistency")
    mixed, units = (int(v.replace(",", "")) for v in c.observed.split(" units")[0].split(" of "))
    assert c.passed is False and units == 65_536 and mixed > units // 2, c.observed


def test_rate_zero_keeps_everything_unchanged():
    r = ds.verify(stateless, rate=0.0, false_fail_rate=A)
    assert r.passed and r.check("keep_fraction").passed


def test_rate_that_rounds_to_one_drops_everything():
    r = ds.verify(stateless, rate=0.9995, dtype="float16", false_fail_rate=A)
    assert r.passed and "none kept" in r.check("keep_fraction").expected


def test_same_seed_same_report():
    a = ds.verify(stateless, rate=0.2, seed=9, false_fail_rate=A).to_json()
    b = ds.verify(stateless, rate=0.2, seed=9, false_fail_rate=A).to_json()
    assert a == b
    json.loads(a)


@pytest.mark.statistical(false_fail_rate=A)
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_scale_check_at_a_high_rate_gathers_beyond_the_whole_calls(dtype):
    """Rate 0.97 keeps ~8,000 values per call: the kept values the scale check reads (up to
    200,000) come from 4 whole calls (~33,000) and gathered later ones; both parts count."""
    r = ds.verify(stateless, rate=0.97, dtype=dtype, false_fail_rate=A)
    assert r.passed, str(r)
    assert r.check("scale").samples > 4 * 262_144 * 0.04


def _one_ulp_off_after_the_fourth_call(x, rate, seed, noise_shape=None):
    y = stateless(x, rate, seed, noise_shape)
    if int(seed[1]) < 4:  # the first 4 calls (the whole ones) are right; later ones are not
        return y
    bits = tf.bitcast(y, tf.int32)
    return tf.bitcast(tf.where(y != 0, bits + 1, bits), tf.float32)


def test_scale_error_only_in_the_gathered_calls_fails():
    """One ULP off TensorFlow's formula is inside the contract's rounding bound by default and a
    failure with exact_scale=True, also when only the gathered (later) calls are off."""
    r = ds.verify(_one_ulp_off_after_the_fourth_call, rate=0.97, false_fail_rate=A, exact_scale=True)
    assert r.check("scale").passed is False
    assert "largest distance 1 ULP" in r.check("scale").detail
    r = ds.verify(_one_ulp_off_after_the_fourth_call, rate=0.97, false_fail_rate=A)
    assert r.check("scale").passed, r.check("scale").detail
    assert [f.value for f in r.findings if f.name == "scale_formula"] == ["bound"]


@pytest.mark.statistical(false_fail_rate=A)
def test_max_calls_cut_short_says_what_the_draws_detect():
    """8 x 8 positions, 10 main calls: far below the 2.6 million draws the default design needs."""
    r = ds.verify(stateless, rate=0.2, shape=[8, 8], max_calls=10, false_fail_rate=A)
    assert r.passed, str(r)
    assert any(f.name == "sample_size" for f in r.findings)
    detail = r.check("keep_fraction").detail
    n = r.check("keep_fraction").samples  # 10 main calls and the other fresh calls, 64 draws each
    assert 640 <= n < 100 * 64
    assert f"cut short by max_calls, the {n:,} draws used detect only +-" in detail
    # what 640 draws detect is reported, and it is weaker than the discrepancy asked for
    assert float(detail.rsplit("+-", 1)[1]) > r.to_dict()["config"]["discrepancy"]


def test_report_reads_as_a_table():
    from dropout_stats.calibration.corpus import scale_one_ulp_off

    r = ds.verify(scale_one_ulp_off, rate=0.2, false_fail_rate=A, exact_scale=True)
    text = str(r)
    assert "check" in text and "FAIL scale" in text and "reproduce: verify(scale_one_ulp_off" in text
    assert "largest distance 1 ULP" in r.check("scale").detail
    d = r.to_dict()
    assert d["passed"] is False and any(c["name"] == "scale" and c["passed"] is False for c in d["checks"])


# bad arguments and misbehaving fns: tests/test_bad_input.py


@pytest.mark.statistical(false_fail_rate=1e-12)
def test_alpha_dropout_with_a_wrong_offset_fails():
    from dropout_stats.calibration.corpus import alpha_wrong_offset

    r = ds.verify_alpha_dropout(alpha_wrong_offset, rate=0.2, false_fail_rate=A)
    assert r.check("scale").passed is False


@pytest.mark.statistical(false_fail_rate=1e-12)
def test_gaussian_dropout_with_the_wrong_variance_fails():
    """stddev 0.2 (variance 0.04) instead of 0.5 (0.25): the chi-square statistic is off by a
    factor of 6; a miss is impossible in practice."""
    from dropout_stats.calibration.corpus import gaussian_wrong_variance

    tf.random.set_seed(1)
    r = ds.verify_gaussian_dropout(gaussian_wrong_variance, rate=0.2, false_fail_rate=A)
    assert r.check("gaussian_variance").passed is False


@pytest.mark.statistical(false_fail_rate=1e-12)
def test_gaussian_noise_shared_across_the_batch_fails():
    from dropout_stats.calibration.corpus import gaussian_shared_across_batch

    tf.random.set_seed(1)
    r = ds.verify_gaussian_dropout(gaussian_shared_across_batch, rate=0.2, false_fail_rate=A)
    assert r.check("row_independence").passed is False  # identical rows: r = 1


def test_worker_queue_holds_a_bounded_number_of_jobs_and_bytes():
    # a worker that falls behind (here: every job sleeps) must not let fn outputs pile up
    import time
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    from dropout_stats.battery import runner

    b = runner.Run.__new__(runner.Run)
    with ThreadPoolExecutor(max_workers=1) as b.worker:
        b.jobs, b.held = deque(), 0
        seen = []
        for size in [runner.MAX_HELD // 3] * 6 + [1] * 20:
            b.later(time.sleep, 0.02, held=size)  # far slower than submitting
            seen.append((len(b.jobs), b.held))
    assert all(n <= runner.MAX_PENDING for n, _ in seen)
    assert all(held <= runner.MAX_HELD or n == 1 for n, held in seen)
    assert max(n for n, _ in seen) == runner.MAX_PENDING  # the small jobs did queue up


@pytest.mark.statistical(false_fail_rate=1e-12)  # the chance the defect is missed
def test_a_rate_that_depends_on_x_fails_value_independence_even_without_a_reference():
    # +-0.02 by the sign of x averages out over every block, stride and axis (x's signs are
    # spread over all positions); with reference=None no mechanism check can see it either
    from dropout_stats.calibration.corpus import sign_dependent

    r = ds.verify(sign_dependent, rate=0.2, seed=5, reference=None, false_fail_rate=A, false_pass_rate=A)
    failed = {c.name for c in r.failures}
    assert "value_independence" in failed, str(r)
    assert "x < 0" in r.check("value_independence").observed


def test_alpha_dropout_float64_values_are_checked_on_the_first_20000():
    """float64 alpha dropout: a*x + b is compared on the first 20,000 kept values gathered (both
    roundings in float64 need exact arithmetic only there); the entry says how many."""
    from dropout_stats.adapters import adapters

    alpha = next(a for a in adapters() if a.name == "keras.layers.AlphaDropout[eager]")
    c = alpha.verify(rate=0.2, dtype="float64", seed=0).check("scale")
    assert c.passed and c.samples == 20_000 and c.detail == "20,000 kept values", c


def test_value_independence_skips_the_sign_when_x_has_one_sign():
    # AlphaDropout's battery feeds positive x: only the magnitude trend is tested
    from dropout_stats.adapters import adapters

    alpha = next(a for a in adapters() if a.name == "keras.layers.AlphaDropout[eager]")
    c = alpha.verify(rate=0.2, dtype="float32", seed=0).check("value_independence")
    assert c.observed.startswith("trend z =") and "x < 0" not in c.observed, c
