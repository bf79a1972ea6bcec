"""verify_drop_path against tests/structured_corpus_drop_path.py: every correct implementation
passes, every broken one fails with the check its defect names (and, where the defect touches
nothing else, only that check).  Seeded; each corpus run at false_fail_rate A, so a correct entry
(or an ``only`` entry's other checks) fails with probability <= A, and a keep-probability defect
is missed with probability <= B (its false_pass_rate)."""

from __future__ import annotations

import pytest
import structured_corpus_drop_path as corpus

import dropout_stats as ds

A = 1e-9  # false_fail_rate of each corpus run
B = 1e-10  # false_pass_rate of the runs whose defect is a keep probability (keep_fraction)


def _broken_marks(entry):
    if entry.fails == {"keep_fraction"}:
        return [pytest.mark.statistical(false_fail_rate=B)]
    return [pytest.mark.statistical(false_fail_rate=A)] if entry.only else []


def _skip_unavailable(entry):
    if not entry.available():
        pytest.skip(f"{', '.join(entry.needs)} not importable")


@pytest.mark.statistical(false_fail_rate=A)
@pytest.mark.parametrize("entry", corpus.CORRECT, ids=lambda e: e.name)
def test_correct_passes(entry):
    _skip_unavailable(entry)
    report = entry.run(false_fail_rate=A)
    assert report.passed, str(report)


@pytest.mark.parametrize("entry", [pytest.param(e, id=e.name, marks=_broken_marks(e)) for e in corpus.BROKEN])
def test_broken_fails_its_check(entry):
    _skip_unavailable(entry)
    report = entry.run(false_fail_rate=A, false_pass_rate=B)
    failed = {c.name for c in report.checks if c.passed is False}
    assert entry.fails <= failed, str(report)
    if entry.only:
        assert failed == entry.fails, str(report)


def _numpy_drop_path(x, rate, seed):
    return corpus.numpy_stateless()(x, rate, seed)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mode": "sample"}, "mode ('sample') must be"),
        ({"scale_by_keep": 1}, "scale_by_keep"),
        ({"layer": "yes"}, "layer"),
        ({"shape": (0, 3)}, "shape"),
        ({"false_fail_rate": 0}, "false_fail_rate"),
        ({"discrepancy": -0.1}, "discrepancy"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_input_is_refused_before_any_call(kwargs, message):
    calls = []

    def fn(x, rate, seed):
        calls.append(1)
        return _numpy_drop_path(x, rate, seed)

    with pytest.raises((ValueError, TypeError), match=message.replace("(", r"\(").replace(")", r"\)")):
        ds.verify_drop_path(fn, 0.2, **{"shape": corpus.SMALL, **kwargs})
    assert not calls


@pytest.mark.parametrize("rate, message", [(1.5, "must be in"), (1, "every run checks rate 1")])
def test_rate_out_of_range_is_refused(rate, message):
    with pytest.raises(ValueError, match=message):
        ds.verify_drop_path(_numpy_drop_path, rate, corpus.SMALL)


def test_rate_zero_decides_exactly():
    report = ds.verify_drop_path(_numpy_drop_path, 0.0, corpus.SMALL)
    assert report.passed, str(report)
    assert {c.name for c in report.checks} == {"rate_zero", "rate_one", "inference_identity"}


def test_report_names_the_call_and_replays():
    report = ds.verify_drop_path(_numpy_drop_path, 0.3, corpus.SMALL, seed=3)
    again = ds.verify_drop_path(_numpy_drop_path, 0.3, corpus.SMALL, seed=3)
    assert report.to_dict() == again.to_dict()
    assert str(report).startswith("verify_drop_path(_numpy_drop_path, rate=0.3")
    design = next(f for f in report.findings if f.name == "drop_path_design")
    assert design.value["calls"] > 0 and "32 per call" in design.detail


def test_timm_default_training_false_is_named():
    entry = next(e for e in corpus.CORRECT if e.name == "timm.drop_path(training=True)")
    _skip_unavailable(entry)
    drop_path = corpus._timm().drop_path
    report = ds.verify_drop_path(drop_path, 0.2, corpus.SMALL, stateful=True)
    assert not report.passed
    assert report.check("keep_fraction").passed is False
    assert any(f.name == "training_default" for f in report.findings), str(report)
    assert report.check("inference_identity").passed is True  # training=False is the identity
