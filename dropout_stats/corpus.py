"""Deliberately broken dropout implementations (imports TensorFlow), each with the checks that must
catch it: the power side of `dropout-stats calibrate` and of tests/test_verify.py.

Each entry: (name, fn, the checks of which at least one must fail, test false-fail rate).  The rate is the chance verify() misses the defect at the settings used in
test_verify.py (false_pass_rate=1e-9 there): 1e-9 for a defect at the designed discrepancy,
far less for gross ones (stated as 1e-12).
"""
import tensorflow as tf

sd = tf.nn.experimental.stateless_dropout


def rate_bias_1pct(x, rate, seed, noise_shape=None):
    """drops at 1.01 x rate (keeps 1% of min(rate, 1 - rate) too few at rate 0.2), scaled to match"""
    r = rate * 1.01
    return sd(x, r, seed=seed, noise_shape=noise_shape) * tf.cast((1 - r) / (1 - rate), x.dtype)


def wrong_comparison(x, rate, seed, noise_shape=None):
    """keeps uniform < rate: the dropped side"""
    u = tf.random.stateless_uniform(noise_shape or tf.shape(x), seed=seed, dtype=x.dtype)
    return tf.where(u < rate, x / (1 - rate), tf.zeros_like(x))


def coarse_uniform(x, rate, seed, noise_shape=None):
    """a uniform with 64 levels: keeps (64 - ceil(64 rate)) / 64"""
    u = tf.floor(tf.random.stateless_uniform(noise_shape or tf.shape(x), seed=seed, dtype=tf.float32) * 64) / 64
    return tf.where(u >= rate, x * tf.cast(1 / (1 - rate), x.dtype), tf.zeros_like(x))


def ignores_seed1(x, rate, seed, noise_shape=None):
    return sd(x, rate, seed=tf.stack([seed[0], 0]), noise_shape=noise_shape)


def wraps_seed1(x, rate, seed, noise_shape=None):
    """seed[1] wraps at 4 (a narrow counter): calls 4 apart share a mask, neighbours do not"""
    return sd(x, rate, seed=tf.stack([seed[0], seed[1] % 4]), noise_shape=noise_shape)


def mixes_seed(x, rate, seed, noise_shape=None):
    """seed[0] + seed[1] as one number: (s + 1, i) collides with (s, i + 1)"""
    return sd(x, rate, seed=tf.stack([seed[0] + seed[1], 0]), noise_shape=noise_shape)


def shared_across_batch(x, rate, seed, noise_shape=None):
    ns = [1] + list(x.shape[1:]) if noise_shape is None else [1] + list(noise_shape[1:])
    return sd(x, rate, seed=seed, noise_shape=ns)


def correlated_neighbours(x, rate, seed, noise_shape=None):
    """one draw per pair of neighbours along the last axis"""
    shape = list(noise_shape or x.shape)
    half = shape[:-1] + [(shape[-1] + 1) // 2]
    u = tf.random.stateless_uniform(half, seed=seed, dtype=x.dtype)
    u = tf.repeat(u, 2, axis=-1)[..., : shape[-1]]
    return tf.where(u >= rate, x / (1 - rate), tf.zeros_like(x))


def tiled_half(x, rate, seed, noise_shape=None):
    """draws half of the last axis and tiles it: positions n/2 apart share a fate"""
    shape = list(noise_shape or x.shape)
    u = tf.random.stateless_uniform(shape[:-1] + [(shape[-1] + 1) // 2], seed=seed, dtype=x.dtype)
    u = tf.concat([u, u], axis=-1)[..., : shape[-1]]
    return tf.where(u >= rate, x * tf.cast(1 / (1 - rate), x.dtype), tf.zeros_like(x))


def position_dependent(x, rate, seed, noise_shape=None):
    """rate - 0.1 on the first half of the last axis, rate + 0.1 on the second: averages right"""
    shape = list(noise_shape or x.shape)
    u = tf.random.stateless_uniform(shape, seed=seed, dtype=x.dtype)
    n = shape[-1]
    r = tf.concat([tf.fill([n // 2], rate - 0.1), tf.fill([n - n // 2], rate + 0.1)], 0)
    return tf.where(u >= tf.cast(r, x.dtype), x / (1 - rate), tf.zeros_like(x))


def sign_dependent(x, rate, seed, noise_shape=None):
    """rate + 0.02 where x < 0, rate - 0.02 where x > 0: right on average over random signs"""
    u = tf.random.stateless_uniform(noise_shape or tf.shape(x), seed=seed, dtype=x.dtype)
    r = tf.where(x < 0, tf.cast(rate + 0.02, x.dtype), tf.cast(rate - 0.02, x.dtype))
    return tf.where(u >= r, x * tf.cast(1 / (1 - rate), x.dtype), tf.zeros_like(x))


def ignores_noise_shape(x, rate, seed, noise_shape=None):
    return sd(x, rate, seed=seed)


def scale_one_ulp_off(x, rate, seed, noise_shape=None):
    y = sd(x, rate, seed=seed, noise_shape=noise_shape)
    bits = tf.bitcast(y, tf.int32)
    return tf.bitcast(tf.where(y != 0, bits + 1, bits), tf.float32)


def dropped_not_zero(x, rate, seed, noise_shape=None):
    y = sd(x, rate, seed=seed, noise_shape=noise_shape)
    return tf.where(y == 0, x * 1e-7, y)


def unscaled(x, rate, seed, noise_shape=None):
    return tf.where(sd(x, rate, seed=seed, noise_shape=noise_shape) != 0, x, tf.zeros_like(x))


_cache = {}


def reused_mask(x, rate, noise_shape=None):
    """draws a mask once and returns it on every call"""
    key = (tuple(x.shape), rate, x.dtype.name, str(noise_shape))
    if key not in _cache:
        _cache[key] = tf.nn.dropout(tf.ones_like(x), rate, noise_shape=noise_shape) != 0
    return tf.where(_cache[key], x / (1 - rate), tf.zeros_like(x))


_pair = {}


def alternating_masks(x, rate, noise_shape=None):
    """two masks drawn once, returned in turn: successive calls differ, every other one repeats"""
    key = (tuple(x.shape), rate, x.dtype.name, str(noise_shape))
    masks, turn = _pair.setdefault(key, ([tf.nn.dropout(tf.ones_like(x), rate, noise_shape=noise_shape) != 0
                                          for _ in range(2)], [0]))
    turn[0] += 1
    return tf.where(masks[turn[0] % 2], x * tf.cast(1 / (1 - rate), x.dtype), tf.zeros_like(x))


_calls = {"n": 0}


def drifting_rate(x, rate, noise_shape=None):
    """the rate creeps up by 1e-3 per call"""
    _calls["n"] += 1
    r = min(rate + 1e-3 * _calls["n"], 0.95)
    return tf.nn.dropout(x, r, noise_shape=noise_shape) * tf.cast((1 - r) / (1 - rate), x.dtype)


STATELESS = [
    # name, fn, checks that may be the ones failing (at least one must), test false-fail rate
    ("rate bias 1% relative", rate_bias_1pct, {"keep_fraction"}, 1e-9),
    ("wrong comparison", wrong_comparison, {"keep_fraction", "mechanism"}, 1e-12),
    ("coarse uniform", coarse_uniform, {"mechanism", "keep_fraction", "threshold_flips"}, 1e-12),
    ("seed[1] ignored", ignores_seed1, {"seed_independence"}, 1e-12),
    ("seed components mixed", mixes_seed, {"seed_independence"}, 1e-12),
    ("seed[1] wraps at 4", wraps_seed1, {"call_independence"}, 1e-12),
    ("mask shared across the batch", shared_across_batch, {"row_independence"}, 1e-12),
    ("neighbours share a draw", correlated_neighbours, {"neighbour_independence"}, 1e-12),
    ("half the last axis tiled", tiled_half, {"offset_independence"}, 1e-12),
    ("position-dependent rate", position_dependent, {"homogeneity_axis1"}, 1e-12),
    ("rate depends on the sign of x", sign_dependent, {"value_independence"}, 1e-12),
    ("noise_shape ignored", ignores_noise_shape, {"noise_shape_consistency"}, 0.0),
    ("scale one ULP off", scale_one_ulp_off, {"scale"}, 0.0),
    ("dropped values not zero", dropped_not_zero, {"keep_fraction", "scale"}, 0.0),
    ("kept values not scaled", unscaled, {"scale"}, 0.0),
]

STATEFUL = [
    ("mask reused on every call", reused_mask, {"stateful_fresh"}, 1e-12),
    ("two masks in turn", alternating_masks, {"call_independence"}, 1e-12),
    ("rate drifting with the call count", drifting_rate, {"stateful_drift", "keep_fraction"}, 1e-12),
]


def alpha_wrong_offset(x, rate, noise_shape=None):
    """alpha dropout with b computed from rate / 2"""
    import keras

    layer = keras.layers.AlphaDropout(rate / 2, seed=1, dtype=x.dtype.name, noise_shape=noise_shape)
    y = keras.layers.AlphaDropout(rate, seed=1, dtype=x.dtype.name, noise_shape=noise_shape)(x, training=True)
    return y + tf.cast(0.01, x.dtype) * tf.cast(y > 0, x.dtype) + 0 * layer(x, training=False)


def gaussian_wrong_variance(x, rate, noise_shape=None):
    """stddev rate instead of sqrt(rate / (1 - rate))"""
    return x * tf.random.normal(tf.shape(x), mean=1.0, stddev=rate, dtype=x.dtype)


def gaussian_shared_across_batch(x, rate, noise_shape=None):
    sd = (rate / (1 - rate)) ** 0.5
    return x * tf.random.normal([1] + list(x.shape[1:]), mean=1.0, stddev=sd, dtype=x.dtype)
