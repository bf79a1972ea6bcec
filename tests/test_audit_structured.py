"""The libraries in the audit (issue 31): timm and torchvision (DropPath, stochastic depth,
DropBlock) through verify_drop_path and verify_dropblock, transformers' BERT attention through
verify_attention, and importing torchvision beside a CPU torch (tox -e structured)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from argparse import Namespace

import pytest

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(p) is None for p in ("torch", "timm", "torchvision", "transformers")),
    reason="needs torch, timm, torchvision and transformers (tox -e structured)",
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def python(code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter: which import runs first matters here."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


# -- importing torchvision (and so timm, transformers) beside a CPU torch ----------------------------


def test_timm_and_transformers_import_through_the_workaround():
    """Where PyPI's CUDA torchvision sits beside a CPU torch, a plain ``import timm`` fails with
    torchvision's missing operator; after import_torchvision() timm, transformers and torchvision's
    pure-Python ops work, the detection ops stay unavailable.  Where the build matches, nothing is
    defined."""
    plain = python("import timm")
    r = python(
        "from dropout_stats.adapters._torchvision_import import import_torchvision, workaround_applied\n"
        "tv = import_torchvision()\n"
        "import timm, transformers, torch\n"
        "from transformers.models.bert.modeling_bert import BertSelfAttention\n"
        "from torchvision.ops import drop_block2d, stochastic_depth\n"
        "y = drop_block2d(torch.ones(2, 3, 14, 14), 0.2, 3)\n"
        "z = stochastic_depth(torch.ones(4, 3), 0.5, 'row')\n"
        "print(workaround_applied(), tv.extension._has_ops(), tuple(y.shape), tuple(z.shape))"
    )
    assert r.returncode == 0, r.stderr[-2000:]
    if plain.returncode != 0:
        assert "operator torchvision::nms does not exist" in plain.stderr
        assert r.stdout.strip().endswith("True False (2, 3, 14, 14) (4, 3)")
    else:  # a torchvision built for this torch: its ops load, no schema is defined
        assert r.stdout.strip().endswith("False True (2, 3, 14, 14) (4, 3)")


def test_the_workaround_recovers_after_a_failed_import():
    """A first ``import timm`` that failed leaves torchvision's half-initialised modules behind;
    import_torchvision() forgets them and imports again."""
    r = python(
        "try:\n    import timm\nexcept RuntimeError as exc:\n    print('failed first:', exc)\n"
        "from dropout_stats.adapters._torchvision_import import import_torchvision\n"
        "print(import_torchvision().__version__)\n"
        "import timm\nprint('timm', timm.__version__)"
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "timm " in r.stdout


# -- registration ------------------------------------------------------------------------------------


def test_the_libraries_are_frameworks_audited_when_named():
    from dropout_stats.adapters import FRAMEWORKS, LIBRARIES, adapters, installed_frameworks
    from dropout_stats.cli.audit import _audit_frameworks

    assert set(LIBRARIES) <= set(FRAMEWORKS) and set(LIBRARIES) <= set(installed_frameworks())
    default = _audit_frameworks(Namespace(framework=None))
    assert not set(default) & set(LIBRARIES)
    assert _audit_frameworks(Namespace(framework=["timm", "transformers"])) == ["timm", "transformers"]
    timm_rows = [a.name for a in adapters(framework="timm")]
    assert "timm DropPath[eager]" in timm_rows and "timm DropBlock2d[eager]" in timm_rows
    tv = {a.name: a for a in adapters(framework="torchvision")}
    assert {a.kind for a in tv.values()} == {"drop_path", "dropblock"}
    assert dict(tv['torchvision stochastic_depth(mode="batch")[eager]'].options)["mode"] == "batch"
    assert "float16" in tv["torchvision DropBlock2d[eager]"].dtypes  # where the count overflows
    assert adapters(framework="transformers") == []  # attention only: no entry point of its own


# -- transformers: BERT's self-attention, eager and sdpa ---------------------------------------------


@pytest.mark.statistical(false_fail_rate=2e-9)
def test_bert_self_attention_passes_on_both_paths():
    from dropout_stats.adapters.transformers import attention_factories
    from dropout_stats.battery import verify_attention

    factories = dict(attention_factories())
    assert set(factories) == {"transformers BertSelfAttention [eager]", "transformers BertSelfAttention [sdpa]"}
    for name, make in factories.items():
        probe = make(2, 16, 0.2)
        assert probe.attention.config._attn_implementation == name.split("[")[1][:-1]
        r = verify_attention(make, rate=0.2, seed=3, false_fail_rate=1e-9, exact_scale=True)
        assert r.passed, (name, [(c.name, c.observed, c.detail) for c in r.failures])
        assert r.check("backward_mask").passed and r.check("inference_identity").passed


def _broken_attention(defect):
    """An attention function for transformers' AttentionInterface with one defect: ``shared_heads``
    (one mask for every head), ``eval_drops`` (drops with the module's rate even in eval mode),
    ``unscaled`` (kept probabilities not divided by 1 - p), ``per_query_row`` (one draw per query
    row, broadcast over the keys)."""
    import torch

    def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        scaling = query.size(-1) ** -0.5 if scaling is None else scaling
        w = torch.softmax(torch.matmul(query, key.transpose(2, 3)) * scaling, dim=-1)
        p = module.dropout.p if defect == "eval_drops" else dropout
        if p:
            shape = list(w.shape)
            if defect == "shared_heads":
                shape[1] = 1
            if defect == "per_query_row":
                shape[3] = 1
            keep = torch.empty(shape, dtype=w.dtype).bernoulli_(1 - p)
            w = w * keep if defect == "unscaled" else w * keep / (1 - p)
        return torch.matmul(w, value).transpose(1, 2).contiguous(), w

    return attention


@pytest.mark.parametrize(
    "defect, check",
    [
        ("shared_heads", "head_independence"),
        ("eval_drops", "inference_identity"),
        ("unscaled", "scale"),
        ("per_query_row", "key_independence"),
    ],
)
def test_the_bert_read_out_sees_a_broken_attention_function(defect, check):
    """The probe reads BERT's probabilities through whatever attention function the config names:
    a broken one registered with transformers' AttentionInterface fails its check (each defect is
    far beyond the tests' power: p-values below 1e-20)."""
    from dropout_stats.adapters.transformers import bert_self_attention  # imports torchvision first
    from dropout_stats.battery import verify_attention

    transformers = sys.modules["transformers"]

    name = f"dropout_stats_test_{defect}"
    transformers.AttentionInterface.register(name, _broken_attention(defect))
    r = verify_attention(bert_self_attention(name), rate=0.2, seed=1, false_fail_rate=1e-9)
    assert not r.passed and r.check(check).passed is False, [(c.name, c.passed) for c in r.checks]


def test_the_cli_audits_transformers(tmp_path):
    """``dropout-stats audit --framework transformers``: no entry point of its own, BERT's two
    attention paths in the attention section and the JSON."""
    from dropout_stats.cli import FRAMEWORK_CHOICES

    if "transformers" not in FRAMEWORK_CHOICES:
        pytest.skip("--framework's choices do not list transformers yet (cli/_parser.py: FRAMEWORK_CHOICES)")
    out = tmp_path / "audit.json"
    r = subprocess.run(
        [sys.executable, "-m", "dropout_stats", "audit", "--framework", "transformers", "--false-fail-rate", "1e-9"]
        + ["--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")),
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "transformers BertSelfAttention [eager]: pass" in r.stdout
    assert "transformers BertSelfAttention [sdpa]: pass" in r.stdout
    data = json.loads(out.read_text())
    assert [a["layer"] for a in data["attention"]] == [
        "transformers BertSelfAttention [eager]",
        "transformers BertSelfAttention [sdpa]",
    ]
    assert data["results"] == [] and "transformers" in data["frameworks"]


# -- timm and torchvision: DropPath, stochastic depth, DropBlock --------------------------------------


def _adapter(framework, name):
    from dropout_stats.adapters import adapters

    return next(a for a in adapters(framework=framework) if a.entry_point == name)


@pytest.mark.statistical(false_fail_rate=6e-9)
def test_drop_path_rows_pass_and_show_their_dropped_share():
    """Every DropPath / stochastic-depth row of timm and torchvision passes verify_drop_path with
    its declared mode (small samples here: the audit runs (32, 16, 14, 14)); the audit's table
    shows the dropped share of samples against the rate."""
    from dropout_stats.adapters import adapters
    from dropout_stats.cli.audit_text import audit_table

    rows = [a for fw in ("timm", "torchvision") for a in adapters(framework=fw) if a.kind == "drop_path"]
    assert len(rows) == 6
    results = []
    for a in rows:
        shape = (4, 4) if dict(a.options)["mode"] == "batch" else (32, 4)
        r = a.verify(rate=0.2, dtype="float32", seed=5, false_fail_rate=1e-9, exact_scale=True, shape=shape)
        assert r.passed, (a.name, [(c.name, c.observed) for c in r.failures])
        assert r.config["api"] == "verify_drop_path" and r.config["mode"] == dict(a.options)["mode"]
        results.append((a, "float32", r))
    text = audit_table(results, 0.2, {"timm": "x", "torchvision": "y"})
    for a, _, r in results:
        k = r.check("keep_fraction").values
        line = next(line for line in text.splitlines() if line.startswith(a.entry_point + " "))
        assert f"drop {1 - k['fraction']:.4f} / 0.2" in line and f"{k['n']:,}" in line
    assert "declared variants" in text and "scale_by_keep=False (kept samples unscaled)" in text
    assert max(len(line) for line in text.splitlines()) <= 100


@pytest.mark.statistical(false_fail_rate=1e-9)
def test_timm_default_dropblock_is_a_documented_variant_that_drops_more_than_its_rate():
    """timm's DropBlock2d (centres anywhere, the gamma of valid centres) passes against its own
    declared variant, and the audit states what it drops: 0.2092 of the positions at drop_prob 0.1
    on 14x14 with block 7 (the exact geometry), beside the rate."""
    from dropout_stats.cli.audit_text import audit_table

    a = _adapter("timm", "timm DropBlock2d")
    r = a.verify(rate=0.1, dtype="float32", seed=2, false_fail_rate=1e-9)
    assert r.passed, [(c.name, c.observed) for c in r.failures]
    finding = next(f for f in r.findings if f.name == "dropped_fraction")
    assert round(finding.value, 4) == 0.2092 and "2.09 x rate" in finding.detail
    assert r.check("channels_shared").passed  # couple_channels=True: one mask per sample
    text = audit_table([(a, "float32", r)], 0.1, {"timm": "x"})
    f = r.check("drop_fraction").values
    assert f"drop {f['fraction']:.4f} / 0.2092" in text
    assert "dropped_fraction: at rate 0.1 the declared geometry" in text and "2.09 x rate" in text
    assert "centres='all'" in text and "block_clip='per_axis'" in text
    assert max(len(line) for line in text.splitlines()) <= 100


def test_timm_default_dropblock_fails_torchvisions_contract():
    """The declaration is what the row is judged by: timm's default DropBlock2d verified against
    verify_dropblock's default contract (torchvision's: valid centres, a mask per channel) fails
    (it drops 0.373 where that geometry gives 0.173, far beyond the test's power)."""
    import dataclasses

    a = _adapter("timm", "timm DropBlock2d")
    torchvision_contract = dataclasses.replace(a, options=(("block_size", 7), ("layer", True)))
    r = torchvision_contract.verify(rate=0.2, dtype="float32", seed=2, false_fail_rate=1e-9)
    assert not r.passed and r.check("drop_fraction").passed is False


@pytest.mark.statistical(false_fail_rate=1e-9)
def test_torchvision_dropblock_in_float16_zeroes_everything():
    """torchvision's DropBlock2d passes in float32; in float16 its kept count (summed in float16)
    overflows above 65,504 kept positions on (32, 16, 14, 14) and every output is zero: the row
    fails with every position dropped."""
    a = _adapter("torchvision", "torchvision DropBlock2d")
    assert a.verify(rate=0.2, dtype="float32", seed=4, false_fail_rate=1e-9).passed
    r = a.verify(rate=0.2, dtype="float16", seed=4, false_fail_rate=1e-9)
    assert not r.passed and r.check("drop_fraction").values["fraction"] == 1.0
