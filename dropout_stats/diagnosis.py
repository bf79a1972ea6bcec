"""A failed report's most likely defect, in words, the failures that follow from it, and the
failures it does not explain.

Rules are tried in order; the first whose pattern the failures match names the defect (a mask
shared across the batch fails nine checks, the row check first among them, and the rate check
is not the cause).  Each rule reads only the report: check names, statuses and their values.
A failure is listed as following from the defect only when ``FOLLOWS`` says that defect makes
that check fail; every other failure is listed apart, as not explained by it.
"""

from __future__ import annotations

import re

__all__ = ["diagnose", "FOLLOWS"]

_STRUCTURE = {
    "row_independence",
    "neighbour_independence",
    "seed_independence",
    "autocorrelation",
    "cross_correlation",
    "call_independence",
    "homogeneity_blocks",
    "homogeneity_strided",
    "homogeneity_axis0",
    "homogeneity_axis1",
    "homogeneity_axis2",
    "homogeneity_axis3",
}
# defect shown by a check -> the checks that defect makes fail too (what "follows from it")
FOLLOWS = {
    "contract": {"*"},  # nothing else could be decided
    "output": {"*"},  # all zeros or nothing dropped: every check reads a constant mask
    "noise_shape_consistency": {"noise_shape_units", "keep_fraction", "mechanism"},
    "threshold_nesting": {"threshold_flips", "mechanism"},
    # a wrong rate moves every count: the units, the flips, the agreement of independent masks,
    # and a scale matched to the wrong rate
    "keep_fraction": {"noise_shape_units", "threshold_flips", "mechanism", "scale", "backward_scale"},
    "scale": {"backward_scale"},
    # Gaussian dropout: a wrong mean or variance is a wrong normal too
    "gaussian_mean": {"gaussian_variance", "gaussian_shape"},
    "gaussian_variance": {"gaussian_shape"},
    "backward_mask": {"backward_scale"},
    # a mask shared or repeated shows in every test of structure at once
    **{name: _STRUCTURE | {"mechanism"} for name in _STRUCTURE},
}


def _failed(report) -> dict:
    return {c.name: c for c in report.checks if c.passed is False}


def _agreement(check) -> float:
    return float(check.values.get("agreement", 0.0)) if check is not None else 0.0


def _contract(c, cfg) -> str:
    text = c.detail
    if "multiple values for argument 'noise_shape'" in text or re.search(r"takes from \d to 3 positional", text):
        return (
            "a stateful function called with the stateless contract (fn(x, rate, seed, noise_shape)): pass "
            "stateful=True (CLI --stateful)"
        )
    if re.search(r"missing 1 required positional argument", text) and cfg.get("stateful"):
        return "a stateless function called with the stateful contract: drop stateful=True (CLI --stateful)"
    return f"fn broke the calling contract: {text}"


def _rules(f: dict, cfg: dict):
    """(name of the check that shows the defect, the defect in words) for each matching rule."""
    if "contract" in f:
        yield "contract", _contract(f["contract"], cfg)
    k = f.get("keep_fraction")
    if k is not None and k.values.get("n"):
        if k.values.get("kept") == 0:
            yield "output", f"fn returns all zeros: nothing kept in {k.values['n']:,} draws"
        elif k.values.get("kept") == k.values["n"] and k.values.get("expected", 1) < 1:
            yield "output", f"fn drops nothing: every one of {k.values['n']:,} draws kept (is dropout on?)"
    for name, words, who in (
        ("row_independence", "one mask row shared across the batch", "rows"),
        ("neighbour_independence", "neighbouring elements share one draw", "neighbours"),
        (
            "seed_independence",
            "masks from different seeds are the same: a seed component is ignored or the two are mixed into one number",
            "the masks",
        ),
    ):
        if name in f and _agreement(f[name]) > 0.999:
            yield name, f"{words}: {who} agree with probability {_agreement(f[name]):.4g}"
    cross = f.get("cross_correlation")
    if cross is not None and not any(cross.values.get("displacement", [1])):
        yield "cross_correlation", "the same mask on every call: consecutive calls agree at displacement 0"
    if "noise_shape_consistency" in f:
        yield (
            "noise_shape_consistency",
            ("noise_shape ignored or misapplied: elements of one broadcast unit are kept and dropped apart"),
        )
    for name, words in (
        ("inference_identity", "the layer drops or changes x at inference"),
        ("mode_transitions", "after an inference call the layer no longer drops at its rate"),
        ("fit", "inside model.fit (torch: a training step) the layer does not drop at its rate"),
        ("replicas", "replicas of a distributed step draw the same masks"),
        ("instances", "separately made layers draw the same masks"),
        (
            "config_round_trip",
            "the layer's rate, noise shape or seed does not survive get_config/from_config or saving and loading",
        ),
    ):
        if name in f:
            c = f[name]
            yield name, f"{words}: {c.observed}" + (f" ({c.detail})" if c.kind == "exact" and c.detail else "")
    for name, words in (
        ("gaussian_mean", "the Gaussian noise's mean is not 1"),
        ("gaussian_variance", "the Gaussian noise's variance is not rate / (1 - rate)"),
    ):
        if name in f:
            yield name, words + (f" (observed {f[name].observed})" if f[name].observed else "")
    for name, words in (  # a wrong rate or forward scale explains a backward scale, not the reverse
        ("keep_fraction", "the keep rate is wrong"),
        ("scale", "kept values are scaled wrongly"),
    ):
        if name in f:
            yield name, words + (f" ({f[name].observed})" if f[name].observed else "")
    if "backward_mask" in f:
        yield (
            "backward_mask",
            (
                "the backward pass uses another mask than the forward pass"
                + (" (recomputed under " + str(cfg["recompute"]) + ")" if cfg.get("recompute") else "")
            ),
        )
    if "backward_scale" in f:
        yield "backward_scale", "the backward pass scales the gradient differently from the forward pass"
    if "mechanism" in f and not {"threshold_nesting", "threshold_flips", "keep_fraction"} & set(f):
        if "reference='tensorflow-xla'" in f["mechanism"].detail or "reference='tensorflow'" in f["mechanism"].detail:
            yield (
                "mechanism",
                (
                    "the masks are TensorFlow's other stream (XLA against eager): "
                    + f["mechanism"].detail.rsplit("; ", 1)[-1]
                ),
            )
        else:
            yield (
                "mechanism",
                (
                    "an RNG of its own: the masks are a threshold of one uniform (the black-box checks "
                    "pass) but not the reference stream; if that is by design, verify with "
                    "reference=None (CLI --no-reference)"
                ),
            )
    for name, words in (
        (
            "threshold_nesting",
            "the mask is not one uniform compared with the rate: a unit kept "
            "at a higher rate is dropped at a lower one",
        ),
        ("autocorrelation", "the mask repeats within a call"),
        ("cross_correlation", "consecutive calls share draws"),
        ("call_independence", "masks repeat across calls, or positions are stuck"),
        ("seed_independence", "masks from neighbouring seeds are correlated"),
        ("row_independence", "neighbouring rows of the batch are correlated"),
        ("neighbour_independence", "neighbouring elements are correlated"),
        ("value_independence", "the keep rate depends on the value of x"),
    ):
        if name in f:
            c = f[name]
            where = f" ({c.observed})" if c.observed else ""
            yield name, words + where
    homog = sorted(n for n in f if n.startswith("homogeneity"))
    if homog:
        yield homog[0], "the keep rate differs by position"
    for name in f:
        yield name, f"{name} fails"


def diagnose(report) -> tuple[str, list[str], list[str]] | None:
    """(the most likely defect in words, the failed checks that follow from it, the failed checks
    it does not explain) for a failed report; None when it passed."""
    f = _failed(report)
    if not f:
        return None
    shown, words = next(_rules(f, report.config))
    follows = FOLLOWS.get(shown, set())
    rest = [n for n in f if n != shown]
    return (
        words,
        [n for n in rest if "*" in follows or n in follows],
        [n for n in rest if not ("*" in follows or n in follows)],
    )
