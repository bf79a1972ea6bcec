"""verify_layer: Keras's own dropout layers pass, each layer defect of the corpus fails the check
built for it, and replicas of a distributed step are compared in a fresh process (TensorFlow
fixes its logical devices at its first op)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import dropout_stats as ds
from dropout_stats.adapters import layer_factories

A = 1e-9
keras = pytest.importorskip("keras")
KERAS3 = hasattr(keras, "random") and hasattr(keras.random, "SeedGenerator")


@pytest.mark.statistical(false_fail_rate=A)
@pytest.mark.parametrize("name,make", layer_factories("float32"), ids=lambda v: v if isinstance(v, str) else "")
def test_keras_layers_pass(name, make, seed):
    r = ds.verify_layer(make, rate=0.3, seed=seed % 2**30, false_fail_rate=A)
    assert r.passed, r.text()
    names = {c.name for c in r.checks}
    assert {"inference_identity", "mode_transitions", "fit", "instances", "config_round_trip"} <= names


def _defects():
    if not KERAS3:
        return []
    from dropout_stats.calibration.corpus import keras_layer_defects

    # each defect is certain to show: an exact check (inference), a rate of 1 against 0.7 on
    # 524,288 draws, or the same mask on every call (the cross-correlation at displacement 0)
    return [pytest.param(cls, check, id=name) for name, (cls, check) in keras_layer_defects().items()]


@pytest.mark.parametrize("cls,check", _defects())
def test_layer_defects_fail_their_check(cls, check, seed):
    r = ds.verify_layer(lambda rate, s: cls(rate, seed=s), rate=0.3, seed=seed % 2**30, false_fail_rate=A)
    failed = {c.name for c in r.failures}
    assert check in failed, r.text()
    assert any(v.startswith("diagnosis: ") for v in r.text().splitlines()[:5])


def test_the_training_flag_defects_are_told_apart():
    if not KERAS3:
        pytest.skip("Keras 3's keras.random")
    from dropout_stats.calibration.corpus import keras_layer_defects

    defects = keras_layer_defects()
    omitted = defects["an omitted training flag means training"][0]
    c = ds.verify_layer(lambda rate, s: omitted(rate, seed=s), rate=0.3, false_fail_rate=A).check("inference_identity")
    assert c.values == {
        "training=False": True,
        "training omitted": False,
        **{f"training=False, batch {b}": True for b in (1, 2, 3, 7)},
        "model.predict": True,
        "model.evaluate": True,
    }, c.values


def test_bad_layers_are_named():
    with pytest.raises(TypeError, match="returned int, not a layer"):
        ds.verify_layer(lambda rate, seed: 3, rate=0.2)
    with pytest.raises(TypeError, match="whose call takes no 'training' argument"):
        ds.verify_layer(lambda rate, seed: lambda x: x, rate=0.2)
    with pytest.raises(ValueError, match=r"replicas \(1\) must be >= 2"):
        ds.verify_layer(lambda rate, seed: keras.layers.Dropout(rate), rate=0.2, replicas=1)
    with pytest.raises(TypeError, match="construct it to compute in bfloat16"):
        ds.verify_layer(lambda rate, seed: keras.layers.Dropout(rate), rate=0.2, dtype="bfloat16")


REPLICAS = textwrap.dedent("""
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import dropout_stats as ds
    ds.use_logical_cpus(2)
    import keras
    r = ds.verify_layer(lambda rate, seed: keras.layers.Dropout(rate, seed=seed), rate=0.5, replicas=2,
                        false_fail_rate=1e-9)
    c = r.check("replicas")
    print("RESULT", c.passed, c.values["agreement"][0], c.values["p_vs_independent"])
""")


@pytest.mark.statistical(false_fail_rate=A)
def test_replicas_are_compared_and_keras_shares_them():
    """The measured fact (Keras 3.15 on TF 2.21): both replicas draw the same mask (agreement 1).
    Where a Keras keeps replicas independent the check passes instead: the agreement is then
    tested against p^2 + q^2 at level A (exact binomial), hence the mark."""
    out = subprocess.run([sys.executable, "-c", REPLICAS], capture_output=True, text=True, timeout=300)
    line = next(v for v in out.stdout.splitlines() if v.startswith("RESULT"))
    _, passed, agreement, p_indep = line.split()
    if float(agreement) == 1.0:
        assert passed == "False"
    else:
        assert passed == "True" and float(p_indep) > A, line


@pytest.mark.statistical(false_fail_rate=A)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_gaussian_noise_that_rounds_to_one_is_not_a_defect(dtype, seed):
    """In 16-bit dtypes fl(1 + sd z) is exactly 1 at 0.04% to 2.3% of positions (measured on
    Keras 3.15, TF 2.21 and JAX 0.10): x comes back unchanged there from a correct layer.  The
    checks bound that share (battery.gaussian.unchanged_share_bound) instead of asking for noise
    everywhere, which failed every 16-bit GaussianDropout."""
    if not KERAS3:
        pytest.skip("Keras 3's mixed dtypes")
    r = ds.verify_layer(
        lambda rate, s: keras.layers.GaussianDropout(rate, seed=s, dtype=dtype),
        rate=0.3,
        dtype=dtype,
        seed=seed % 2**30,
        false_fail_rate=A,
    )
    assert r.passed, r.text()
    assert 0 < r.check("fit").values["unchanged"] <= r.check("fit").values["bound"] * r.check("fit").values["n"]


def test_a_gaussian_layer_without_noise_at_half_its_positions_fails():
    """Half the positions unchanged (131,072 of 262,144) against a bound of 3.9e-7: certain."""
    if not KERAS3:
        pytest.skip("Keras 3's keras.ops")

    class HalfNoise(keras.layers.GaussianDropout):
        def call(self, x, training=False):
            y = super().call(x, training=training)
            half = keras.ops.arange(x.shape[-1]) < x.shape[-1] // 2
            return keras.ops.where(half, x, y)

    r = ds.verify_layer(lambda rate, s: HalfNoise(rate, seed=s), rate=0.3, false_fail_rate=A)
    assert {"mode_transitions", "fit"} <= {c.name for c in r.failures}, r.text()


@pytest.mark.parametrize("level", [1e-10, 1e-30])
def test_the_unchanged_share_limit_is_exact_to_one_position(level):
    """The Gaussian entries fail beyond `limit` unchanged positions, where `limit` is the exact
    binomial quantile at the entry's level: `limit` unchanged passes, `limit + 1` fails; `limit`
    from a scan of scipy's sf (its isf says n below 1e-16, and the detail said so once)."""
    import numpy as np
    from scipy import stats

    from dropout_stats.battery.gaussian import unchanged_share_bound
    from dropout_stats.battery.layers import LayerProbe

    probe = LayerProbe(lambda rate, seed: None, 0.3, "float32", (64, 4096), None, 0, "gaussian")
    n = 262_144
    bound = unchanged_share_bound(0.3, "float32")
    ks = np.arange(n + 1)
    limit = int(ks[stats.binom.sf(ks, n, bound) <= level][0])
    for same, passes in ((limit, True), (limit + 1, False)):
        noisy = np.ones(n, bool)
        noisy[:same] = False
        c = probe.rate_check("fit", [noisy], level, "synthetic")
        assert (c.pvalue > level) is passes, (same, c.pvalue)
    assert f"fails beyond {limit} unchanged positions" in c.detail


def test_the_unchanged_share_bound_covers_its_terms():
    """2 phi(0) ULP / sd plus two atoms of 2^-(precision - 1): float32 at rate 0.3 is
    0.798 * 2^-23 / 0.6547 + 2^-22; bfloat16 adds 2 * 2^-7."""
    import math

    from dropout_stats.battery.gaussian import unchanged_share_bound

    sd = math.sqrt(0.3 / 0.7)
    assert math.isclose(
        unchanged_share_bound(0.3, "float32"), 2 / math.sqrt(2 * math.pi) * 2**-23 / sd + 2 * 2**-23, rel_tol=1e-12
    )
    assert math.isclose(
        unchanged_share_bound(0.3, "bfloat16"), 2 / math.sqrt(2 * math.pi) * 2**-7 / sd + 2 * 2**-7, rel_tol=1e-12
    )
    assert unchanged_share_bound(0.3, "float64") < 1e-15
