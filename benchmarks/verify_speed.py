"""verify() on a correct implementation against drawing the same elements with plain
stateless_dropout calls (same shape, same dtype, same number of calls, outputs copied to numpy).

Target: ratio <= 1.3.  Run: python benchmarks/verify_speed.py

Each kind is timed in its own blocks (verify x4, then plain x4, seven rounds); the first run of
every block is dropped, because a run right after the other kind is not in its steady state:
until verify stopped calling np.dot, OpenBLAS's threads kept spinning ~0.1 s after each verify
and made the plain draws measured right after it 40% slower, which flattered the ratio.  The
script prints that first plain run too, so such contamination shows.
"""
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

from _timing import machine  # noqa: E402
import dropout_stats as ds  # noqa: E402

ROUNDS, BLOCK = 7, 4


def fn(x, rate, seed, noise_shape=None):
    return tf.nn.experimental.stateless_dropout(x, rate, seed=seed, noise_shape=noise_shape)


def plain(samples, dtype, shape=(64, 4096)):
    x = tf.ones(shape, dtype=dtype)  # the same dtype as verify's: bfloat16 kernels cost more
    per = shape[0] * shape[1]
    for i in range((samples + per - 1) // per):
        fn(x, 0.2, tf.constant([0, i], tf.int32)).numpy()


def timed(f):
    t0 = time.perf_counter()
    out = f()
    return time.perf_counter() - t0, out


print(f"machine: {machine()}, TensorFlow {tf.__version__}")
for dtype, rel in (("float32", 0.01), ("bfloat16", 0.01), ("float32", 0.002)):
    delta = rel * 0.2
    ds.verify(fn, rate=0.2, dtype=dtype, discrepancy=delta)  # warm
    plain(1 << 20, dtype)
    ratios, tvs, tps, first_plain = [], [], [], []
    for rnd in range(ROUNDS):
        runs = [timed(lambda s=s: ds.verify(fn, rate=0.2, dtype=dtype, seed=s, discrepancy=delta))
                for s in range(rnd * BLOCK, (rnd + 1) * BLOCK)]
        draws = [timed(lambda n=r.samples: plain(n, dtype))[0] for _, r in runs]
        first_plain.append(draws[0])
        for (tv, r), tp in list(zip(runs, draws))[1:]:  # same samples, both in steady state
            ratios.append(tv / tp)
            tvs.append(tv)
            tps.append(tp)
    print(f"{dtype}, discrepancy {rel:.1%} of the rate ({r.samples:,} elements): verify "
          f"{statistics.median(tvs) * 1e3:.1f} ms, plain draws {statistics.median(tps) * 1e3:.1f} ms "
          f"(right after a verify: {statistics.median(first_plain) * 1e3:.1f} ms); median ratio "
          f"{statistics.median(ratios):.2f} (target <= 1.3)")
