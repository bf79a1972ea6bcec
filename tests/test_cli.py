"""The dropout-stats command line, run as a user would: subprocesses, exit codes, files."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def run(*args, cwd=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "dropout_stats", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env or ENV,
        timeout=600,
    )


def test_explain_the_founding_question():
    r = run("explain", "--units", "32", "--rate", "0.2", "--observed", "9")
    assert r.returncode == 0, r.stderr
    assert "Binomial(32, 0.2)" in r.stdout
    assert "P(exactly 6 zeros) = 0.1753" in r.stdout
    assert "9 zeros out of 32 is consistent with rate 0.2" in r.stdout


def test_explain_words_fit_the_case():
    one = run("explain", "--units", "1", "--rate", "0.999").stdout
    assert "on 1 unit in float32" in one and "exception, not the rule" not in one  # P(1 zero) = 0.999
    assert "95% of calls give exactly 1 zero;" in one
    f16 = run("explain", "--units", "1000", "--rate", "0.41", "--dtype", "float16").stdout
    # the most likely count at float16's rate (0.41 rounds to 0.41015625: 410 of 1001 * 0.41015625)
    assert "P(exactly 410 zeros)" in f16, f16
    verdict = run("explain", "--units", "32", "--rate", "0.2", "--observed", "0").stdout
    assert "is consistent with rate 0.2 at level 0.001: exact two-sided p = 0.001353 > 0.001" in verdict
    assert max(len(v) for v in (one + f16 + verdict).splitlines()) <= 100


def test_a_plot_into_a_missing_folder_fails_before_the_work(tmp_path):
    r = run("explain", "--units", "32", "--rate", "0.2", "--plot", str(tmp_path / "no" / "x.png"))
    assert r.returncode == 2 and r.stdout == "" and "folder that does not exist" in r.stderr


def test_explain_bfloat16_names_the_grid():
    r = run("explain", "--units", "1000", "--rate", "0.2", "--dtype", "bfloat16", "--observed", "300")
    assert r.returncode == 0
    assert "51/64" in r.stdout and "NOT consistent" in r.stdout


# bad usage (exit 2, message, nothing written): tests/test_bad_input.py


@pytest.fixture
def user_module(tmp_path):
    (tmp_path / "userdrop.py").write_text(
        textwrap.dedent("""
        import tensorflow as tf

        def good(x, rate, seed, noise_shape=None):
            return tf.nn.experimental.stateless_dropout(x, rate, seed=seed, noise_shape=noise_shape)

        def unscaled(x, rate, seed, noise_shape=None):
            y = tf.nn.experimental.stateless_dropout(x, rate, seed=seed, noise_shape=noise_shape)
            return tf.where(y != 0, x, tf.zeros_like(x))

        def stateful(x, rate, noise_shape=None):
            return tf.nn.dropout(x, rate, noise_shape=noise_shape)

        def wrong_signature(x):
            return x
    """)
    )
    return tmp_path


@pytest.mark.statistical(false_fail_rate=2e-9)
def test_verify_a_user_function(user_module):
    out = user_module / "report.json"
    r = run("verify", "userdrop:good", "--false-fail-rate", "1e-9", "--json", str(out), cwd=user_module)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASSED" in r.stdout and json.loads(out.read_text())["passed"] is True
    r = run("verify", "userdrop:stateful", "--stateful", "--false-fail-rate", "1e-9", cwd=user_module)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.statistical(false_fail_rate=2e-9)
def test_same_seed_gives_byte_identical_reports_across_processes(user_module):
    outs = []
    for name in ("one.json", "two.json"):
        r = run("verify", "userdrop:good", "--seed", "77", "--false-fail-rate", "1e-9", "--json", name, cwd=user_module)
        assert r.returncode == 0, r.stderr
        outs.append((user_module / name).read_bytes())
    assert outs[0] == outs[1]


def test_verify_exits_1_on_a_broken_function(user_module):
    r = run("verify", "userdrop:unscaled", cwd=user_module)
    assert r.returncode == 1
    assert "FAIL scale" in r.stdout and "reproduce: verify(" in r.stdout


def test_verify_rejects_a_wrong_signature(user_module):
    r = run("verify", "userdrop:wrong_signature", cwd=user_module)
    assert r.returncode == 2 and "does not follow the contract fn(x, rate, seed, noise_shape=None)" in r.stderr


@pytest.mark.statistical(false_fail_rate=34 * 1e-9)  # 22 configurations, 6 layers, 3 recurrent, 3 attention
def test_quick_audit_writes_json_and_png(tmp_path):
    """22 configurations (11 eager entry points x 2 dtypes), each verified at 1e-9, then the Keras
    layers in a model.  Exit code 1 exactly when a layer fails, and then only its replicas check
    (Keras 3 draws the same masks on every replica: see the README's findings)."""
    out, png = tmp_path / "audit.json", tmp_path / "audit.png"
    r = run(
        "audit",
        "--framework",
        "tensorflow",
        "--quick",
        "--dtypes",
        "float32",
        "bfloat16",
        "--false-fail-rate",
        "1e-9",
        "--json",
        str(out),
        "--plot",
        str(png),
    )
    assert "tf.nn.experimental.stateless_dropout" in r.stdout and "configurations passed" in r.stdout
    assert "[1/" in r.stderr  # plain progress lines when not a terminal
    data = json.loads(out.read_text())
    assert data["results"] and all(x["report"]["passed"] for x in data["results"])
    assert data["frameworks"] == {"tensorflow": data["tensorflow"]} and data["layers"]
    failing = {c["name"] for x in data["layers"] for c in x["report"]["checks"] if c["passed"] is False}
    assert failing <= {"replicas"}, failing
    import keras

    if keras.backend.backend() == "tensorflow":  # Keras 2 or 3: SimpleRNN, GRU, LSTM pass eagerly
        assert [x["layer"] for x in data["recurrent"]] == [
            f"keras.layers.{c} [eager]"  # --quick: no tf.function
            for c in ("SimpleRNN", "GRU", "LSTM")
        ]
        assert all(x["report"]["passed"] for x in data["recurrent"]) and "recurrent layers" in r.stdout
        assert [x["layer"] for x in data["attention"]] == [
            f"keras.layers.{c}" for c in ("MultiHeadAttention", "Attention", "AdditiveAttention")
        ]
        assert all(x["report"]["passed"] for x in data["attention"]) and "attention layers" in r.stdout
    assert r.returncode == (1 if failing else 0), r.stdout[-3000:] + r.stderr[-3000:]
    assert any(
        "102/128" in f["detail"] or "51/64" in f["detail"] for x in data["results"] for f in x["report"]["findings"]
    )
    assert data["schema"] == "dropout-stats/audit/1" and set(data["seconds_by_mode"]) == {"eager"}
    first = data["results"][0]
    keep = next(c for c in first["report"]["checks"] if c["name"] == "keep_fraction")
    assert isinstance(first["seconds"], float) and first["report"]["schema"] == "dropout-stats/report/1"
    assert (
        isinstance(keep["values"]["kept"], int)
        and keep["values"]["fraction"] == keep["values"]["kept"] / keep["values"]["n"]
    )
    assert "absl::InitializeLog" not in r.stderr and "oneDNN" not in r.stderr  # TensorFlow's start-up lines
    assert "backward pass under activation checkpointing" in r.stdout
    assert max(len(v) for v in r.stdout.splitlines()) <= 100
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # not mkstemp's 0600
    import matplotlib.image

    img = matplotlib.image.imread(str(png))
    assert img.shape[0] > 300 and img.shape[1] > 500 and img.std() > 0.01  # a real picture, not blank
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".dropout-stats-")]  # no temp files left


@pytest.mark.statistical(false_fail_rate=49 * 1e-9)
def test_quick_audit_of_jax_and_torch(tmp_path):
    """The audit of the other frameworks: their eager entry points in float32 (at most 40
    configurations), flax.nnx.Dropout, torch's 6 dropout modules and 2 attention modules, each at
    1e-9; one table,
    the framework of each result in the JSON, and torch.utils.checkpoint(preserve_rng_state=False)
    drawing another mask (exact)."""
    have = [fw for fw in ("jax", "torch") if importlib.util.find_spec(fw) is not None]
    if not have:
        pytest.skip("neither jax nor torch is installed")
    out = tmp_path / "audit.json"
    r = run(
        "audit", "--framework", *have, "--quick", "--dtypes", "float32", "--false-fail-rate", "1e-9", "--json", str(out)
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    data = json.loads(out.read_text())
    assert set(data["frameworks"]) == set(have) and data["tensorflow"] is None
    layers = [x["layer"] for x in data["layers"]]
    flax = importlib.util.find_spec("flax") is not None
    assert layers == (["flax.nnx.Dropout"] if "jax" in have and flax else []) + (
        [
            f"torch.nn.{c}"
            for c in ("Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout")
        ]
        if "torch" in have
        else []
    )
    assert all(x["report"]["passed"] for x in data["layers"] + data["attention"])
    assert [x["layer"] for x in data["attention"]] == (
        ["torch.nn.MultiheadAttention", "torch.nn.functional.scaled_dot_product_attention"] if "torch" in have else []
    )
    assert {x["framework"] for x in data["results"]} == set(have)
    assert r.stdout.startswith(
        "dropout-stats audit: "
        + ", ".join({"jax": "JAX", "torch": "PyTorch"}[fw] + " " + data["frameworks"][fw] for fw in have)
    )
    if "torch" in have:
        lost = data["recompute"]["torch"][
            "torch.nn.functional.dropout / torch.utils.checkpoint(preserve_rng_state=False)"
        ]
        kept = data["recompute"]["torch"]["torch.nn.functional.dropout / torch.utils.checkpoint"]
        assert lost["p_vs_same_mask"] == 0.0 and kept["agreement"] == 1.0
    assert max(len(v) for v in r.stdout.splitlines()) <= 100


def test_plot_without_matplotlib_says_how_to_install(tmp_path):
    fake = tmp_path / "fake"
    (fake / "matplotlib").mkdir(parents=True)
    (fake / "matplotlib" / "__init__.py").write_text("raise ImportError('no matplotlib here')\n")
    env = dict(ENV, PYTHONPATH=f"{fake}{os.pathsep}{ENV.get('PYTHONPATH', '')}")
    r = run("explain", "--units", "32", "--rate", "0.2", "--plot", str(tmp_path / "x.png"), env=env)
    assert r.returncode == 2 and "pip install 'dropout-stats[plot]'" in r.stderr
    assert not (tmp_path / "x.png").exists()


def test_explain_plot_is_a_png(tmp_path):
    png = tmp_path / "explain.png"
    r = run("explain", "--units", "32", "--rate", "0.2", "--observed", "9", "--plot", str(png))
    assert r.returncode == 0, r.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
