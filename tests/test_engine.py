"""The battery's engine: its size, its one list of families, each family's docstring, and the
false-fail budget each check really receives (read back from the reports, not recomputed with
the runner's own formula)."""

from __future__ import annotations

import ast
import importlib
import pathlib

import numpy as np
import pytest

import dropout_stats as ds
from dropout_stats.battery.checks import FAMILIES

PACKAGE = pathlib.Path(ds.__file__).parent


def _sizes():
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                yield path.relative_to(PACKAGE), node, node.end_lineno - node.lineno + 1


def test_no_class_over_300_lines_and_no_function_over_120():
    big = [(str(p), n.name, size) for p, n, size in _sizes() if size > (300 if isinstance(n, ast.ClassDef) else 120)]
    assert not big, big


def test_every_check_module_is_a_family_in_the_one_list():
    modules = {p.stem for p in (PACKAGE / "battery" / "checks").glob("*.py")} - {"__init__", "_common", "affine"}
    listed = {f.__module__.rsplit(".", 1)[1] for f in FAMILIES}
    assert modules == listed, (modules - listed, listed - modules)


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_each_family_module_opens_with_what_it_detects_and_its_defect(family):
    from dropout_stats.calibration.corpus import FAMILY_DEFECTS

    doc = importlib.import_module(family.__module__).__doc__
    assert "Detects" in doc and "Only" in doc and ("Test" in doc or "Tests" in doc), family.name
    fn = FAMILY_DEFECTS[family.name][0]
    assert f"corpus.{fn.__name__}" in doc, f"{family.name}'s docstring does not name corpus.{fn.__name__}"


def _numpy_dropout(x, rate, seed, noise_shape=None):
    keep = np.random.default_rng(list(seed)).random(noise_shape or x.shape) >= rate
    return np.where(keep, x * x.dtype.type(1 / (1 - rate)), x.dtype.type(0)).astype(x.dtype)


@pytest.mark.statistical(false_fail_rate=1e-9)
@pytest.mark.parametrize("shape,noise_shape", [(None, None), ((16, 4, 4, 32), (16, 1, 1, 32)), ((4096,), None)])
def test_each_check_receives_its_share_and_the_shares_sum_to_the_budget(shape, noise_shape, seed):
    """m statistical entries: the sequential rate test is at alpha / m, the m - 1 others share
    alpha - alpha / m by Holm (the smallest level (alpha - alpha / m) / (m - 1), the largest all
    of it).  Every planned entry is in the report, so no share is planned and left unused."""
    alpha = 1e-9
    r = ds.verify(
        _numpy_dropout,
        rate=0.3,
        shape=shape,
        noise_shape=noise_shape,
        seed=seed % 2**30,
        false_fail_rate=alpha,
        backend="numpy",
    )
    assert r.passed, str(r)
    stat = [c for c in r.checks if c.kind == "statistical" and c.pvalue is not None]
    m = len(stat)
    keep = r.check("keep_fraction")
    assert keep.level == pytest.approx(alpha / m, rel=1e-12, abs=0)
    holm = sorted(c.level for c in stat if c.name != "keep_fraction")
    rest = alpha - alpha / m
    assert holm[0] == pytest.approx(rest / (m - 1), rel=1e-12, abs=0) and holm[-1] <= rest * (1 + 1e-12)
    # the union bound of the two parts is the run's budget
    assert keep.level + rest == pytest.approx(alpha, rel=1e-12, abs=0)
    # no entry without a p-value took a share
    assert not [c.name for c in r.checks if c.kind == "statistical" and c.pvalue is None and c.passed is not None]
