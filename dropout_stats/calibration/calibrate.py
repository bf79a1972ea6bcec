"""Measured error rates of verify() on TensorFlow (imports TensorFlow): ``calibrate_null``, false
alarms on correct stateless dropout in one process (the first, serial measurement, kept for
tests/test_calibrate.py), and ``calibrate_power``, how often each defect of the corpus is caught
(``dropout-stats calibrate --power-runs N``).

``dropout-stats calibrate`` measures false alarms for any implementation with ``target``,
``distributed``, ``store`` and ``analysis``.  At the default budget (1e-6) the expected
false-alarm count in 1000 runs is 0.001, so calibration runs at a loose budget (0.05 by default)
where the count is informative: it must sit inside, or below, the binomial interval of the
designed rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from ..binomial import proportion_ci


@dataclass
class NullCalibration:
    runs: int
    false_fail_rate: float
    false_alarms: int
    pvalues: int
    ks_pvalue: float  # one-sided: are the checks' p-values stochastically smaller than uniform?

    @property
    def interval(self):
        return proportion_ci(self.false_alarms, self.runs, confidence_level=0.999)

    @property
    def consistent(self) -> bool:
        """The designed rate is not exceeded: it is at or above the interval's lower end."""
        return self.interval.low <= self.false_fail_rate

    def __str__(self) -> str:
        ci = self.interval
        return (
            f"null: {self.false_alarms}/{self.runs} correct runs failed = {self.false_alarms / self.runs:.4f} "
            f"(99.9% interval [{ci.low:.4f}, {ci.high:.4f}]) against the designed <= {self.false_fail_rate:g}: "
            f"{'consistent' if self.consistent else 'EXCEEDS the design'}; "
            f"{self.pvalues} check p-values, one-sided KS against uniform p = {self.ks_pvalue:.3g}"
        )


def _stateless(x, rate, seed, noise_shape=None):
    import tensorflow as tf

    return tf.nn.experimental.stateless_dropout(x, rate, seed=seed, noise_shape=noise_shape)


def calibrate_null(
    runs: int, *, false_fail_rate: float = 0.05, rate: float = 0.2, dtype: str = "float32", seed: int = 0, progress=None
) -> NullCalibration:
    from ..battery import verify

    alarms = 0
    pvals = []
    for i in range(runs):
        r = verify(
            _stateless, rate=rate, dtype=dtype, seed=seed + i, backend="tensorflow", false_fail_rate=false_fail_rate
        )
        alarms += not r.passed
        # the sequential keep test's p-value is taken at a random stopping time: not uniform
        pvals += [
            c.pvalue
            for c in r.checks
            if c.kind == "statistical"
            and c.pvalue is not None
            and c.name not in ("keep_fraction", "threshold_flips", "seed_independence")
        ]
        if progress:
            progress(i + 1, runs)
    ks = stats.kstest(pvals, "uniform", alternative="greater").pvalue if pvals else math.nan
    return NullCalibration(runs, false_fail_rate, alarms, len(pvals), float(ks))


@dataclass
class PowerRow:
    defect: str
    runs: int
    caught: int
    mean_draws: float

    def __str__(self) -> str:
        return f"{self.defect:38s} caught {self.caught}/{self.runs}, mean draws {self.mean_draws:,.0f}"


def calibrate_power(
    runs: int, *, false_fail_rate: float = 1e-6, false_pass_rate: float = 1e-3, seed: int = 0, progress=None
) -> list[PowerRow]:
    import tensorflow as tf

    from ..battery import verify
    from .corpus import STATEFUL, STATELESS

    rows = []
    total = runs * (len(STATELESS) + len(STATEFUL))
    done = 0
    for defects, stateful in ((STATELESS, False), (STATEFUL, True)):
        for name, fn, _catchers, kwargs in defects:
            caught, draws = 0, []
            for i in range(runs):
                tf.random.set_seed(seed + i)
                r = verify(
                    fn,
                    rate=0.2,
                    seed=seed + i,
                    stateful=stateful,
                    backend="tensorflow",
                    false_fail_rate=false_fail_rate,
                    false_pass_rate=false_pass_rate,
                    **kwargs,
                )
                caught += not r.passed
                k = next((c for c in r.checks if c.name == "keep_fraction"), None)
                draws.append(k.samples if k else r.samples)
                done += 1
                if progress:
                    progress(done, total)
            rows.append(PowerRow(name, runs, caught, float(np.mean(draws))))
    return rows
