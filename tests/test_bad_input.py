"""Bad input at every public entry point, in one table: the functions, verify(), the CLI and the
pytest plugin's options.  Each row names the bad value and the error that must come back.

Row kinds and what each asserts:
  api     the call raises the named exception, its message contains the fragment (the argument
          and its value), and the raise comes from dropout_stats' own validation, not from
          inside numpy, scipy or TensorFlow;
  report  verify() of a misbehaving fn returns a failed report whose "contract" check says why
          (a bad fn is a finding about the fn, not a crash);
  cli     `dropout-stats ARGS` exits 2 within 120 s with the fragment on stderr, no traceback,
          and writes nothing (no report file, no temporary file) into its working folder; a bad
          option is caught before the user's module (and so TensorFlow) is imported;
  plugin  pytest with the option is a usage error naming the option and value.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import dropout_stats as ds
from dropout_stats import strategies

F32 = np.ones(4, np.float32)


def stateless(x, rate, seed, noise_shape=None):
    import tensorflow as tf

    return tf.nn.experimental.stateless_dropout(x, rate, seed=seed, noise_shape=noise_shape)


def _raises(x, rate, seed, noise_shape=None):
    raise RuntimeError("boom")


def _wrong_shape(x, rate, seed, noise_shape=None):
    return x[:1]


def _wrong_dtype(x, rate, seed, noise_shape=None):
    import tensorflow as tf

    return tf.cast(x, tf.float64)


def _not_an_array(x, rate, seed, noise_shape=None):
    return "nope"


def _numpy_only(x, rate, seed, noise_shape=None):
    if not isinstance(x, np.ndarray):
        raise TypeError("numpy arrays only")
    keep = np.random.default_rng(list(seed)).random(x.shape) >= rate
    return np.where(keep, x / np.float32(1 - rate), np.float32(0)).astype(x.dtype)


def _keras_dropout(rate, seed):
    import keras

    return keras.layers.Dropout(rate, seed=seed)


def _identity(x, rate, seed):
    return x


def _keras_mha(**kwargs):
    import keras

    return keras.layers.MultiHeadAttention(**kwargs)


def _keras_lstm(**kwargs):
    import keras

    return keras.layers.LSTM(**kwargs)


def _testing():
    from dropout_stats import testing

    return testing


@dataclass(frozen=True)
class Row:
    kind: str  # api | report | cli | plugin
    target: Any  # a callable (api, report), CLI arguments (cli), a pytest option (plugin)
    fragment: str
    exc: type | None = None
    imports_fn: bool = False  # cli: the error is about the function, so its module is imported

    @property
    def id(self) -> str:
        return f"{self.kind}: {self.fragment[:48]}"


def api(call, exc, fragment):
    return Row("api", call, fragment, exc)


def report(fn, fragment, **verify_kwargs):
    return Row("report", (fn, verify_kwargs), fragment)


def cli(*args, fragment, imports_fn=False):
    return Row("cli", args, fragment, imports_fn=imports_fn)


def plugin(option, fragment):
    return Row("plugin", option, fragment)


TABLE = [
    # -- rates and dtypes ------------------------------------------------------------------
    api(lambda: ds.expected_keep_probability(1.5, "float32"), ValueError, "rate (1.5) must be in [0, 1)"),
    api(lambda: ds.expected_keep_probability(-0.1, "float32"), ValueError, "rate (-0.1) must be in [0, 1)"),
    api(lambda: ds.expected_keep_probability(float("nan"), "float32"), ValueError, "rate (nan) must be in [0, 1)"),
    api(lambda: ds.expected_keep_probability(1.0, "float32"), ValueError, "rate (1.0) must be in [0, 1)"),
    api(lambda: ds.expected_keep_probability("0.2", "float32"), TypeError, "rate ('0.2') must be a real number"),
    api(lambda: ds.expected_keep_probability(0.2, "int32"), ValueError, "dtype ('int32') must be one of"),
    api(lambda: ds.expected_keep_fraction(0.2, "float8"), ValueError, "dtype ('float8') must be one of"),
    api(lambda: ds.expected_scale(1.5, "float32"), ValueError, "rate (1.5)"),
    api(lambda: ds.exact_scale(2.0), ValueError, "rate (2.0) must be in [0, 1)"),
    api(lambda: ds.apply_scale(F32, 1.25), TypeError, "scale (1.25) must be a ScaleFormula"),
    api(lambda: ds.ulp_distance(F32, np.ones(3, np.float32)), ValueError, "a and b must have the same shape"),
    api(lambda: ds.ulp_distance(F32, F32, "int8"), ValueError, "dtype ('int8') must be one of"),
    # -- counts, intervals, tests ----------------------------------------------------------
    api(lambda: ds.proportion_ci(11, 10), ValueError, "k (11) must be <= n (10)"),
    api(lambda: ds.proportion_ci(-1, 10), ValueError, "k (-1) must be >= 0"),
    api(lambda: ds.proportion_ci(1, 0), ValueError, "n (0) must be >= 1"),
    api(lambda: ds.proportion_ci(1.5, 10), ValueError, "k (1.5) must be an integer"),
    api(lambda: ds.proportion_ci(1, 10, confidence_level=1.0), ValueError, "confidence_level (1.0) must be in (0, 1)"),
    api(lambda: ds.proportion_ci(1, 10, confidence_level=0), ValueError, "confidence_level (0.0) must be in (0, 1)"),
    api(lambda: ds.proportion_ci(1, 10, method="wald"), ValueError, "method ('wald') must be one of"),
    api(lambda: ds.proportion_ci(1, 10, alternative="x"), ValueError, "alternative ('x') must be one of"),
    api(lambda: ds.rate_test(5, 10, 1.2), ValueError, "keep_prob (1.2) must be in [0, 1]"),
    api(lambda: ds.rate_test(11, 10, 0.5), ValueError, "kept (11) must be <= n (10)"),
    api(lambda: ds.rate_test(1, 10, 0.5, alternative="both"), ValueError, "alternative ('both') must be one of"),
    api(lambda: ds.mask_counts(F32, np.ones(5, np.float32)), ValueError, "x and y must have the same shape"),
    api(
        lambda: ds.mask_counts(np.ones(4, np.int32), np.ones(4, np.int32)),
        TypeError,
        "x (dtype int32) must be a floating-point array",
    ),
    api(lambda: ds.mask_counts(F32, np.ones(4, np.float64)), TypeError, "x and y must have the same dtype"),
    api(
        lambda: ds.mask_counts(np.ones(0, np.float32), np.ones(0, np.float32)),
        ValueError,
        "x (shape [0]) must not be empty",
    ),
    api(
        lambda: ds.mask_counts(np.ones((2, 4), np.float32), np.ones((2, 4), np.float32), noise_shape=[2, 2]),
        ValueError,
        "noise_shape ([2, 2]) must broadcast",
    ),
    api(
        lambda: ds.mask_counts(np.ones((2, 4), np.float32), np.ones((2, 4), np.float32), noise_shape=[2]),
        ValueError,
        "noise_shape ([2]) must have the rank",
    ),
    # -- design ----------------------------------------------------------------------------
    api(lambda: ds.min_num_samples_for_rate_test(0.8, 0), ValueError, "discrepancy (0.0) must be a finite number > 0"),
    api(lambda: ds.min_num_samples_for_rate_test(0.8, 0.9), ValueError, "discrepancy (0.9) must leave"),
    api(lambda: ds.min_num_samples_for_rate_test(1.0, 0.01), ValueError, "keep_prob (1.0) must be in (0, 1)"),
    api(
        lambda: ds.min_num_samples_for_rate_test(0.8, 0.01, false_fail_rate=0),
        ValueError,
        "false_fail_rate (0.0) must be in (0, 1)",
    ),
    api(
        lambda: ds.min_num_samples_for_rate_test(0.8, 0.01, false_pass_rate=2),
        ValueError,
        "false_pass_rate (2.0) must be in (0, 1)",
    ),
    api(lambda: ds.min_discrepancy_detectable(0.8, -5), ValueError, "n (-5) must be >= 1"),
    api(
        lambda: ds.min_discrepancy_detectable(0.8, 100, false_pass_rate=0),
        ValueError,
        "false_pass_rate (0.0) must be in (0, 1)",
    ),
    api(lambda: ds.power_of_rate_test(0, 0.8, 0.01), ValueError, "n (0) must be >= 1"),
    api(lambda: ds.rejection_region_for_rate_test(100, 1.2), ValueError, "keep_prob (1.2) must be in (0, 1)"),
    # -- sequential ------------------------------------------------------------------------
    api(lambda: ds.SequentialRateTest(0.8, -0.1), ValueError, "discrepancy (-0.1) must be a finite number > 0"),
    api(lambda: ds.SequentialRateTest(0.8, 0.01).update(5, 3), ValueError, "kept (5) must be <= n (3)"),
    api(lambda: ds.SequentialRateTest(0.8, 0.01).update(-1, 3), ValueError, "kept (-1) must be >= 0"),
    api(lambda: ds.sequential_rate_test(5, 0.8, 0.01), TypeError, "draw (5) must be callable"),
    api(lambda: ds.sequential_rate_test(lambda m: m, 0.8, 0.01), TypeError, "draw(m) must return (kept, n)"),
    # -- structure -------------------------------------------------------------------------
    api(lambda: ds.homogeneity_test([5, 11], [10, 10]), ValueError, "kept (11) must be in [0, n (10)]"),
    api(lambda: ds.homogeneity_test([5], [10]), ValueError, "must hold at least 2 groups"),
    api(lambda: ds.trend_test([1, 2], [0, 3]), ValueError, "kept (1) must be in [0, n (0)]"),
    api(
        lambda: ds.independence_test(np.ones(3, bool), np.ones(4, bool)),
        ValueError,
        "mask_a and mask_b must have the same shape",
    ),
    api(
        lambda: ds.independence_test(np.ones(3), np.ones(3)), TypeError, "mask_a (dtype float64) must be a boolean mask"
    ),
    api(
        lambda: ds.agreement_test(np.ones(3, bool), np.ones(3, bool), 2.0),
        ValueError,
        "keep_prob (2.0) must be in [0, 1]",
    ),
    api(lambda: ds.pair_independence_test(np.ones((2, 3), bool), axis=5), ValueError, "axis (5) must be in"),
    api(lambda: ds.pair_independence_test(np.ones((2, 2))), TypeError, "mask (dtype float64) must be a boolean mask"),
    api(lambda: ds.holm_bonferroni([0.5, 1.5], 0.05), ValueError, "pvalues ([0.5, 1.5]) must lie in [0, 1]"),
    api(lambda: ds.holm_bonferroni([0.5], 1.5), ValueError, "false_fail_rate (1.5) must be in (0, 1)"),
    # -- verify() and its siblings: arguments -------------------------------------------------
    api(lambda: ds.verify(42, rate=0.2), TypeError, "fn (42) must be callable"),
    api(lambda: ds.verify(stateless, rate=1.5), ValueError, "rate (1.5) must be in [0, 1)"),
    api(lambda: ds.verify(stateless, rate=float("nan")), ValueError, "rate (nan) must be in [0, 1)"),
    api(lambda: ds.verify(stateless, rate=0.2, dtype="int32"), ValueError, "dtype ('int32') must be one of"),
    api(lambda: ds.verify(stateless, rate=0.2, shape=[0, 4]), ValueError, "shape ([0, 4]) must have"),
    api(lambda: ds.verify(stateless, rate=0.2, shape=[]), ValueError, "shape ([]) must have"),
    api(lambda: ds.verify(stateless, rate=0.2, shape="abc"), TypeError, "shape ('abc') must be a sequence of ints"),
    api(
        lambda: ds.verify(stateless, rate=0.2, shape=[8, 4], noise_shape=[8, 2]),
        ValueError,
        "noise_shape ([8, 2]) must broadcast",
    ),
    api(lambda: ds.verify(stateless, rate=0.2, noise_shape=[8, 1]), ValueError, "needs an explicit shape"),
    api(
        lambda: ds.verify(stateless, rate=0.2, reference="pytorch"), ValueError, "reference ('pytorch') must be one of"
    ),
    api(
        lambda: ds.verify(stateless, rate=0.2, reference="torch"),
        ValueError,
        "reference ('torch') is not a stream of backend 'tensorflow'",
    ),
    api(lambda: ds.verify(stateless, rate=0.2, backend="jax2"), ValueError, "backend ('jax2') must be one of"),
    api(lambda: ds.verify(stateless, rate=0.2, backward="yes"), TypeError, "backward ('yes') must be True or False"),
    api(
        lambda: ds.verify(stateless, rate=0.2, backward=False, recompute=True),
        ValueError,
        "recompute (True) needs the backward checks",
    ),
    api(lambda: ds.verify(stateless, rate=0.2, recompute=3), TypeError, "recompute (3) must be True, False"),
    api(
        lambda: ds.verify(stateless, rate=0.2, recompute="torch.checkpoint"),
        ValueError,
        "recompute ('torch.checkpoint') is not a wrapper of backend 'tensorflow'",
    ),
    api(
        lambda: ds.verify(_numpy_only, rate=0.2, backend="numpy", reference="tensorflow"),
        ValueError,
        "reference ('tensorflow') is not a stream of backend 'numpy'",
    ),
    api(
        lambda: ds.verify_gaussian_dropout(stateless, rate=0.2, backend="tf"),
        ValueError,
        "backend ('tf') must be one of",
    ),
    api(
        lambda: ds.verify(stateless, rate=0.2, false_fail_rate=0), ValueError, "false_fail_rate (0.0) must be in (0, 1)"
    ),
    api(
        lambda: ds.verify(stateless, rate=0.2, false_pass_rate=1), ValueError, "false_pass_rate (1.0) must be in (0, 1)"
    ),
    api(lambda: ds.verify(stateless, rate=0.2, discrepancy=-1), ValueError, "discrepancy (-1.0) must be a finite"),
    api(
        lambda: ds.verify(stateless, rate=0.2, discrepancy=float("inf")),
        ValueError,
        "discrepancy (inf) must be a finite number > 0",
    ),
    api(
        lambda: ds.verify(_numpy_only, rate=1e-12, backend="numpy"),
        ValueError,
        "rate (1e-12): testing the keep probability 0.999999999999 for a discrepancy of 1e-14 (discrepancy=; by "
        "default 1% of min(keep, 1 - keep)) would take more than 1e15 draws; pass a larger discrepancy",
    ),
    api(
        lambda: ds.verify(_numpy_only, rate=1 - 2**-53, backend="numpy"),
        ValueError,
        "rate (0.9999999999999999): testing the keep probability 1.11022302462516e-16 for a discrepancy",
    ),
    api(
        lambda: ds.verify(_numpy_only, rate=0.5, discrepancy=0.8, backend="numpy"),
        ValueError,
        "discrepancy (0.8) must leave keep_prob (0.5) +- discrepancy inside [0, 1] on one side",
    ),
    api(lambda: ds.verify(stateless, rate=0.2, seed=-1), ValueError, "seed (-1) must be >= 0"),
    api(lambda: ds.verify(stateless, rate=0.2, seed=2**31), ValueError, "must be < 2**31 - 1"),
    api(lambda: ds.verify(stateless, rate=0.2, max_calls=0), ValueError, "max_calls (0) must be >= 5"),
    api(lambda: ds.verify(stateless, rate=0.2, stateful="yes"), TypeError, "stateful ('yes') must be True or False"),
    api(
        lambda: ds.verify(stateless, rate=0.2, strict_nominal=None),
        TypeError,
        "strict_nominal (None) must be True or False",
    ),
    api(lambda: ds.verify_alpha_dropout(stateless, rate=1.5), ValueError, "rate (1.5) must be in [0, 1)"),
    api(lambda: ds.verify_gaussian_dropout(3, rate=0.2), TypeError, "fn (3) must be callable"),
    api(lambda: ds.verify_layer(3, rate=0.2), TypeError, "make_layer (3) must be callable"),
    api(lambda: ds.verify_layer(_keras_dropout, rate=1.5), ValueError, "rate (1.5) must be in [0, 1)"),
    api(lambda: ds.verify_layer(_keras_dropout, rate=0.2, replicas=1), ValueError, "replicas (1) must be >= 2"),
    api(
        lambda: ds.verify_layer(_keras_dropout, rate=0.2, kind="bernoulli"),
        ValueError,
        "kind ('bernoulli') must be 'dropout', 'alpha' or 'gaussian'",
    ),
    api(lambda: ds.verify_layer(lambda rate, seed: 3, rate=0.2), TypeError, "returned int, not a layer"),
    api(lambda: ds.use_logical_cpus(1), ValueError, "n (1) must be >= 2"),
    api(
        lambda: ds.verify_recurrent(3, dropout=0.2, recurrent_dropout=0.2), TypeError, "layer_cls (3) must be callable"
    ),
    api(lambda: ds.verify_attention(3, rate=0.2), TypeError, "layer_cls (3) must be callable"),
    api(lambda: ds.verify_drop_path(3, 0.2, (8, 4)), TypeError, "fn (3) must be callable"),
    api(lambda: ds.verify_drop_path(_identity, 1.5, (8, 4)), ValueError, "rate (1.5) must be in [0, 1)"),
    api(lambda: ds.verify_drop_path(_identity, 0.2, (8, 4), mode="rows"), ValueError, "mode ('rows') must be one of"),
    api(lambda: ds.verify_dropblock(_identity, 1.5, 3, (2, 3, 14, 14)), ValueError, "rate (1.5) must be in [0, 1]"),
    api(
        lambda: ds.verify_dropblock(_identity, 0.1, 3, (2, 14, 14)),
        ValueError,
        "shape ([2, 14, 14]) must be (N, C, H, W) or (N, C, D, H, W)",
    ),
    api(
        lambda: ds.verify_dropblock(_identity, 0.1, 4, (2, 3, 14, 14)), ValueError, "block_size (4) gives an even block"
    ),
    api(
        lambda: ds.verify_dropblock(_identity, 0.1, 3, (2, 3, 14, 14), centres="some"),
        ValueError,
        "centres ('some') must be one of 'valid', 'all'",
    ),
    api(lambda: ds.verify_attention(_keras_mha, rate=0.0), ValueError, "rate (0.0) must be > 0"),
    api(lambda: ds.verify_attention(_keras_mha, rate=1.5), ValueError, "rate (1.5) must be in [0, 1)"),
    api(lambda: ds.verify_attention(_keras_mha, rate=0.2, keys=12), ValueError, "keys (12) must be a power of two"),
    api(lambda: ds.verify_attention(_keras_mha, rate=0.2, num_heads=1), ValueError, "num_heads (1) must be >= 2"),
    api(
        lambda: ds.verify_recurrent(_keras_lstm, dropout=1.5, recurrent_dropout=0.2),
        ValueError,
        "dropout (1.5) must be in [0, 1)",
    ),
    api(
        lambda: ds.verify_recurrent(_keras_lstm, dropout=0.2, recurrent_dropout=-0.1),
        ValueError,
        "recurrent_dropout (-0.1) must be in [0, 1)",
    ),
    api(
        lambda: ds.verify_recurrent(_keras_lstm, dropout=0.2, recurrent_dropout=0.2, mode="graph"),
        ValueError,
        "mode ('graph') must be 'eager' or 'function'",
    ),
    api(
        lambda: ds.verify_recurrent(_keras_lstm, dropout=0.2, recurrent_dropout=0.2, steps=2),
        ValueError,
        "steps (2) must be >= 3",
    ),
    api(
        lambda: ds.verify_recurrent(_keras_lstm, dropout=0.2, recurrent_dropout=0.2, per_step="no"),
        TypeError,
        "per_step ('no') must be True or False",
    ),
    api(
        lambda: ds.verify_recurrent(lambda **kw: 3, dropout=0.2, recurrent_dropout=0.2),
        TypeError,
        "returned int, not a Keras layer",
    ),
    api(
        lambda: ds.verify(_numpy_only, rate=0.2, backend="numpy", reference="tensorflow"),
        ValueError,
        "reference ('tensorflow') is not a stream of backend 'numpy'",
    ),
    api(lambda: ds.verify(stateless, rate=0.2, backend="mxnet"), ValueError, "backend ('mxnet') must be one of"),
    api(lambda: ds.verify_gaussian_dropout(stateless, rate=0.0), ValueError, "rate (0.0) must be > 0"),
    # -- verify(): a fn that misbehaves fails the run with the reason --------------------------
    report(_raises, "raised RuntimeError: boom"),
    report(_wrong_shape, "returned shape [1, 4096], expected [64, 4096]"),
    report(_wrong_dtype, "returned dtype float64, expected float32"),
    report(_not_an_array, "returned str, which no backend reads"),
    report(_not_an_array, "returned shape [], expected [64, 4096]", backend="tensorflow"),
    report(_numpy_only, "raised TypeError: numpy arrays only", backend="tensorflow"),
    # -- dropout_stats.testing ------------------------------------------------------------------
    api(
        lambda: _testing().assert_scaled_by_inverse_keep(F32, np.ones(3, np.float32), 0.2),
        ValueError,
        "x and y must have the same shape",
    ),
    api(lambda: _testing().assert_keep_fraction(F32, F32, 1.5), ValueError, "rate (1.5) must be in [0, 1)"),
    api(
        lambda: _testing().assert_mask_is_uniform_threshold(F32, F32, 0.2, [1, 2, 3]),
        ValueError,
        "seed ([1, 2, 3]) must be two integers",
    ),
    api(
        lambda: _testing().assert_mask_is_uniform_threshold(np.ones(4, np.int32), F32, 0.2, [1, 2]),
        TypeError,
        "x (dtype int32) must be a floating-point array",
    ),
    # -- hypothesis strategies (checked when the strategy is built, not when drawn) ------------------
    api(lambda: strategies.rates(min_value=2.0), ValueError, "min_value (2.0) and max_value (0.99) must satisfy"),
    api(lambda: strategies.dtypes(include=["int8"]), ValueError, "include (['int8']) must be a non-empty subset"),
    api(lambda: strategies.shapes_and_noise_shapes(min_rank=0), ValueError, "min_rank (0) and max_rank (4) must"),
    api(lambda: strategies.dropout_configs(rate=1.5), ValueError, "rate (1.5) must be in [0, 1)"),
    api(lambda: strategies.dropout_configs(dtype="int8"), ValueError, "dtype ('int8') must be one of"),
    api(lambda: strategies.dropout_configs(shape=([4, 4], [4, 2])), ValueError, "noise_shape ([4, 2]) must broadcast"),
    # -- the command line -------------------------------------------------------------------------
    cli("explain", "--units", "32", "--rate", "1.5", fragment="rate (1.5) must be in [0, 1)"),
    cli("explain", "--units", "0", "--rate", "0.2", fragment="units (0) must be >= 1"),
    cli(
        "explain", "--units", "32", "--rate", "0.2", "--observed", "40", fragment="observed (40) must be <= units (32)"
    ),
    cli("explain", "--units", "32", "--rate", "0.2", "--observed", "-1", fragment="observed (-1) must be >= 0"),
    cli("explain", "--units", "32", "--rate", "abc", fragment="rate (abc) must be a number"),
    cli("explain", "--units", "32", "--rate", "0.2", "--dtype", "int8", fragment="dtype ('int8') must be one of"),
    cli(
        "explain",
        "--units",
        "32",
        "--rate",
        "0.2",
        "--plot",
        "/no/such/folder/p.png",
        fragment="is in a folder that does not exist",
    ),
    cli("verify", "nosuch_module_xyz:fn", fragment="could not import 'nosuch_module_xyz'"),
    cli("verify", "no_colon", fragment="must be MODULE:FUNCTION"),
    cli(
        "verify",
        "userdrop:NOT_CALLABLE",
        "--json",
        "out.json",
        fragment="userdrop:NOT_CALLABLE (int) is not callable",
        imports_fn=True,
    ),
    cli("verify", "userdrop:missing", fragment="'userdrop' has no attribute 'missing'", imports_fn=True),
    cli(
        "verify",
        "userdrop:wrong_signature",
        "--json",
        "out.json",
        fragment="wrong_signature(x) does not follow the contract fn(x, rate, seed, noise_shape=None)",
        imports_fn=True,
    ),
    cli("verify", "userdrop:good", "--seed", "-1", "--json", "out.json", fragment="seed (-1) must be >= 0"),
    cli("verify", "userdrop:good", "--rate", "nan", "--json", "out.json", fragment="rate (nan) must be in [0, 1)"),
    cli("verify", "userdrop:good", "--shape", "a,b", fragment="shape (a,b) must be comma-separated ints"),
    cli("verify", "userdrop:good", "--shape", "0,4", "--json", "out.json", fragment="shape ([0, 4]) must have"),
    cli(
        "verify",
        "userdrop:good",
        "--shape",
        "8,4",
        "--noise-shape",
        "8,2",
        fragment="noise_shape ([8, 2]) must broadcast",
    ),
    cli("verify", "userdrop:good", "--dtype", "int8", fragment="dtype ('int8') must be one of"),
    cli("verify", "userdrop:good", "--backend", "mxnet", fragment="argument --backend: invalid choice: 'mxnet'"),
    cli("audit", "--framework", "mxnet", fragment="argument --framework: invalid choice: 'mxnet'"),
    cli(
        "audit",
        "--framework",
        "tensorflow",
        "keras-jax",
        fragment="--framework tensorflow and keras-jax cannot run in one process",
    ),
    cli("audit", "--rate", "2", fragment="rate (2.0) must be in [0, 1)"),
    cli("audit", "--rate", "1", "--json", "out.json", "--plot", "out.png", fragment="rate (1.0) must be in [0, 1)"),
    cli("audit", "--false-fail-rate", "0", "--json", "out.json", fragment="false_fail_rate (0.0) must be in (0, 1)"),
    cli("audit", "--seed", "-1", fragment="seed (-1) must be >= 0"),
    cli("audit", "--dtypes", "int8", fragment="invalid choice: 'int8'"),
    cli("audit", "--json", "/no/such/folder/out.json", fragment="folder that does not exist"),
    cli("calibrate", "--runs", "0", fragment="--runs (0) must be >= 1"),
    cli("calibrate", "--power-runs", "-1", fragment="--power-runs (-1) must be >= 0"),
    cli("calibrate", "--false-fail-rate", "1", fragment="false_fail_rate (1.0) must be in (0, 1)"),
    cli("matrix", "missing.json", "-o", "out.md", fragment="missing.json: not a readable audit JSON"),
    cli("matrix", "junk.json", "-o", "out.md", fragment="junk.json: not a readable audit JSON"),
    cli("matrix", "other.json", "-o", "out.md", fragment="other.json: not a dropout-stats audit JSON"),
    cli("bogus", fragment="invalid choice"),
    cli(fragment="usage: dropout-stats"),
    # -- output paths (issue 30): refused before any work, nothing written -----------------------
    cli("audit", "--json", "", fragment="--json ('') is an empty path"),
    cli("audit", "--json", ".", fragment="--json (.) is a folder"),
    cli("audit", "--plot", "sub/", fragment="--plot (sub/) names a folder (it ends in /), not a file"),
    cli("audit", "--json", "userdrop.py/a.json", fragment="is under"),
    cli("audit", "--json", os.devnull, fragment=f"--json ({os.devnull}) is a character device"),
    cli("audit", "--json", "a.json", "--plot", "a.json", fragment="--plot (a.json) is the same file as --json"),
    cli("verify", "userdrop:good", "--json", ".", fragment="--json (.) is a folder"),
    cli("matrix", "other.json", "-o", "other.json", fragment="--output (other.json) is one of the input files"),
    cli("matrix", "other.json", "-o", "", fragment="--output ('') is an empty path"),
    cli("explain", "--units", "32", "--rate", "0.2", "--plot", ".", fragment="--plot (.) is a folder"),
    # -- counts (issue 30): 1e9 is a count; what no int64 holds is refused ------------------------
    cli("explain", "--units", "1e19", "--rate", "0.2", fragment="units (10000000000000000000) must be <= 2**63 - 1"),
    cli("explain", "--units", "2.5", "--rate", "0.2", fragment="units (2.5) must be an integer"),
    cli("calibrate", "--runs", "1.5", fragment="runs (1.5) must be an integer"),
    # -- the pytest plugin's options ------------------------------------------------------------------
    plugin("--dropout-stats-seed=abc", "--dropout-stats-seed (abc) must be an integer or 'last'"),
    plugin("--dropout-stats-seed=-3", "--dropout-stats-seed (-3) must be"),
    plugin("--dropout-stats-false-fail-rate=2", "--dropout-stats-false-fail-rate (2.0) must be in (0, 1)"),
    plugin("--dropout-stats-false-fail-rate=x", "--dropout-stats-false-fail-rate (x) must be"),
]

USER_MODULE = textwrap.dedent("""
    import os
    open(os.environ["USERDROP_IMPORTED"], "w").close()  # outside the working folder
    import tensorflow as tf

    NOT_CALLABLE = 5

    def good(x, rate, seed, noise_shape=None):
        return tf.nn.experimental.stateless_dropout(x, rate, seed=seed, noise_shape=noise_shape)

    def wrong_signature(x):
        return x
""")


def _cli_folder(tmp_path):
    (tmp_path / "userdrop.py").write_text(USER_MODULE)
    (tmp_path / "junk.json").write_text("not json")
    (tmp_path / "other.json").write_text('{"a": 1}')
    return tmp_path


def _files(folder) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if "__pycache__" not in p.parts}


@pytest.mark.parametrize("row", TABLE, ids=[r.id for r in TABLE])
def test_bad_input(row: Row, tmp_path, request):
    if row.kind == "api":
        with pytest.raises(row.exc) as info:
            row.target()
        assert row.fragment in str(info.value)
        assert "dropout_stats" in str(info.traceback[-1].path), info.traceback[-1].path  # our check raised it
    elif row.kind == "report":
        fn, kwargs = row.target
        r = ds.verify(fn, rate=0.2, **kwargs)
        assert not r.passed and r.check("contract").passed is False
        assert row.fragment in r.check("contract").detail
    elif row.kind == "cli":
        folder = _cli_folder(tmp_path)
        before = _files(folder)
        imported = tmp_path.parent / f"{tmp_path.name}-userdrop-imported"
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", USERDROP_IMPORTED=str(imported))
        r = subprocess.run(
            [sys.executable, "-m", "dropout_stats", *row.target],
            capture_output=True,
            text=True,
            cwd=folder,
            env=env,
            timeout=120,
        )
        assert r.returncode == 2, (r.stdout, r.stderr)
        assert row.fragment in r.stderr
        assert "Traceback" not in r.stderr
        assert _files(folder) == before, "wrote files on bad input"
        assert imported.exists() == row.imports_fn, (
            "imported the user's module" if imported.exists() else "never imported the user's module"
        )
    elif row.kind == "plugin":
        pytester = request.getfixturevalue("pytester")
        pytester.makepyfile(test_one="def test_a():\n    pass\n")
        r = pytester.runpytest_subprocess(row.target, "-p", "no:xdist")
        assert r.ret == pytest.ExitCode.USAGE_ERROR
        assert row.fragment in r.stderr.str()
    else:  # pragma: no cover
        raise AssertionError(row.kind)


def test_every_public_name_has_a_row():
    """Each public function and class of dropout_stats appears in the table (or is a result type)."""
    import inspect

    results = {
        "MaskCounts",
        "ProportionInterval",
        "RateTestResult",
        "RejectionRegion",
        "ScaleFormula",
        "SequentialResult",
        "StructureTestResult",
        "HolmResult",
        "Report",
        "Check",
        "Finding",
    }
    sources = "\n".join(inspect.getsource(r.target) for r in TABLE if r.kind == "api")
    missing = [n for n in ds.__all__ if n not in results and f"ds.{n}(" not in sources]
    assert not missing, missing


def test_import_does_not_load_tensorflow():
    code = "import sys, dropout_stats; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
