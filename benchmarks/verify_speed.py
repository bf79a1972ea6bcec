"""verify() on a correct implementation against drawing the same elements with plain
stateless_dropout calls (same shape, same dtype, same number of calls, outputs copied to numpy).

Target: ratio <= 1.3.  Run: python benchmarks/verify_speed.py
"""
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

from _timing import machine  # noqa: E402
import dropout_stats as ds  # noqa: E402


def fn(x, rate, seed, noise_shape=None):
    return tf.nn.experimental.stateless_dropout(x, rate, seed=seed, noise_shape=noise_shape)


def plain(samples, dtype, shape=(64, 4096)):
    x = tf.ones(shape, dtype=dtype)  # the same dtype as verify's: bfloat16 kernels cost more
    per = shape[0] * shape[1]
    for i in range((samples + per - 1) // per):
        fn(x, 0.2, tf.constant([0, i], tf.int32)).numpy()


print(f"machine: {machine()}, TensorFlow {tf.__version__}")
for dtype, rel in (("float32", 0.01), ("bfloat16", 0.01), ("float32", 0.002)):
    delta = rel * 0.2
    ds.verify(fn, rate=0.2, dtype=dtype, discrepancy=delta)  # warm
    ratios = []
    for rep in range(21):
        t0 = time.perf_counter()
        r = ds.verify(fn, rate=0.2, dtype=dtype, seed=rep, discrepancy=delta)
        tv = time.perf_counter() - t0
        t0 = time.perf_counter()
        plain(r.samples, dtype)
        tp = time.perf_counter() - t0
        ratios.append(tv / tp)
    print(f"{dtype}, discrepancy {rel:.1%} of the rate: verify {tv:.2f} s for {r.samples:,} elements; plain draws {tp:.2f} s; "
          f"median ratio {statistics.median(ratios):.2f} (target <= 1.3)")
