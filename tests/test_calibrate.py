"""Calibration of verify(): the false-alarm rate at a loose budget, measured."""

import pytest
from scipy import stats

from dropout_stats.calibration.calibrate import calibrate_null, calibrate_power
from dropout_stats.calibration.corpus import STATEFUL, STATELESS

RUNS = 100
BOUND = stats.binom.isf(1e-9, RUNS, 0.05)  # exceeded with probability <= 1e-9 at rate 0.05


def _detected_rate(power=0.99):
    """The smallest true false-alarm rate that exceeds BOUND with probability >= power."""
    lo, hi = 0.05, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if stats.binom.sf(BOUND, RUNS, mid) >= power else (mid, hi)
    return hi


@pytest.mark.statistical(false_fail_rate=2e-9)
def test_false_alarms_do_not_exceed_the_designed_rate():
    """100 correct runs at a budget of 0.05: the count is Binomial(100, <= 0.05), so it exceeds
    BOUND (22) with probability <= 1e-9.  A battery whose real rate were 0.33 or more
    (_detected_rate(), computed) would exceed it with probability >= 0.99.  The checks' p-values
    must not be stochastically smaller than uniform (one-sided KS at 1e-9)."""
    assert BOUND == 22 and 0.3 < _detected_rate() < 0.35
    null = calibrate_null(RUNS, false_fail_rate=0.05, seed=100)
    assert null.false_alarms <= BOUND, str(null)
    assert null.ks_pvalue > 1e-9, str(null)
    assert "correct runs failed" in str(null)


@pytest.mark.statistical(false_fail_rate=2e-9)
def test_power_rows_cover_the_corpus():
    """One run per defect at false-pass 1e-9: the 1%-bias defect (at the designed discrepancy)
    is missed with probability <= 1e-9, the gross ones far less."""
    rows = calibrate_power(1, seed=3, false_pass_rate=1e-9)
    assert len(rows) == len(STATELESS) + len(STATEFUL) and all(r.caught == 1 for r in rows), "\n".join(map(str, rows))


# -- the calibration engine's arithmetic and store (dropout_stats.calibration.analysis, .store) --
import json  # noqa: E402

import numpy as np  # noqa: E402

from dropout_stats.calibration.analysis import (  # noqa: E402
    bound_text,
    ceil_sig,
    runs_for_bound,
    summarize,
    upper_bound,
)
from dropout_stats.calibration.store import Store, StoreError  # noqa: E402
from dropout_stats.calibration.target import Spec  # noqa: E402


def test_the_bound_is_clopper_pearson_and_printed_rounded_up():
    assert bound_text(0, 3_000_000, 0.95) == "0 of 3,000,000: rate <= 1.0e-6 at 95%"
    for n in (1, 59, 2_995_731):
        assert upper_bound(0, n) == pytest.approx(1 - 0.05 ** (1 / n), rel=1e-9)
    for k, n in ((1, 20), (9, 200), (36, 1000)):  # exact: P(Bin(n, upper) <= k) = 1 - confidence
        assert stats.binom.cdf(k, n, upper_bound(k, n)) == pytest.approx(0.05, rel=1e-9)
    assert upper_bound(5, 5) == 1.0
    n = runs_for_bound(1e-6)
    assert n == 2_995_731 and upper_bound(0, n) <= 1e-6 < upper_bound(0, n - 1)
    assert runs_for_bound(0.05) == 59
    for x in np.random.default_rng(1).uniform(1e-9, 1, 2000):  # never rounded down
        assert float(ceil_sig(float(x))) >= x
    assert ceil_sig(9.96e-7) == "1.0e-6" and ceil_sig(0.0999999) == "1.0e-1" and ceil_sig(0.101) == "1.1e-1"


def _records(n, columns, *, seed=0):
    """n records whose check p-values come from ``columns`` {name: rng -> p or None}."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        checks = {}
        for name, draw in columns.items():
            p = draw(rng, i)
            if p is not False:  # False: the check is absent from this record
                checks[name] = ["pass", p]
        out.append(json.dumps({"seed": i, "passed": True, "samples": 1, "checks": checks}, sort_keys=True))
    return out


@pytest.mark.statistical(false_fail_rate=1e-10)
def test_the_second_level_test_flags_too_many_small_pvalues_only():
    """2000 records: a uniform check is flagged with probability <= 1e-10 (alpha, Bonferroni
    over the checks; one-sided KS is conservative for super-uniform p-values); p = U**2 (P(p <= t) =
    sqrt(t): 25 points above uniform at t = 1/4) is flagged unless D+ falls below 0.078, 17
    standard deviations under its 0.25: never.  Constant 1 and sqrt(U) are conservative;
    keep_fraction is not tested; a check present in half the records counts half."""
    cols = {
        "uniform": lambda r, i: float(r.random()),
        "too_small": lambda r, i: float(r.random()) ** 2,
        "ones": lambda r, i: 1.0,
        "sqrt": lambda r, i: float(r.random()) ** 0.5,
        "keep_fraction": lambda r, i: float(r.random()) ** 2,
        "exact": lambda r, i: None,
        "new_check": lambda r, i: float(r.random()) if i >= 1000 else False,
    }
    result, arrays = summarize(_records(2000, cols), spec_json=Spec().to_json(), lo=0, hi=2000, alpha=1e-10)
    verdicts = {c["name"]: c["verdict"] for c in result["checks"]}
    assert verdicts == {
        "uniform": "uniform",
        "too_small": "TOO MANY SMALL",
        "ones": "conservative",
        "sqrt": "conservative",
        "keep_fraction": "not tested",
        "new_check": "uniform",
    }
    assert result["flagged"] == ["too_small"] and result["passed"] is False
    assert arrays["new_check"].size == 1000 and sum(result["checks"][0]["bins"]) == 2000
    again, _ = summarize(_records(2000, cols), spec_json=Spec().to_json(), lo=0, hi=2000, alpha=1e-10)
    assert json.dumps(again) == json.dumps(result)  # a function of the records


def test_false_alarms_against_the_design():
    recs = [json.dumps({"seed": i, "passed": i % 4 != 0, "samples": 1, "checks": {}}) for i in range(40)]
    result, _ = summarize(recs, spec_json=Spec(false_fail_rate=0.05).to_json(), lo=0, hi=40)
    fa = result["false_alarms"]
    assert fa["count"] == 10 and fa["seeds"] == [0, 4, 8, 12, 16, 20, 24, 28, 32, 36]
    assert fa["exceeds_design"] and fa["pvalue_designed"] == pytest.approx(stats.binom.sf(9, 40, 0.05))
    assert fa["text"] == "10 of 40: rate <= 3.9e-1 at 95%"
    result, _ = summarize(recs[:1], spec_json=Spec(false_fail_rate=0.05).to_json(), lo=0, hi=40)
    assert result["passed"] is False  # 1 of 40 runs stored: not a finished calibration


def test_the_store_keeps_one_record_per_seed(tmp_path):
    path = str(tmp_path / "s.db")
    spec = Spec().to_json()
    store = Store(path, spec)
    assert store.add([(3, "a", 0.1), (4, "b", 0.2)]) == 2
    assert store.add([(3, "a", 0.5)]) == 0  # a re-run task: the same record, kept once
    with pytest.raises(StoreError, match="seed 3 gave a different record on a second run"):
        store.add([(5, "c", 0.1), (3, "x", 0.1)])
    assert store.done(0, 10) == {3, 4}  # the failed transaction added nothing (not 5)
    assert list(store.records(0, 10)) == ["a", "b"] and store.seconds(0, 10) == (2, pytest.approx(0.3))
    store.close()
    with pytest.raises(StoreError, match=r"holds runs of other settings \(rate: 0.2 there, 0.3 here\)"):
        Store(path, Spec(rate=0.3).to_json())
    (tmp_path / "t.txt").write_text("not a database, but long enough to have a header " * 10)
    with pytest.raises(StoreError, match="is not a calibration store"):
        Store(str(tmp_path / "t.txt"), spec)


# -- the command line ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--fn", "nocolon"], "--fn (nocolon) must be MODULE:FUNCTION"),
        (["--fn", "a:b", "--entry-point", "x"], "--fn and --entry-point/--framework/--mode name two targets"),
        (["--stateful"], "--stateful, --backend and --reference apply to --fn only"),
        (["--workers", "1", "--scheduler", "tcp://127.0.0.1:1"], "--workers and --scheduler both say where to run"),
        (["--seed", "2147483000", "--runs", "1000"], "--seed + --runs (2147484000) must be <= 2**31 - 1"),
        (["--confidence", "1"], "--confidence (1.0) must be in (0, 1)"),
        (["--chunk", "0"], "--chunk (0) must be >= 1"),
        (["--fn", "no_such_module_here:f", "--workers", "0"], "loading the target: ModuleNotFoundError"),
        (["--entry-point", "tf.nn.nope", "--workers", "0"], "must be one of tensorflow's in mode eager: "),
    ],
)
def test_bad_options_are_refused_in_one_line(args, fragment, capsys, tmp_path, monkeypatch):
    from dropout_stats.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["calibrate", *args]) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1, err


def test_a_folder_is_no_store(tmp_path, capsys):
    from dropout_stats.cli import main

    assert main(["calibrate", "--store", str(tmp_path)]) == 2
    assert "is a folder: name a file in it" in capsys.readouterr().err
