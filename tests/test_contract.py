"""Correct means the contract (GitHub issue 28): correct dropout passes however it is written, and
broken dropout keeps failing.

The implementations are tests/contract_corpus.py's: CORRECT (TensorFlow, numpy, JAX/Flax, PyTorch;
functions, stateful functions and layers) and BROKEN (the scale and keep contract, each with its
reason).  Each case below is one verify() / verify_layer() run of one entry at one dtype and rate;
every correct entry appears at least once (test_every_entry_is_covered), the TensorFlow and numpy
cases are at most ~40 runs, the JAX and PyTorch ones skip where those frameworks do not import.
benchmarks/contract_corpus.py runs the whole grid (every dtype, rates 0.1 to 0.9, several seeds).

Budget: a correct case runs verify() at false_fail_rate=A, so it fails by chance with probability
<= A (its statistical mark).  A broken case runs at false_fail_rate=A and false_pass_rate=B: a
defect an exact check sees in every call (a kept value or gradient off its rounding bound) is
missed only if no value is kept, which at these rates and 262,144 draws per call is below 1e-300,
so it carries no mark; a defect seen only through the keep probability (miss="design": off by at
least verify()'s designed discrepancy) is missed with probability <= B, its statistical mark.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from contract_corpus import BROKEN, CORRECT, by_name

A = 1e-10  # false_fail_rate of each verify() run
B = 1e-10  # false_pass_rate of each broken run (the miss chance of a keep-probability defect)

# (entry, dtype, rate): TensorFlow and numpy first (the suite's fast part), then JAX and PyTorch.
CORRECT_CASES = [
    # -- TensorFlow (16 runs) ------------------------------------------------------------------
    ("tf.stateless_dropout", "bfloat16", 0.65),
    ("tf.general_dropout", "float16", 0.3),
    ("tf.nn.dropout", "float64", 0.8),
    ("tf.textbook_where", "float32", 0.6),
    ("tf.textbook_where", "float32", 0.65),
    ("tf.textbook_where", "bfloat16", 0.2),
    ("tf.textbook_where_dtype_uniform", "float16", 0.65),
    ("tf.mask_div_keep", "bfloat16", 0.6),
    ("tf.mask_times_inverse", "float16", 0.1),
    ("tf.rate_tensor", "float32", 0.9),
    ("tf.upcast_float32", "bfloat16", 0.5),
    ("tf.function_textbook", "float32", 0.6),
    ("tf.function_textbook", "float64", 0.65),
    ("tf.generator_stateful", "float64", 0.2),
    ("tf.keras.layers.Dropout", "float16", 0.65),
    ("tf.keras.layers.Dropout", "float64", 0.6),
    # -- numpy (10 runs) -----------------------------------------------------------------------
    ("np.random_ge", "float16", 0.65),
    ("np.random_ge", "bfloat16", 0.6),
    ("np.float32_uniform_lt_keep", "float64", 0.3),
    ("np.binomial", "float32", 0.2),
    ("np.float64_then_cast", "bfloat16", 0.65),
    ("np.float64_scale_once", "bfloat16", 0.6),
    ("np.float32_compute", "float16", 0.8),
    ("np.out_buffer", "float32", 0.5),
    ("np.out_buffer", "bfloat16", 0.2),
    ("np.stateful_generator", "float64", 0.1),
    # -- JAX / Flax ----------------------------------------------------------------------------
    ("jax.bernoulli_where", "bfloat16", 0.65),
    ("jax.bernoulli_multiply", "float16", 0.6),
    ("jax.uniform_ge", "float32", 0.2),
    ("jax.jit_bernoulli", "bfloat16", 0.1),
    ("jax.stateful_split", "float16", 0.8),
    ("flax.linen.Dropout", "float32", 0.65),
    ("flax.nnx.Dropout", "bfloat16", 0.3),
    # -- PyTorch -------------------------------------------------------------------------------
    ("torch.F.dropout", "float16", 0.65),
    ("torch.nn.Dropout", "bfloat16", 0.6),
    ("torch.hand_module", "float32", 0.3),
    ("torch.hand_module", "bfloat16", 0.2),
    ("torch.rand_stateful", "float64", 0.65),
    ("torch.bernoulli_generator", "bfloat16", 0.8),
    ("torch.bernoulli_inplace_generator", "float16", 0.1),
    ("torch.rand_generator_where", "float32", 0.6),
]

BROKEN_CASES = [
    # -- numpy (11 runs) -----------------------------------------------------------------------
    ("np.no_scale", "float16", 0.2),
    ("np.scale_inverse_rate", "float32", 0.65),
    ("np.scale_keep_prob", "bfloat16", 0.2),
    ("np.scale_in_bfloat16_for_float32", "float32", 0.65),
    ("np.scale_in_float16_for_float32", "float32", 0.3),
    ("np.rate_rounded_to_bfloat16_for_float32", "float32", 0.2),
    ("np.scale_1pct_high", "float32", 0.65),
    ("np.plus_3_ulp", "bfloat16", 0.2),
    ("np.rate_1pct_high", "float32", 0.2),
    ("np.rate_1pct_high_rescaled", "float32", 0.65),
    ("np.keep_prob_is_rate", "float64", 0.8),
    # -- TensorFlow (3 runs) -------------------------------------------------------------------
    ("tf.no_scale", "bfloat16", 0.65),
    ("tf.scale_in_bfloat16_for_float32", "float32", 0.3),
    ("tf.backward_unscaled", "float32", 0.65),
    # -- JAX, PyTorch --------------------------------------------------------------------------
    ("jax.keep_prob_is_rate", "float32", 0.2),
    ("jax.scale_in_bfloat16_for_float32", "float32", 0.65),
    ("torch.hand_module_scale_by_keep", "bfloat16", 0.65),
    ("torch.backward_unscaled", "float32", 0.2),
]


def _id(name, dtype, rate):
    return f"{name}-{dtype}-{rate:g}"


def _correct_params():
    return [
        pytest.param(name, dtype, rate, id=_id(name, dtype, rate), marks=pytest.mark.statistical(false_fail_rate=A))
        for name, dtype, rate in CORRECT_CASES
    ]


def _broken_params():
    params = []
    for name, dtype, rate in BROKEN_CASES:
        marks = [pytest.mark.statistical(false_fail_rate=B)] if by_name(name).miss == "design" else []
        params.append(pytest.param(name, dtype, rate, id=_id(name, dtype, rate), marks=marks))
    return params


def _entry(name):
    entry = by_name(name)
    if not entry.available():
        pytest.skip(f"{entry.framework} ({', '.join(entry.extra_imports) or 'itself'}) is not importable")
    return entry


def _numpy_1_promotes(entry, dtype) -> None:
    """numpy 1.x (tox's tf212 pins 1.24) promotes ``x / (1 - rate)`` for a 16-bit x to float64
    (value-based casting, before NEP 50): the numpy entries then return another dtype, which is
    not the code a numpy 2 user runs."""
    if entry.framework == "numpy" and dtype in ("float16", "bfloat16") and int(np.__version__.split(".")[0]) < 2:
        pytest.skip(f"numpy {np.__version__} promotes a 16-bit x divided by a Python float to float64")


@pytest.mark.parametrize("name, dtype, rate", _correct_params())
def test_correct_implementation_passes(name, dtype, rate, seed):
    entry = _entry(name)
    _numpy_1_promotes(entry, dtype)
    r = entry.verify(rate=rate, dtype=dtype, seed=seed % 2**20, false_fail_rate=A)
    assert r.passed, f"{name} ({entry.code}) at {dtype}, rate {rate}: a false alarm\n{r}"


@pytest.mark.parametrize("name, dtype, rate", _broken_params())
def test_broken_implementation_fails(name, dtype, rate, seed):
    entry = _entry(name)
    _numpy_1_promotes(entry, dtype)
    r = entry.verify(rate=rate, dtype=dtype, seed=seed % 2**20, false_fail_rate=A, false_pass_rate=B)
    assert not r.passed, f"{name} ({entry.reason}) at {dtype}, rate {rate} passed\n{r}"


# -- the tables themselves (no verify() run) ---------------------------------------------------
def test_every_entry_is_covered():
    """Every correct and every broken entry has a case, each at a dtype it supports and (broken)
    a rate it is broken at; the TensorFlow and numpy runs stay within ~40."""
    for cases, entries in ((CORRECT_CASES, CORRECT), (BROKEN_CASES, BROKEN)):
        assert {n for n, _, _ in cases} == {e.name for e in entries}
        for name, dtype, rate in cases:
            e = by_name(name)
            assert dtype in e.dtypes, (name, dtype)
            assert rate in e.rates, (name, rate)
    fast = [c for c in CORRECT_CASES + BROKEN_CASES if by_name(c[0]).framework in ("tensorflow", "numpy")]
    assert len(fast) <= 42, len(fast)
    for framework in ("tensorflow", "numpy", "jax", "torch"):
        dtypes = {d for n, d, _ in CORRECT_CASES if by_name(n).framework == framework}
        want = {"float32", "float16", "bfloat16"} | ({"float64"} if framework != "jax" else set())
        assert dtypes >= want, (framework, dtypes)
    assert {0.6, 0.65} <= {r for _, _, r in CORRECT_CASES}


def test_corpus_imports_without_frameworks():
    """contract_corpus imports frameworks only inside its builders."""
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import contract_corpus; "
        "loaded = [m for m in ('tensorflow', 'torch', 'jax', 'flax', 'keras') if m in sys.modules]; "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
