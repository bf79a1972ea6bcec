"""The pytest plugin through pytester: seeds, xdist hand-over, budget split, summary, messages."""

import re
import subprocess
import sys
import textwrap

import pytest

INNER = textwrap.dedent("""
    import os, pathlib
    import numpy as np
    import tensorflow as tf
    from dropout_stats.testing import assert_keep_fraction, assert_scaled_by_inverse_keep

    OUT = pathlib.Path(os.environ["DS_OUT"])

    def _save(name, value):
        (OUT / name).write_text(str(value))

    def test_keep(dropout_seed, dropout_verifier):
        _save("keep", dropout_seed)
        x = tf.ones([200, 200])
        y = tf.nn.experimental.stateless_dropout(x, 0.2, seed=[dropout_seed, 0])
        assert_keep_fraction(x, y, 0.2, seed=dropout_seed, false_fail_rate=dropout_verifier.false_fail_rate)
        assert_scaled_by_inverse_keep(x, y, 0.2)

    def test_verify(dropout_seed, dropout_verifier):
        _save("verify", f"{dropout_seed} {dropout_verifier.false_fail_rate}")
        fn = lambda x, r, s, noise_shape=None: tf.nn.experimental.stateless_dropout(
            x, r, seed=s, noise_shape=noise_shape
        )
        dropout_verifier(fn, rate=0.3, shape=[64, 1024])

    def test_plain(dropout_seed):
        _save("plain", dropout_seed)
""")

BROKEN = textwrap.dedent("""
    import tensorflow as tf
    from dropout_stats.testing import assert_keep_fraction

    def test_wrong_rate(dropout_seed):
        x = tf.ones([300, 300])
        y = tf.nn.experimental.stateless_dropout(x, 0.3, seed=[dropout_seed, 0])
        assert_keep_fraction(x, y, 0.2, seed=dropout_seed)
""")


def _run(pytester, out, *args):
    out.mkdir()
    pytester.makepyfile(test_inner=INNER)
    import os

    os.environ["DS_OUT"] = str(out)
    try:
        return pytester.runpytest_subprocess(*args)
    finally:
        del os.environ["DS_OUT"]


@pytest.mark.statistical(false_fail_rate=2e-9)
def test_xdist_and_serial_runs_give_the_same_seeds_and_verdicts(pytester, tmp_path):
    """Each of the two inner runs has a budget of 1e-9 (--dropout-stats-false-fail-rate), split
    over its 2 statistical tests."""
    serial = _run(
        pytester,
        tmp_path / "serial",
        "-n",
        "0",
        "--dropout-stats-seed=7",
        "--dropout-stats-false-fail-rate=1e-9",
        "-p",
        "no:randomly",
    )
    parallel = _run(
        pytester,
        tmp_path / "parallel",
        "-n",
        "2",
        "--dropout-stats-seed=7",
        "--dropout-stats-false-fail-rate=1e-9",
        "-p",
        "no:randomly",
    )
    serial.assert_outcomes(passed=3)
    parallel.assert_outcomes(passed=3)
    for name in ("keep", "verify", "plain"):
        assert (tmp_path / "serial" / name).read_text() == (tmp_path / "parallel" / name).read_text()
    assert (tmp_path / "serial" / "verify").read_text().endswith(" 5e-10")  # 1e-9 over 2 users
    text_s, text_p = serial.stdout.str(), parallel.stdout.str()
    assert "dropout-stats: base seed 7 (rerun with --dropout-stats-seed=7)" in text_s
    assert "dropout-stats: base seed 7" in text_p

    def summary(t):
        return sorted(re.findall(r"^(?:PASS|FAIL) .*$", t.split("dropout-stats assertions")[1], re.M))

    assert summary(text_s) == summary(text_p) and len(summary(text_s)) == 3


def test_seed_last_replays_the_previous_run(pytester, tmp_path):
    pytester.makepyfile(test_one="def test_a(dropout_seed):\n    print('SEED', dropout_seed)\n")
    first = pytester.runpytest_subprocess("--dropout-stats-seed=123", "-s", "-p", "no:xdist")
    again = pytester.runpytest_subprocess("--dropout-stats-seed=last", "-s", "-p", "no:xdist")

    def seed(r):
        return re.search(r"SEED (\d+)", r.stdout.str()).group(1)

    assert seed(first) == seed(again)
    assert "base seed 123" in again.stdout.str()


# bad options: tests/test_bad_input.py


@pytest.mark.statistical(false_fail_rate=1e-12)
def test_failure_message_names_rates_interval_and_seed(pytester):
    """Rate 0.3 asserted as 0.2 on 90,000 draws: 19 standard errors out; a miss is impossible."""
    pytester.makepyfile(test_broken=BROKEN)
    r = pytester.runpytest_subprocess("--dropout-stats-seed=5", "-p", "no:xdist")
    r.assert_outcomes(failed=1)
    out = r.stdout.str()
    assert "Dropout keep fraction is not consistent with the rate (false-fail rate 1e-09" in out
    for fragment in ("observed:", "expected: 0.7999999523", "interval:", "p-value:", "this n detects", "seed:"):
        assert fragment in out
    assert "replay with --dropout-stats-seed=5" in out
    assert "assert_keep_fraction(x, y, 0.2" in out and "testing.py" not in out  # __tracebackhide__
    # the short summary (-rf) shows the verdict, not an empty "AssertionError: "
    short = pytester.runpytest_subprocess("--dropout-stats-seed=5", "-p", "no:xdist", "-rf").stdout.str()
    line = next(v for v in short.splitlines() if v.startswith("FAILED"))
    assert "AssertionError: Dropout keep frac" in line, line  # the line is cut at the terminal width


EXPECTED = textwrap.dedent("""
    import pytest
    import tensorflow as tf
    from dropout_stats.testing import assert_keep_fraction

    def test_expects_the_failure(dropout_seed):
        x = tf.ones([300, 300])
        y = tf.nn.experimental.stateless_dropout(x, 0.3, seed=[dropout_seed, 0])
        with pytest.raises(AssertionError):
            assert_keep_fraction(x, y, 0.2, seed=dropout_seed)

    def test_verifier_failure(dropout_verifier):
        fn = lambda x, r, s, noise_shape=None: tf.nn.experimental.stateless_dropout(x, 0.5, seed=s)
        dropout_verifier(fn, rate=0.2, shape=[64, 1024])
""")


@pytest.mark.statistical(false_fail_rate=1e-12)
def test_expected_failures_are_marked_and_plugin_frames_hidden(pytester):
    """Rate 0.3 asserted as 0.2 on 90,000 draws and rate 0.5 verified as 0.2: both gross (a miss
    needs a deviation of over 19 standard errors)."""
    pytester.makepyfile(test_expected=EXPECTED)
    r = pytester.runpytest_subprocess("-p", "no:xdist", "-rf")
    r.assert_outcomes(passed=1, failed=1)
    out = r.stdout.str()
    assert re.search(r"^FAIL \(expected\) test_expected.py::test_expects_the_failure keep fraction", out, re.M), out
    assert re.search(
        r"^FAIL test_expected.py::test_verifier_failure verify rate 0.2 float32 \(FAILED: .*keep_fraction", out, re.M
    ), out
    assert "Dropout implementation failed verification: " in out and "pytest_plugin.py" not in out


def test_plugin_imports_nothing_heavy():
    code = (
        "import sys, dropout_stats.pytest_plugin; "
        "print([m for m in ('numpy', 'scipy', 'tensorflow') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
