"""python -m dropout_stats: the founding question, answered with exact statistics.

"After Dropout(0.2) on 32 units, why is the share of zeros not exactly 0.2?"
"""
from __future__ import annotations

import sys


def founding_question(units: int = 32, rate: float = 0.2, calls: int = 1000) -> str:
    import numpy as np
    from scipy import stats

    from . import expected_keep_probability, min_num_samples_for_rate_test, proportion_ci

    lines = [f"Dropout({rate}) on {units} units: the number of zeros is Binomial({units}, {rate})."]
    dist = stats.binom(units, rate)
    lo, hi = dist.ppf(0.025), dist.ppf(0.975)
    lines.append(f"  mean {dist.mean():.2f} zeros, sd {dist.std():.2f}, 95% of calls give {lo:.0f}..{hi:.0f} zeros; "
                 f"P(exactly {round(rate * units)}) = {dist.pmf(round(rate * units)):.3f}")
    n = min_num_samples_for_rate_test(1 - rate, 0.01 * rate, false_fail_rate=1e-3, false_pass_rate=1e-3)
    lines.append(f"  to see the fraction within 1% of {rate} (false fail 1e-3, false pass 1e-3) you need {n:,} units")
    lines.append(f"  bfloat16 keeps {expected_keep_probability(rate, 'bfloat16')} of units, not {1 - rate}")
    try:
        import tensorflow as tf
    except ImportError:
        lines.append("  (install tensorflow-cpu to watch TensorFlow do it)")
        return "\n".join(lines)
    x = tf.ones([calls, units])
    zeros = np.count_nonzero(tf.nn.experimental.stateless_dropout(x, rate, seed=[0, 0]).numpy() == 0, axis=1)
    observed = np.bincount(zeros, minlength=units + 1)
    expected = dist.pmf(np.arange(units + 1)) * calls
    keep = expected >= 5  # pool the sparse tails so the chi-square approximation holds
    obs = np.append(observed[keep], observed[~keep].sum())
    exp = np.append(expected[keep], expected[~keep].sum())
    p = stats.chisquare(obs, exp).pvalue
    ci = proportion_ci(int(zeros.sum()), calls * units, confidence_level=0.999)
    lines.append(f"TensorFlow {tf.__version__}, {calls} calls (seed [0, 0]): zeros per call min {zeros.min()}, "
                 f"median {int(np.median(zeros))}, max {zeros.max()}; chi-square fit to the binomial p = {p:.3f}")
    lines.append(f"  pooled drop fraction {zeros.sum() / (calls * units):.4f}, 99.9% interval "
                 f"[{ci.low:.4f}, {ci.high:.4f}]: consistent with {rate}" if ci.low <= rate <= ci.high else
                 f"  pooled drop fraction outside its 99.9% interval: not consistent with {rate}")
    return "\n".join(lines)


def main(argv=None) -> int:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads
    print(founding_question())
    return 0


if __name__ == "__main__":
    sys.exit(main())
