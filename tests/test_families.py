"""Each family of checks has a defect it exists for: the family catches it and the rest of the
battery does not, so the battery would pass that defect without the family
(dropout_stats.calibration.corpus.FAMILY_DEFECTS; each check module's docstring names its defect).

The runs use a false-fail budget of 1e-30: a family that is not built for the defect then fails
only if the defect inflated its statistic's variance enough to reach z ~ 11 (the dependence
defects at most double it: see COLLATERAL), while every defect here is caught by its own family
with the miss chance tests/_power.py computes (or sits at the designed discrepancy, false-pass
rate 1e-9).
"""

from __future__ import annotations

import math

import pytest
import tensorflow as tf
from _power import corpus_miss
from scipy.special import ndtr, ndtri

import dropout_stats as ds
from dropout_stats.battery.checks import FAMILIES
from dropout_stats.calibration.corpus import FAMILY_DEFECTS, STATEFUL, STATELESS

RUN_FALSE_FAIL = 1e-30
FALSE_PASS = 1e-9
# failures a family's defect also causes, by design: a defect that repeats masks is a repeat at long
# range too; wraps_seed1 (seed[1] % 4) ignores seed[1]'s high bits, which seed_correlation's far seeds
# show; count_dispersion compares the two halves of every row (its largest blocks): a rate that
# differs between them (position_dependent) and halves that repeat (tiled_half) are block-count defects
OVERLAP = {
    "call_independence": {"repeats", "seed_correlation"},
    "seeds": {"repeats"},
    "pairs": {"repeats"},  # rows shared in pairs are rows that repeat
    "correlation": {"repeats", "count_dispersion"},
    "homogeneity": {"count_dispersion"},
}
ENTRIES = 18  # statistical entries of a run at most (the budget's m; each run below asserts it)
# another family fails only if its z, at most sqrt(2) x its null value (a defect that makes every
# draw count twice), passes the threshold of one share of the run's budget: computed, not assumed
Z_SHARE = -ndtri(RUN_FALSE_FAIL / ENTRIES / 2)  # one share's two-sided z threshold
COLLATERAL = ENTRIES * 2 * ndtr(-Z_SHARE / math.sqrt(2))
MISS = corpus_miss(RUN_FALSE_FAIL / ENTRIES, FALSE_PASS)  # tests/_power.py
NAMES = {e[1]: e[0] for e in STATELESS + STATEFUL}


def _rate(family):
    """Miss chance of the family's defect (computed) plus the collateral bound."""
    return MISS[NAMES[FAMILY_DEFECTS[family][0]]][1] + COLLATERAL


def test_every_family_has_its_defect():
    assert {f.name for f in FAMILIES} == set(FAMILY_DEFECTS)
    assert COLLATERAL < 1e-14, COLLATERAL
    assert all(_rate(f) < 1e-8 for f in FAMILY_DEFECTS), {f: _rate(f) for f in FAMILY_DEFECTS}


@pytest.mark.parametrize(
    "family", [pytest.param(f.name, marks=pytest.mark.statistical(false_fail_rate=_rate(f.name))) for f in FAMILIES]
)
def test_the_family_alone_catches_its_defect(family, seed):
    fn, stateful, kwargs = FAMILY_DEFECTS[family]
    tf.random.set_seed(seed)
    r = ds.verify(
        fn,
        rate=0.2,
        seed=seed % 2**30,
        stateful=stateful,
        backend="tensorflow",
        false_fail_rate=RUN_FALSE_FAIL,
        false_pass_rate=FALSE_PASS,
        **kwargs,
    )
    own = set(
        next(f for f in FAMILIES if f.name == family).names
        if family != "homogeneity"
        else [c.name for c in r.checks if c.name.startswith("homogeneity")]
    )
    planned = [c for c in r.checks if c.kind == "statistical" and c.passed is not None]
    assert len(planned) <= ENTRIES, [c.name for c in planned]  # the shares MISS was computed for
    failed = {c.name for c in r.failures}
    assert failed & own, f"{family} missed its defect\n{r}"
    assert failed <= own | OVERLAP.get(family, set()), f"{family}'s defect also failed {sorted(failed - own)}\n{r}"
