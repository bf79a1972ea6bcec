"""Calibration of verify(): the false-alarm rate at a loose budget, measured."""
import pytest
from scipy import stats

from dropout_stats.calibrate import calibrate_null, calibrate_power
from dropout_stats.corpus import STATEFUL, STATELESS


@pytest.mark.statistical(false_fail_rate=2e-9)
def test_false_alarms_do_not_exceed_the_designed_rate():
    """40 correct runs at a budget of 0.05: the count is Binomial(40, <= 0.05), so it exceeds
    the level-1e-9 bound of Binomial(40, 0.05) with probability <= 1e-9.  A battery whose real
    rate were 0.3 would exceed it with probability ~0.97.  The checks' p-values must not be
    stochastically smaller than uniform (one-sided KS at 1e-9)."""
    null = calibrate_null(40, false_fail_rate=0.05, seed=100)
    assert null.false_alarms <= stats.binom.isf(1e-9, 40, 0.05), str(null)
    assert null.ks_pvalue > 1e-9, str(null)
    assert "correct runs failed" in str(null)


@pytest.mark.statistical(false_fail_rate=2e-9)
def test_power_rows_cover_the_corpus():
    """One run per defect at false-pass 1e-9: the 1%-bias defect (at the designed discrepancy)
    is missed with probability <= 1e-9, the gross ones far less."""
    rows = calibrate_power(1, seed=3, false_pass_rate=1e-9)
    assert len(rows) == len(STATELESS) + len(STATEFUL) and all(r.caught == 1 for r in rows), "\n".join(map(str, rows))
