"""Deliberately broken dropout implementations (imports TensorFlow): the power side of
`dropout-stats calibrate` and of tests/test_verify.py, and for each family of checks the defect
it exists for (its module's docstring names it; tests/test_families.py checks that the family
catches it and that the rest of the battery does not).

STATELESS and STATEFUL entries: (name, fn, the checks of which at least one must fail, verify()
keyword arguments).  FAMILY_DEFECTS: family name -> (fn, stateful, verify() keyword arguments).
"""

import tensorflow as tf

sd = tf.nn.experimental.stateless_dropout


def _uniform(x, seed, noise_shape=None, dtype=None):
    return tf.random.stateless_uniform(noise_shape or tf.shape(x), seed=seed, dtype=dtype or x.dtype)


def _keep(x, u, threshold, rate):
    """TensorFlow's select with its multiply formula: exact scale, whatever the mask."""
    return tf.where(u >= threshold, x * tf.cast(1 / (1 - rate), x.dtype), tf.zeros_like(x))


def rate_bias_1pct(x, rate, seed, noise_shape=None):
    """drops at 1.01 x rate (keeps 1% of min(rate, 1 - rate) too few at rate 0.2), scaled to match"""
    r = rate * 1.01
    return sd(x, r, seed=seed, noise_shape=noise_shape) * tf.cast((1 - r) / (1 - rate), x.dtype)


def rate_offset(x, rate, seed, noise_shape=None):
    """drops where U < rate + 0.002 at every rate (1% of min(rate, 1 - rate) at rate 0.2): the flips
    between rates, the scale and the mask's structure are right; only the rate is off"""
    return _keep(x, _uniform(x, seed, noise_shape), tf.cast(rate + 0.002, x.dtype), rate)


def swapped_seed(x, rate, seed, noise_shape=None):
    """seed components swapped: a good mask, but not the one TensorFlow's seed (s, i) promises"""
    return sd(x, rate, seed=tf.stack([seed[1], seed[0]]), noise_shape=noise_shape)


def redraws_above_half(x, rate, seed, noise_shape=None):
    """a fresh uniform for rates above 0.5 (another code path): at most rates the mask is
    TensorFlow's, but it is not one uniform thresholded at every rate"""
    if rate > 0.5:
        seed = tf.stack([seed[0] + 1000003, seed[1]])
    return sd(x, rate, seed=seed, noise_shape=noise_shape)


def rows_in_pairs(x, rate, seed, noise_shape=None):
    """batch rows 2j and 2j + 1 share one mask row (a kernel that draws one row per two)"""
    shape = list(noise_shape or x.shape)
    u = _uniform(x, seed, [(shape[0] + 1) // 2] + shape[1:])
    return _keep(x, tf.repeat(u, 2, axis=0)[: shape[0]], rate, rate)


def tail_reused(x, rate, seed, noise_shape=None):
    """each call's first 1/8 of uniforms is the previous seed's from the middle on (a buffer
    reused across calls): consecutive calls share 1/8 of their draws, 1/2 a tensor apart"""
    shape = list(noise_shape or x.shape)
    n = 1
    for d in shape:
        n *= int(d)
    part = n // 8
    u = tf.reshape(_uniform(x, seed, shape), [-1])
    prev = tf.reshape(_uniform(x, tf.stack([seed[0], seed[1] - 1]), shape), [-1])
    u = tf.concat([prev[n // 2 : n // 2 + part], u[part:]], 0)
    return _keep(x, tf.reshape(u, shape), rate, rate)


def _with_backward(forward, backward):
    """y = forward(x), with dL/dx = backward(dL/dy, y) instead of the true gradient."""

    @tf.custom_gradient
    def f(t):
        y = forward(t)
        return y, lambda up: backward(up, y)

    return f


def backward_other_seed(x, rate, seed, noise_shape=None):
    """the backward pass drops with the next seed (an RNG offset not replayed): a good mask, not
    the forward's"""
    other = tf.stack([seed[0], seed[1] + 1])
    return _with_backward(
        lambda t: sd(t, rate, seed=seed, noise_shape=noise_shape),
        lambda up, y: sd(up, rate, seed=other, noise_shape=noise_shape),
    )(x)


def backward_unscaled(x, rate, seed, noise_shape=None):
    """the backward pass applies the mask but not 1 / (1 - rate)"""
    return _with_backward(
        lambda t: sd(t, rate, seed=seed, noise_shape=noise_shape), lambda up, y: tf.where(y != 0, up, tf.zeros_like(up))
    )(x)


def backward_scaled_by_rate(x, rate, seed, noise_shape=None):
    """the backward pass scales by the rate instead of 1 / (1 - rate) (NVIDIA/apex#816)"""
    return _with_backward(
        lambda t: sd(t, rate, seed=seed, noise_shape=noise_shape),
        lambda up, y: tf.where(y != 0, up * tf.cast(rate, up.dtype), tf.zeros_like(up)),
    )(x)


def recomputed_stateful(x, rate, noise_shape=None):
    """tf.nn.dropout under tf.recompute_grad: the backward pass redraws the mask (measured on
    TensorFlow 2.21: agreement 0.68 = p^2 + q^2)"""
    return tf.recompute_grad(lambda t: tf.nn.dropout(t, rate, noise_shape=noise_shape))(x)


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
    u = _uniform(x, seed, shape[:-1] + [(shape[-1] + 1) // 2])
    return _keep(x, tf.repeat(u, 2, axis=-1)[..., : shape[-1]], rate, rate)


def tiled_half(x, rate, seed, noise_shape=None):
    """draws half of the last axis and tiles it: positions n/2 apart share a fate"""
    shape = list(noise_shape or x.shape)
    u = _uniform(x, seed, shape[:-1] + [(shape[-1] + 1) // 2])
    return _keep(x, tf.concat([u, u], axis=-1)[..., : shape[-1]], rate, rate)


def fixed_count_per_row(x, rate, seed, noise_shape=None):
    """exactly round(keep x n) units kept in every row, where an argsort of uniforms puts them (a
    top-k of random scores): every unit is kept with probability keep, every row and position
    alike, but no row's count ever varies"""
    shape = list(noise_shape or x.shape)
    u = tf.reshape(_uniform(x, seed, shape), [shape[0], -1])
    k = round((1 - rate) * int(u.shape[1]))
    ranks = tf.argsort(tf.argsort(u, axis=1), axis=1)
    return _keep(x, tf.reshape(tf.cast(ranks < k, x.dtype), shape), tf.cast(0.5, x.dtype), rate)


def position_dependent(x, rate, seed, noise_shape=None):
    """rate - 0.015 on the first half of the last axis, rate + 0.015 on the second: right on
    average, and each position's rate too close to the others' for the call histogram to see"""
    shape = list(noise_shape or x.shape)
    u = _uniform(x, seed, shape)
    n = shape[-1]
    r = tf.concat([tf.fill([n // 2], rate - 0.015), tf.fill([n - n // 2], rate + 0.015)], 0)
    return _keep(x, u, tf.cast(r, x.dtype), rate)


def sign_dependent(x, rate, seed, noise_shape=None):
    """rate + 0.02 where x < 0, rate - 0.02 where x > 0 (in the per-element path; with a noise
    shape it is stateless_dropout): right on average over random signs"""
    if noise_shape is not None:
        return sd(x, rate, seed=seed, noise_shape=noise_shape)
    r = tf.where(x < 0, tf.cast(rate + 0.02, x.dtype), tf.cast(rate - 0.02, x.dtype))
    return _keep(x, _uniform(x, seed, noise_shape), r, rate)


def ignores_noise_shape(x, rate, seed, noise_shape=None):
    return sd(x, rate, seed=seed)


def scale_one_ulp_off(x, rate, seed, noise_shape=None):
    y = sd(x, rate, seed=seed, noise_shape=noise_shape)
    bits = tf.bitcast(y, tf.int32)
    return tf.bitcast(tf.where(y != 0, bits + 1, bits), tf.float32)


def dropped_not_zero(x, rate, seed, noise_shape=None):
    y = sd(x, rate, seed=seed, noise_shape=noise_shape)
    return tf.where(y == 0, x * 1e-7, y)


def scale_tenth_percent_off(x, rate, seed, noise_shape=None):
    """kept values 1.001 x / (1 - rate): 8,000 ULP in float32, far outside the rounding bound"""
    return sd(x, rate, seed=seed, noise_shape=noise_shape) * tf.cast(1.001, x.dtype)


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
    masks, turn = _pair.setdefault(
        key, ([tf.nn.dropout(tf.ones_like(x), rate, noise_shape=noise_shape) != 0 for _ in range(2)], [0])
    )
    turn[0] += 1
    return tf.where(masks[turn[0] % 2], x * tf.cast(1 / (1 - rate), x.dtype), tf.zeros_like(x))


_calls = {"n": 0}


def drifting_rate(x, rate, noise_shape=None):
    """the rate creeps up by 1e-3 per call"""
    _calls["n"] += 1
    r = min(rate + 1e-3 * _calls["n"], 0.95)
    return tf.nn.dropout(x, r, noise_shape=noise_shape) * tf.cast((1 - r) / (1 - rate), x.dtype)


STATELESS = [
    # name, fn, checks that may be the ones failing (at least one must), verify() keyword arguments
    ("rate bias 1% relative", rate_bias_1pct, {"keep_fraction", "scale"}, {}),
    ("rate offset by 1% of the rate", rate_offset, {"keep_fraction"}, {"reference": None}),
    ("wrong comparison", wrong_comparison, {"keep_fraction", "mechanism"}, {}),
    ("coarse uniform", coarse_uniform, {"mechanism", "keep_fraction", "threshold_flips"}, {}),
    ("seed components swapped", swapped_seed, {"mechanism"}, {}),
    ("a fresh uniform above rate 0.5", redraws_above_half, {"threshold_nesting", "threshold_flips"}, {}),
    ("seed[1] ignored", ignores_seed1, {"seed_independence"}, {}),
    ("seed components mixed", mixes_seed, {"seed_independence"}, {}),
    ("seed[1] wraps at 4", wraps_seed1, {"call_independence"}, {}),
    ("mask shared across the batch", shared_across_batch, {"row_independence"}, {}),
    ("batch rows share masks in pairs", rows_in_pairs, {"row_independence"}, {"reference": None}),
    ("neighbours share a draw", correlated_neighbours, {"neighbour_independence"}, {"reference": None}),
    ("half the last axis tiled", tiled_half, {"autocorrelation"}, {"reference": None}),
    ("exactly round(keep x n) kept per row", fixed_count_per_row, {"count_dispersion"}, {"reference": None}),
    ("a buffer's draws reused by the next call", tail_reused, {"cross_correlation"}, {"reference": None}),
    ("position-dependent rate", position_dependent, {"homogeneity_axis1"}, {"reference": None}),
    ("rate depends on the sign of x", sign_dependent, {"value_independence"}, {"reference": None}),
    ("noise_shape ignored", ignores_noise_shape, {"noise_shape_consistency"}, {}),
    # one ULP off TensorFlow's formula is inside the contract's rounding bound: a defect only when
    # bit-identity is asked for (the audit of TensorFlow's own entry points asks)
    ("scale one ULP off", scale_one_ulp_off, {"scale"}, {"exact_scale": True}),
    ("scale 0.1% off", scale_tenth_percent_off, {"scale"}, {}),
    ("dropped values not zero", dropped_not_zero, {"keep_fraction", "scale"}, {}),
    ("kept values not scaled", unscaled, {"scale"}, {}),
    ("backward mask from the next seed", backward_other_seed, {"backward_mask"}, {}),
    ("backward without the scale", backward_unscaled, {"backward_scale"}, {}),
    ("backward scaled by the rate", backward_scaled_by_rate, {"backward_scale"}, {}),
]

_cycle = {"calls": 0}


def cycles_every_37_calls(x, rate, noise_shape=None):
    """stateful: the uniform's seed is the call count mod 37 (a generator state that cycles): call i's
    mask comes back at call i + 37, longer than a default run's main sequence"""
    seed = tf.constant([_cycle["calls"] % 37, 1234])
    _cycle["calls"] += 1
    return _keep(x, _uniform(x, seed, noise_shape), rate, rate)


STATEFUL = [
    ("mask reused on every call", reused_mask, {"cross_correlation", "call_independence"}, {}),
    ("two masks in turn", alternating_masks, {"call_independence"}, {}),
    ("rate drifting with the call count", drifting_rate, {"keep_fraction", "scale"}, {}),
    ("stateful dropout recomputed in the backward pass", recomputed_stateful, {"backward_mask"}, {}),
    ("masks cycle every 37 calls", cycles_every_37_calls, {"repeats"}, {"reference": None, "drift": 0.01}),
]

# the defect each family exists for: caught by it, not by the rest of the battery
FAMILY_DEFECTS = {
    "keep_fraction": (rate_offset, False, {"reference": None}),
    "mechanism": (swapped_seed, False, {}),
    "threshold": (redraws_above_half, False, {}),
    "scale": (scale_one_ulp_off, False, {"exact_scale": True}),
    "backward": (backward_other_seed, False, {}),
    "seeds": (mixes_seed, False, {"reference": None}),
    "pairs": (rows_in_pairs, False, {"reference": None}),
    "homogeneity": (position_dependent, False, {"reference": None}),
    "value_independence": (sign_dependent, False, {"reference": None}),
    "call_independence": (wraps_seed1, False, {}),
    "count_dispersion": (fixed_count_per_row, False, {"reference": None}),
    "long_range": (cycles_every_37_calls, True, {"reference": None, "drift": 0.01}),
    "correlation": (tiled_half, False, {"reference": None}),
    "noise_shape": (ignores_noise_shape, False, {"reference": None}),
}


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


def keras_layer_defects() -> dict:
    """Keras 3 dropout layers with one defect each (built on first use: Keras 2 has no
    keras.random).  name -> (class, the verify_layer check that must fail)."""
    import keras

    class _Dropout(keras.layers.Layer):
        def __init__(self, rate, seed=None, **kwargs):
            super().__init__(**kwargs)
            self.rate, self.seed = rate, seed
            self.seed_generator = keras.random.SeedGenerator(seed)

        def drop(self, x):
            return keras.random.dropout(x, self.rate, seed=self.seed_generator)

        def get_config(self):
            return {**super().get_config(), "rate": self.rate, "seed": self.seed}

    class DropsAtInference(_Dropout):
        """drops whatever the training flag says (keras-team/keras#20983, NVIDIA/apex#1449)"""

        def call(self, x, training=None):
            return self.drop(x)

    class OmittedTrainingIsTraining(_Dropout):
        """treats a call without training= as training"""

        def call(self, x, training=None):
            return x if training is False else self.drop(x)

    class RateZeroAfterInference(_Dropout):
        """one inference call switches it off for good (NVIDIA/Megatron-LM#411)"""

        off = False

        def call(self, x, training=None):
            if not training:
                self.off = True
            return x if (not training or self.off) else self.drop(x)

    class CachesFirstMask(_Dropout):
        """draws a mask on the first training call and reuses it (tensorflow/tensorflow#29391)"""

        def build(self, input_shape):
            self.cached = self.add_weight(shape=input_shape, initializer="zeros", trainable=False)
            self.ready = self.add_weight(shape=(), initializer="zeros", trainable=False)

        def call(self, x, training=None):
            if not training:
                return x
            fresh = keras.ops.cast(self.drop(keras.ops.ones_like(x)) != 0, self.cached.dtype)
            mask = keras.ops.where(self.ready > 0, self.cached, fresh)
            self.cached.assign(mask)
            self.ready.assign(1.0)
            return keras.ops.where(mask > 0, x / keras.ops.cast(1 - self.rate, x.dtype), keras.ops.zeros_like(x))

    return {
        "drops at inference": (DropsAtInference, "inference_identity"),
        "an omitted training flag means training": (OmittedTrainingIsTraining, "inference_identity"),
        "rate 0 after one inference call": (RateZeroAfterInference, "mode_transitions"),
        "the first mask on every call": (CachesFirstMask, "cross_correlation"),
    }


def keras_recurrent_defects() -> dict:
    """Keras 3 recurrent layers with one defect each in their dropout: SimpleRNN cells wrapped in
    keras.layers.RNN, with SimpleRNN's weights.  name -> (layer_cls for verify_recurrent, the
    check that must fail).  The control, ``correct``, is the same construction without a defect."""
    import keras

    class Correct(keras.layers.SimpleRNNCell):
        """SimpleRNNCell itself: one input and one recurrent mask per sequence."""

    class RecurrentAtInputRate(keras.layers.SimpleRNNCell):
        """the recurrent mask drawn at the input rate (keras-team/keras#19395)"""

        def get_recurrent_dropout_mask(self, step_input):
            if getattr(self, "_recurrent_dropout_mask", None) is None and self.recurrent_dropout > 0:
                self._recurrent_dropout_mask = self._create_dropout_mask(step_input, self.dropout)
            return getattr(self, "_recurrent_dropout_mask", None)

    class InputMaskPerStep(keras.layers.SimpleRNNCell):
        """a fresh input mask at every time step where the layer promises one per sequence"""

        def call(self, sequence, states, training=False):
            if training and self.dropout > 0:
                self._dropout_mask = self._create_dropout_mask(sequence, self.dropout)
            return super().call(sequence, states, training=training)

    class OneMaskForTheBatch(keras.layers.SimpleRNNCell):
        """one input mask row shared by every sequence of the batch"""

        def get_dropout_mask(self, step_input):
            if getattr(self, "_dropout_mask", None) is None and self.dropout > 0:
                self._dropout_mask = self._create_dropout_mask(step_input[:1], self.dropout)
            return getattr(self, "_dropout_mask", None)

    class DropsAtInference(keras.layers.SimpleRNNCell):
        """applies its masks whatever the training flag says"""

        def call(self, sequence, states, training=False):
            self.get_dropout_mask(sequence)
            return super().call(sequence, states, training=True)

    class NeverResets(keras.layers.SimpleRNNCell):
        """never clears its cached masks: the first call's on every call (tensorflow/tensorflow#32543)"""

        def reset_dropout_mask(self):
            pass

        def reset_recurrent_dropout_mask(self):
            pass

    class UnscaledRecurrent(keras.layers.SimpleRNNCell):
        """the recurrent mask holds 1 where kept, not 1/(1 - rate)"""

        def get_recurrent_dropout_mask(self, step_input):
            if getattr(self, "_recurrent_dropout_mask", None) is None and self.recurrent_dropout > 0:
                m = self._create_dropout_mask(step_input, self.recurrent_dropout)
                self._recurrent_dropout_mask = keras.ops.cast(m != 0, m.dtype)
            return getattr(self, "_recurrent_dropout_mask", None)

    def layer_cls(cell_cls):
        def make(units, dropout, recurrent_dropout, seed, return_sequences, dtype=None):
            cell = cell_cls(units, dropout=dropout, recurrent_dropout=recurrent_dropout, seed=seed, dtype=dtype)
            return keras.layers.RNN(cell, return_sequences=return_sequences, dtype=dtype)

        make.__qualname__ = f"RNN({cell_cls.__name__})"
        return make

    return {
        "correct": (layer_cls(Correct), None),
        "recurrent mask at the input rate": (layer_cls(RecurrentAtInputRate), "recurrent_keep_rate"),
        "a fresh input mask at every step": (layer_cls(InputMaskPerStep), "input_time_sharing"),
        "one input mask for the whole batch": (layer_cls(OneMaskForTheBatch), "input_batch_independence"),
        "drops at inference": (layer_cls(DropsAtInference), "inference_identity"),
        "the first call's masks on every call": (layer_cls(NeverResets), "input_call_independence"),
        "recurrent mask not scaled": (layer_cls(UnscaledRecurrent), "recurrent_scale"),
    }


def keras_attention_defects() -> dict:
    """Keras 3 MultiHeadAttention with one defect each in the dropout on its attention
    probabilities (its dropout layer replaced after build).  name -> (layer_cls for
    verify_attention, the check that must fail).  ``correct`` is the same construction with a
    plain dropout layer."""
    import keras

    class _Drop(keras.layers.Layer):
        def __init__(self, rate, seed=None, **kwargs):
            super().__init__(**kwargs)
            self.rate = rate
            self.seed_generator = keras.random.SeedGenerator(seed)

        def drop(self, x, noise_shape=None):
            return keras.random.dropout(x, self.rate, noise_shape=noise_shape, seed=self.seed_generator)

        def call(self, x, training=None):
            return self.drop(x) if training else x

    class HeadsShareMask(_Drop):
        """one mask for every head"""

        def call(self, x, training=None):
            s = keras.ops.shape(x)
            return self.drop(x, (s[0], 1, s[2], s[3])) if training else x

    class QueriesShareMask(_Drop):
        """one mask row for every query"""

        def call(self, x, training=None):
            s = keras.ops.shape(x)
            return self.drop(x, (s[0], s[1], 1, s[3])) if training else x

    class WholeKeysDropped(_Drop):
        """drops a query's whole row of keys at once (a mask broadcast over the keys)"""

        def call(self, x, training=None):
            s = keras.ops.shape(x)
            return self.drop(x, (s[0], s[1], s[2], 1)) if training else x

    class SameMaskEveryCall(_Drop):
        """a fixed seed on every call: an RNG offset that never advances (Dao-AILab/flash-attention#314)"""

        def call(self, x, training=None):
            return keras.random.dropout(x, self.rate, seed=1234) if training else x

    class Unscaled(_Drop):
        """kept probabilities not divided by 1 - rate"""

        def call(self, x, training=None):
            if not training:
                return x
            return x * keras.ops.cast(self.drop(keras.ops.ones_like(x)) != 0, x.dtype)

    class DropsAtInference(_Drop):
        """drops whatever the training flag says (pytorch/pytorch#124464)"""

        def call(self, x, training=None):
            return self.drop(x)

    class BackwardOtherMask(_Drop):
        """a hand-written gradient that draws its own mask (pytorch/pytorch#102038's class)"""

        def call(self, x, training=None):
            if not training:
                return x
            import tensorflow as tf

            @tf.custom_gradient
            def f(t):
                def grad(dy):
                    return self.drop(dy)

                return self.drop(t), grad

            return f(x)

    def layer_cls(drop_cls):
        class Attention(keras.layers.MultiHeadAttention):
            def build(self, query_shape, value_shape, key_shape=None):  # Keras passes shapes by these names
                super().build(query_shape, value_shape, key_shape)
                self._dropout_layer = drop_cls(self._dropout, seed=getattr(self, "seed", None))

        def make(num_heads, key_dim, dropout, seed, dtype=None):
            return Attention(num_heads=num_heads, key_dim=key_dim, dropout=dropout, seed=seed, dtype=dtype)

        make.__qualname__ = f"MultiHeadAttention({drop_cls.__name__})"
        return make

    return {
        "correct": (layer_cls(_Drop), None),
        "one mask for every head": (layer_cls(HeadsShareMask), "head_independence"),
        "one mask row for every query": (layer_cls(QueriesShareMask), "query_independence"),
        "whole key rows dropped": (layer_cls(WholeKeysDropped), "key_independence"),
        "the same mask on every call": (layer_cls(SameMaskEveryCall), "call_independence"),
        "kept probabilities not scaled": (layer_cls(Unscaled), "scale"),
        "drops at inference": (layer_cls(DropsAtInference), "inference_identity"),
        "the gradient's own mask": (layer_cls(BackwardOtherMask), "backward_mask"),
    }
