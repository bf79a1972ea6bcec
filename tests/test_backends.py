"""Backends: the engine runs with numpy alone, picks the framework from fn's first output, and
every backend's model of a correct implementation is computed, not assumed.

Runs without TensorFlow (tox env ``notf``); the tests that compare with TensorFlow skip there.
Budget: each verify() here runs at false_fail_rate=1e-9; a defect must be caught with
false_pass_rate=1e-9 where it sits at the designed discrepancy, far less where it is gross.
"""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

import dropout_stats as ds
from dropout_stats.backends import detect_backend, get_backend, make_input_array
from dropout_stats.precision import uniform_keep_fraction

A = 1e-9


def numpy_dropout(x, rate, seed, noise_shape=None):
    """A correct numpy dropout: a float64 uniform from the seed pair, kept where U >= rate."""
    keep = np.random.default_rng(list(seed)).random(noise_shape or x.shape) >= rate
    return np.where(keep, x * x.dtype.type(1 / (1 - rate)), x.dtype.type(0)).astype(x.dtype)


def numpy_rate_bias(x, rate, seed, noise_shape=None):
    """drops at 1.01 x rate (1% of min(rate, 1 - rate) at rate 0.2), scaled to match"""
    r = rate * 1.01
    keep = np.random.default_rng(list(seed)).random(noise_shape or x.shape) >= r
    return np.where(keep, x * x.dtype.type(1 / (1 - rate)), x.dtype.type(0)).astype(x.dtype)


@pytest.mark.statistical(false_fail_rate=A)
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_numpy_dropout_passes_on_the_numpy_backend(dtype, seed):
    r = ds.verify(numpy_dropout, rate=0.3, dtype=dtype, seed=seed % 2**30, false_fail_rate=A)
    assert r.passed, str(r)
    assert r.config["backend"] == "numpy"  # picked from the first output
    assert r.check("mechanism").passed is None  # no reference stream: not applicable
    # no reference stream: whether the masks nest is reported (they do: one uniform per unit)
    assert r.check("threshold_nesting").passed is None and r.check("scale").passed
    assert [f.value for f in r.findings if f.name == "threshold_mechanism"] == [True]


@pytest.mark.statistical(false_fail_rate=1e-9)  # the defect sits at the designed discrepancy
def test_numpy_rate_bias_fails_keep_fraction(seed):
    r = ds.verify(
        numpy_rate_bias, rate=0.2, backend="numpy", seed=seed % 2**30, false_fail_rate=A, false_pass_rate=1e-9
    )
    assert r.check("keep_fraction").passed is False, str(r)


def test_verify_runs_with_tensorflow_unimportable():
    """What `pip install -e .` (no extras) gives: the numpy backend needs no framework."""
    code = (
        "import sys; sys.modules['tensorflow'] = None\n"
        "import numpy as np, dropout_stats as ds\n"
        "from tests.test_backends import numpy_dropout\n"
        "r = ds.verify(numpy_dropout, rate=0.2, backend='numpy', false_fail_rate=1e-3)\n"
        "tf = sys.modules.get('tensorflow')\n"
        "print(r.passed, r.check('mechanism').status, tf is not None)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=_root())
    assert out.returncode == 0, out.stderr
    # false_fail_rate 1e-3: a false failure here is possible at that rate, so only the run and
    # the imports are asserted, not the verdict
    assert out.stdout.split()[1:] == ["n/a", "False"], out.stdout


def _root():
    import pathlib

    return str(pathlib.Path(__file__).resolve().parent.parent)


def test_detect_backend_by_output_type():
    assert detect_backend(np.zeros(3, np.float32)) == "numpy"
    assert detect_backend("nope") is None
    assert detect_backend([1.0]) is None


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match=r"backend \('mxnet'\) must be one of 'numpy', 'tensorflow'"):
        get_backend("mxnet")


@pytest.mark.parametrize("levels", [2**7, 2**10])
def test_uniform_keep_fraction_against_enumeration(levels):
    """Both rules against counting the grid points one by one (exact fractions)."""
    from dropout_stats._floats import round_to

    dtype = "bfloat16" if levels == 2**7 else "float16"
    grid = [Fraction(k, levels) for k in range(levels)]
    for rate in [0.0, 0.001, 0.1, 0.2, 0.25, 0.3, 0.5, 0.7, 0.9, 0.99]:
        t_ge = Fraction(float(round_to(rate, dtype)))
        t_lt = Fraction(float(round_to(1 - rate, dtype)))
        assert uniform_keep_fraction(rate, dtype, levels) == Fraction(sum(u >= t_ge for u in grid), levels)
        assert uniform_keep_fraction(rate, dtype, levels, "U < fl(1 - rate)") == Fraction(
            sum(u < t_lt for u in grid), levels
        )


def test_uniform_keep_fraction_matches_jax_measurements():
    """The leads measured on JAX's bernoulli (shared/facts/other-frameworks.md)."""
    rule = "U < fl(1 - rate)"
    assert uniform_keep_fraction(0.2, "bfloat16", 128, rule) == Fraction(103, 128)
    assert uniform_keep_fraction(0.2, "float16", 1024, rule) == Fraction(819, 1024)
    assert uniform_keep_fraction(0.1, "float16", 1024, rule) == Fraction(461, 512)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_numpy_input_equals_what_tensorflow_casts(dtype):
    """The backend-neutral input is bit for bit what the TensorFlow battery used to build with
    tf.cast (round to nearest even), so reports did not change with the backends."""
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng([7, 0x5EED])
    n = 4096
    if dtype == "float64":
        want = make_input_array((n,), dtype, 7)  # float64 has no cast: built from the bits alone
        assert want.dtype == np.float64 and np.all((np.abs(want) >= 0.5) & (np.abs(want) < 2))
        return
    bits = np.frombuffer(rng.bytes(4 * n), dtype=np.uint32)
    values = ((bits & np.uint32(0x80FFFFFF)) | np.uint32(0x3F000000)).view(np.float32)
    want = tf.cast(tf.constant(values), dtype).numpy()
    got = make_input_array((n,), dtype, 7)
    assert got.dtype.name == want.dtype.name and np.array_equal(got.view(np.uint8), want.view(np.uint8))


def test_a_framework_fn_that_refuses_numpy_still_finds_its_backend():
    """The first call gets numpy inputs; a TensorFlow fn that insists on tensors (as TF 2.12 does
    for ml_dtypes' bfloat16) is tried with the loaded framework's own arrays next."""
    tf = pytest.importorskip("tensorflow")

    def tensors_only(x, rate, seed, noise_shape=None):
        if not isinstance(x, tf.Tensor):
            raise TypeError("tensors only")
        return tf.nn.experimental.stateless_dropout(x, rate, seed=seed, noise_shape=noise_shape)

    r = ds.verify(tensors_only, rate=0.2, false_fail_rate=1e-3)
    assert r.config["backend"] == "tensorflow" and "contract" not in {c.name for c in r.checks}
