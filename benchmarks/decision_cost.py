"""The price of a decision: verify() wall time on a correct stateless_dropout, divided by the
wall time of drawing n* elements with plain stateless_dropout calls of the same shape and
dtype, where n* = min_num_samples_for_rate_test(keep, discrepancy, false_fail_rate=1e-6,
false_pass_rate=1e-3) is what a bare fixed-n rate test with verify's whole budget must draw.

Goal: <= 1.0 at the default discrepancy; no worse than 0.42 at 0.2% of the rate.
Run: python benchmarks/decision_cost.py

Each kind is timed in its own blocks (verify x4, then plain x4, seven rounds; the first run of
a block dropped: the run right after the other kind is not in its steady state).  The script
also prints where verify's calls go (purpose, calls, elements).
"""

import collections
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402
from _timing import machine  # noqa: E402

import dropout_stats as ds  # noqa: E402

ROUNDS, BLOCK = 7, 4
SHAPE = (64, 4096)


def fn(x, rate, seed, noise_shape=None):
    return tf.nn.experimental.stateless_dropout(x, rate, seed=seed, noise_shape=noise_shape)


def plain(samples, dtype, shape=SHAPE):
    x = tf.ones(shape, dtype=dtype)  # the same dtype as verify's: bfloat16 kernels cost more
    per = shape[0] * shape[1]
    for i in range((samples + per - 1) // per):
        fn(x, 0.2, tf.constant([0, i], tf.int32)).numpy()


def timed(f):
    t0 = time.perf_counter()
    out = f()
    return time.perf_counter() - t0, out


def calls_of(dtype, delta):
    """fn's calls in one verify, by the shape and rate they were made at."""
    seen = collections.Counter()

    def counting(x, rate, seed, noise_shape=None):
        seen[(tuple(x.shape), rate, tuple(noise_shape) if noise_shape else None)] += 1
        return fn(x, rate, seed, noise_shape)

    ds.verify(counting, rate=0.2, dtype=dtype, discrepancy=delta, backend="tensorflow")
    return seen


print(f"machine: {machine()}, TensorFlow {tf.__version__}")
for dtype, rel in (("float32", 0.01), ("bfloat16", 0.01), ("float32", 0.002)):
    keep = ds.expected_keep_probability(0.2, dtype)
    delta = rel * 0.2
    n_star = ds.min_num_samples_for_rate_test(keep, delta, false_fail_rate=1e-6, false_pass_rate=1e-3)
    ds.verify(fn, rate=0.2, dtype=dtype, discrepancy=delta, backend="tensorflow")  # warm
    plain(n_star, dtype)
    tvs, tps, first_plain, samples = [], [], [], []
    for rnd in range(ROUNDS):
        runs = [
            timed(
                lambda s=s, dtype=dtype, delta=delta: ds.verify(
                    fn, rate=0.2, dtype=dtype, seed=s, discrepancy=delta, backend="tensorflow"
                )
            )
            for s in range(rnd * BLOCK, (rnd + 1) * BLOCK)
        ]
        draws = [timed(lambda n_star=n_star, dtype=dtype: plain(n_star, dtype))[0] for _ in runs]
        first_plain.append(draws[0])
        tvs += [tv for tv, _ in runs[1:]]
        tps += draws[1:]
        samples += [r.samples for _, r in runs]
    tv, tp = statistics.median(tvs), statistics.median(tps)
    print(
        f"{dtype}, discrepancy {rel:.1%} of the rate: n* = {n_star:,}; verify {tv * 1e3:.1f} ms "
        f"(median {statistics.median(samples):,.0f} elements drawn), plain n* draws {tp * 1e3:.1f} ms "
        f"(right after a verify: {statistics.median(first_plain) * 1e3:.1f} ms); ratio {tv / tp:.2f}"
    )
    for (shape, rate, ns), k in sorted(calls_of(dtype, delta).items(), key=lambda kv: -kv[1]):
        print(f"    {k:3d} calls  x {list(shape)} at rate {rate:g}" + (f", noise_shape {list(ns)}" if ns else ""))
