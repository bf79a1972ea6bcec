"""Version facts (probes) on the installed TensorFlow, and the behaviour matrix built from them."""

import json
import subprocess
import sys

import pytest
import tensorflow as tf

from dropout_stats import probes, rate_test
from dropout_stats.cli import matrix_markdown

TF = tuple(int(v) for v in tf.__version__.split(".")[:2])


def test_nonfinite_inputs_are_selected_not_multiplied():
    """TF 2.12, 2.15 and 2.21 (measured here): dropped positions hold 0 even for NaN/inf x, kept
    ones keep NaN/inf.  A multiply-by-mask implementation would hold NaN."""
    facts = probes.nonfinite_at_dropped_positions()
    for label in ("nan", "inf", "-inf"):
        assert facts[label]["dropped_hold"] == "0 (select)", facts
    assert facts["nan"]["kept_hold"] == "nan" and facts["inf"]["kept_hold"] == "inf"


@pytest.mark.statistical(false_fail_rate=6e-9)
def test_low_precision_keep_probabilities_match_the_grid_prediction():
    """2^20 draws per cell, exact test at 1e-9 each against the dtype-exact prediction."""
    for cell, f in probes.keep_probabilities().items():
        assert f["p_vs_predicted"] > 1e-9, (cell, f)


def test_xla_masks_against_eager():
    facts = probes.xla_against_eager()
    assert facts["float16"]["default"] == 0
    for dtype, row in facts.items():
        if row["philox"] != "no rng_alg argument":
            assert row["philox"] == 0, (dtype, row)  # with rng_alg="philox" XLA equals eager


@pytest.mark.statistical(false_fail_rate=1e-9)
def test_extreme_rates_in_low_precision():
    facts = probes.extremes()
    assert facts["float16 0.9995"]["dropped_share"] == 1.0  # the rate rounds to 1.0
    assert facts["bfloat16 0.995"]["dropped_share"] == 1.0
    n = 1 << 20
    dropped = round(facts["float16 0.0001"]["dropped_share"] * n)
    assert rate_test(dropped, n, 1 / 1024).pvalue > 1e-9  # 1/1024, not 1e-4: 9.8x the nominal


def test_rate_validation():
    facts = probes.rate_validation()
    assert facts["python 1.5"].startswith("ValueError")
    assert facts["python -0.1"].startswith("ValueError")
    assert facts["tensor 1.5"] == "accepted: drops everything"  # tensor rates are never range-checked
    assert facts["tensor -0.1"].startswith("accepted: keeps 1.000, scale 0.909")
    assert facts["python nan"] == "accepted: drops everything"
    assert facts["python 0.0"] == "accepted: keeps 1.000, scale 1"


def test_keras_seeding_matches_the_keras_major_version():
    import keras

    facts = probes.keras_seeding()
    keras3 = int(keras.__version__.split(".")[0]) >= 3
    assert facts["calls stateless_dropout([s, k])"] is keras3


def _payload(version, passed=True):
    return {
        "schema": "dropout-stats/audit/1",
        "tensorflow": version,
        "keras": "x",
        "facts": {"nonfinite": {"nan": {"dropped_hold": "0 (select)"}}, "extremes": "probe failed: Boom"},
        "results": [
            {
                "entry_point": "tf.nn.dropout",
                "mode": "eager",
                "dtype": "float32",
                "report": {
                    "passed": passed,
                    "checks": [{"name": "scale", "passed": passed}, {"name": "mechanism", "passed": True}],
                    "findings": [{"name": "scale_formula", "value": "multiply"}],
                },
            }
        ],
    }


def test_matrix_has_one_column_per_version_sorted():
    text = matrix_markdown([_payload("2.21.0"), _payload("2.12.1", passed=False)])
    header = next(line for line in text.splitlines() if line.startswith("| section"))
    assert header.index("TF 2.12.1") < header.index("TF 2.21.0")
    row = next(line for line in text.splitlines() if "| verify | tf.nn.dropout [eager]" in line)
    assert "0/1 dtypes pass (FAIL float32: scale)" in row and "1/1 dtypes pass" in row
    assert "| nonfinite | nan | dropped_hold 0 (select) | dropped_hold 0 (select) |" in text
    assert "probe failed: Boom" in text
    assert "| mechanism (kept == uniform >= rate, bit for bit) | tf.nn.dropout [eager] | exact in 1/1 dtypes |" in text


def test_matrix_command_writes_the_file(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_payload("2.15.1")))
    b.write_text(json.dumps(_payload("2.21.0")))
    out = tmp_path / "m.md"
    r = subprocess.run(
        [sys.executable, "-m", "dropout_stats", "matrix", str(a), str(b), "-o", str(out)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "TF 2.15.1" in out.read_text() and "TF 2.21.0" in out.read_text()
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    r = subprocess.run([sys.executable, "-m", "dropout_stats", "matrix", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2 and "not a readable audit JSON" in r.stderr


def test_matrix_rows_for_recurrent_and_attention_layers():
    """The time-step semantics of each recurrent mask, and the attention verdicts, per release."""
    p = _payload("2.21.0")
    p["recurrent"] = [
        {
            "layer": "keras.layers.LSTM",
            "report": {
                "passed": True,
                "checks": [],
                "findings": [
                    {
                        "name": "time_semantics",
                        "detail": "input mask: one per sequence, shared by its 4 time steps read",
                    }
                ],
            },
        }
    ]
    p["attention"] = [
        {
            "layer": "keras.layers.Attention",
            "report": {"passed": False, "checks": [{"name": "scale", "passed": False}], "findings": []},
        }
    ]
    text = matrix_markdown([p])
    assert "| keras.layers.LSTM | pass; input mask: one per sequence, shared by its 4 time steps |" in text
    assert "| keras.layers.Attention | FAIL scale |" in text
    empty = matrix_markdown([_payload("2.12.1")])  # older audits have neither section
    assert "recurrent layers" not in empty


def test_matrix_columns_for_other_frameworks_follow_the_tensorflow_releases(tmp_path):
    """A PyTorch audit and a JAX + Keras-on-JAX audit become columns after TF's, named by their
    versions; their rows sit beside TensorFlow's."""
    torch_audit = {
        "schema": "dropout-stats/audit/1",
        "tensorflow": None,
        "frameworks": {"torch": "2.13.0"},
        "results": [
            {
                "entry_point": "torch.nn.Dropout",
                "mode": "eager",
                "dtype": "float32",
                "report": {"passed": True, "checks": [], "findings": []},
            }
        ],
        "layers": [
            {
                "layer": "torch.nn.Dropout",
                "report": {
                    "passed": False,
                    "checks": [{"name": "inference_identity", "passed": False}],
                    "findings": [],
                },
            }
        ],
    }
    jax_audit = {
        "schema": "dropout-stats/audit/1",
        "tensorflow": None,
        "frameworks": {"jax": "0.10.2", "keras-jax": "3.15.1"},
        "results": [],
    }
    text = matrix_markdown([torch_audit, _payload("2.21.0"), jax_audit])
    header = next(line for line in text.splitlines() if line.startswith("| section"))
    assert header.index("TF 2.21.0") < header.index("JAX 0.10.2 + Keras on JAX 3.15.1") < header.index("PyTorch 2.13.0")
    assert "| verify | torch.nn.Dropout [eager] |  |  | 1/1 dtypes pass |" in text
    assert "| torch.nn.Dropout |  |  | FAIL inference_identity |" in text
    a = tmp_path / "torch.json"
    a.write_text(json.dumps(torch_audit))
    r = subprocess.run([sys.executable, "-m", "dropout_stats", "matrix", str(a)], capture_output=True, text=True)
    assert r.returncode == 0 and "PyTorch 2.13.0" in r.stdout, r.stderr
