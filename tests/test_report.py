"""What a person reads: a failed report leads with its most likely defect, fits 100 columns,
and its findings are true of the run (measured on fn's outputs, or stated as what a correct
implementation does).  Defects are the corpus's, caught with the miss chances tests/_power.py
computes."""

from __future__ import annotations

import json

import pytest
import tensorflow as tf
from _power import corpus_miss

import dropout_stats as ds
from dropout_stats.calibration import corpus

A = 1e-9
MISS = corpus_miss(A / 16, A)


def stateless(x, rate, seed, noise_shape=None):
    return tf.nn.experimental.stateless_dropout(x, rate, seed=seed, noise_shape=noise_shape)


def _rate(name):
    bound = MISS[name][1]
    return [pytest.mark.statistical(false_fail_rate=bound)] if bound > 0 else []


CASES = [
    pytest.param(
        corpus.shared_across_batch,
        {},
        "one mask row shared across the batch: rows agree with probability 1",
        marks=_rate("mask shared across the batch"),
        id="batch",
    ),
    pytest.param(
        corpus.mixes_seed,
        {"reference": None},
        "masks from different seeds are the same",
        marks=_rate("seed components mixed"),
        id="seed",
    ),
    pytest.param(
        corpus.ignores_noise_shape,
        {"reference": None},
        "noise_shape ignored or misapplied",
        marks=_rate("noise_shape ignored"),
        id="noise_shape",
    ),
    pytest.param(
        corpus.backward_other_seed,
        {},
        "the backward pass uses another mask",
        marks=_rate("backward mask from the next seed"),
        id="backward",
    ),
    pytest.param(corpus.swapped_seed, {}, "an RNG of its own", marks=_rate("seed components swapped"), id="own RNG"),
    pytest.param(
        corpus.tiled_half,
        {"reference": None},
        "the mask repeats within a call",
        marks=_rate("half the last axis tiled"),
        id="tiled",
    ),
    pytest.param(corpus.scale_one_ulp_off, {"exact_scale": True}, "kept values are scaled wrongly", id="scale"),
    pytest.param(corpus.scale_tenth_percent_off, {}, "kept values are scaled wrongly", id="scale-bound"),
    pytest.param(
        corpus.rate_offset,
        {"reference": None},
        "the keep rate is wrong",
        marks=_rate("rate offset by 1% of the rate"),
        id="rate",
    ),
]


@pytest.mark.parametrize("fn,kwargs,words", CASES)
def test_a_failed_report_leads_with_the_defect_and_fits_100_columns(fn, kwargs, words, seed):
    r = ds.verify(fn, rate=0.2, seed=seed % 2**30, false_fail_rate=A, false_pass_rate=A, **kwargs)
    text = str(r)
    lines = text.splitlines()
    diagnosis = next(v for v in lines if v.startswith("diagnosis: "))
    assert words in diagnosis, text
    assert lines.index(diagnosis) < next(i for i, v in enumerate(lines) if v.startswith("check "))
    assert max(len(v) for v in lines) <= 100
    json.loads(r.to_json())  # the whole report, full width


def test_mechanism_only_failure_under_xla_names_the_stream():
    r = ds.verify(tf.function(stateless, jit_compile=True), rate=0.2, false_fail_rate=A)
    text = " ".join(str(r).split())  # lines are wrapped at 100 columns
    assert "diagnosis: the masks are TensorFlow's other stream" in text
    assert "use reference='tensorflow-xla'" in text.split("check status")[0]


def test_a_stateful_function_under_the_stateless_contract_is_named():
    def nn(x, rate, noise_shape=None):
        return tf.nn.dropout(x, rate, noise_shape=noise_shape)

    r = ds.verify(nn, rate=0.2, false_fail_rate=A)
    text = " ".join(str(r).split())
    assert "diagnosis: a stateful function called with the stateless contract" in text
    assert "stateful=True (CLI --stateful)" in text


def test_findings_are_what_the_function_did_or_say_what_a_correct_one_does():
    """A scale bug: no scale_formula or mean_bias finding claims TensorFlow's formula; the keep
    probability finding is stated as what a correct implementation keeps."""
    r = ds.verify(corpus.scale_tenth_percent_off, rate=0.3, false_fail_rate=A)
    names = {f.name for f in r.findings}
    assert "scale_formula" not in names and "mean_bias" not in names
    keep = next(f for f in r.findings if f.name == "keep_probability")
    assert "a correct implementation keeps" in keep.detail
    ok = ds.verify(stateless, rate=0.2, dtype="bfloat16", false_fail_rate=A)
    bias = next(f for f in ok.findings if f.name == "mean_bias")
    assert bias.measured.startswith("sum|y|/sum|x| = ") and "of fn's outputs" in bias.measured
