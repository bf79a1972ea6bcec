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
