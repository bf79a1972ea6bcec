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
    "seed_correlation",
    "autocorrelation",
    "cross_correlation",
    "call_independence",
    "repeats",
    "homogeneity_blocks",
    "homogeneity_strided",
    "homogeneity_axis0",
    "homogeneity_axis1",
    "homogeneity_axis2",
    "homogeneity_axis3",
}
# verify_attention's and verify_recurrent's repeated mask rows -> the neighbour entries a repeat
# can make fail too (rows repeated next door, or tiled: every pair counted twice)
_MASK_REPEATS = {
    "mask_repeats": {
        "keep_rate",
        "head_independence",
        "batch_independence",
        "query_independence",
        "key_independence",
        "call_independence",
    },
    **{
        f"{part}_mask_repeats": {
            f"{part}_keep_rate",
            f"{part}_batch_independence",
            f"{part}_call_independence",
            "batch_shape",
            "input_recurrent_independence",
        }
        for part in ("input", "recurrent")
    },
}
# defect shown by a check -> the checks that defect makes fail too (what "follows from it")
FOLLOWS = {
    "contract": {"*"},  # nothing else could be decided
    # verify_dropblock's checks
    "block_union": {"drop_fraction", "drop_positions", "span_independence"},
    "drop_fraction": {"drop_positions"},
    "channels_shared": {"drop_fraction", "drop_positions"},
    "sample_independence": {"drop_fraction", "drop_positions"},
    "channel_independence": {"drop_fraction", "drop_positions", "call_independence"},
    "span_independence": {"drop_fraction", "drop_positions"},
    "output": {"*"},  # all zeros or nothing dropped: every check reads a constant mask
    # verify_drop_path's checks: a sample with mixed fate reads as kept, so every check of the
    # per-sample decisions reads a wrong mask
    "sample_fate": {"*"},
    "batch_fate": {"*"},
    "rate_zero": {"scale", "backward_scale"},
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
    # counts too even or too variable: a fixed count per small block correlates neighbours, a rate
    # drawn per row or block makes positions uneven, a count rounded per row moves small units' share
    "count_dispersion": {
        "neighbour_independence",
        "autocorrelation",
        "homogeneity_blocks",
        "homogeneity_strided",
        "homogeneity_axis0",
        "homogeneity_axis1",
        "homogeneity_axis2",
        "homogeneity_axis3",
        "noise_shape_units",
    },
    # a keep probability that changes during the run moves the counts as a wrong rate does
    "drift": {"keep_fraction", "noise_shape_units", "threshold_flips", "mechanism", "scale", "backward_scale"},
    # a mask shared or repeated shows in every test of structure at once
    # (and moves the counts of the blocks it repeats in)
    **{name: _STRUCTURE | {"mechanism", "count_dispersion"} for name in _STRUCTURE},
    **_MASK_REPEATS,
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
    yield from _shared_mask_rules(f)
    for name, words in (
        ("sample_fate", "elements of one sample are kept and dropped apart: decisions per element, not per sample"),
        ("batch_fate", "samples of one call are kept and dropped apart: one decision per sample, not per call"),
    ):
        if name in f:
            yield name, f"{words} ({f[name].observed})"
    if "noise_shape_consistency" in f:
        yield (
            "noise_shape_consistency",
            ("noise_shape ignored or misapplied: elements of one broadcast unit are kept and dropped apart"),
        )
    yield from _layer_rules(f)
    if "drift" in f:
        yield "drift", f"the keep probability changes during the run: {f['drift'].observed}"
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
        ("input_recurrent_independence", "the recurrent mask depends on the input mask of the same call"),
        (
            "dropout_site",
            "the dropout acts on the attention output or the values, not on the attention probabilities",
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
    if "count_dispersion" in f:  # after the rules of structure: uneven rates and repeats move counts too
        c = f["count_dispersion"]
        yield (
            "count_dispersion",
            "the kept counts of calls, rows or blocks vary unlike independent draws"
            + (f" ({c.observed})" if c.observed else ""),
        )
    yield from _structured_rules(f)


def _shared_mask_rules(f: dict):
    """Masks shared or repeated: rows, neighbours, seeds, calls."""
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
    if "seed_correlation" in f and f["seed_correlation"].values.get("finding"):
        yield "seed_correlation", f["seed_correlation"].values["finding"]  # names the seeds and the displacement
    if "repeats" in f and f["repeats"].values.get("words"):  # the period or the displacement, named
        yield "repeats", f["repeats"].values["words"]
    for name in _MASK_REPEATS:  # verify_attention's and verify_recurrent's: which row is which
        if name in f and f[name].values.get("words"):
            yield name, f[name].values["words"]
    cross = f.get("cross_correlation")
    corr0 = cross.values.get("correlation") if cross is not None else None
    # a keep probability far from the one tested biases the sum at every displacement: with a small
    # correlation and a failed rate test, the rate is the defect (bernoulli(rate) for bernoulli(1 - rate))
    if (
        cross is not None
        and not any(cross.values.get("displacement", [1]))
        and not ("keep_fraction" in f and corr0 is not None and corr0 < 0.5)
    ):
        # two stored masks agree: which calls repeat, and how often, is the repeats check's to say
        corr = cross.values.get("correlation")
        shown = f"correlation {corr:.4g}" if corr is not None else "every pair agrees"
        shared = corr is None or corr > 0.999
        yield (
            "cross_correlation",
            f"successive main calls {'share their mask' if shared else 'draw correlated masks'} ({shown} at "
            "displacement 0)",
        )


def _layer_rules(f: dict):
    """The rules of verify_layer's checks and of Gaussian dropout's."""
    for name, words in (
        ("inference_identity", "the layer (or fn called with training=False) drops or changes x at inference"),
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


def _structured_rules(f: dict):
    """The rules of verify_dropblock's and verify_drop_path's own checks, then any failure by name."""
    for name, words in (
        ("block_union", "dropped regions are not unions of the declared blocks"),
        ("channels_shared", "channels draw different masks, declared shared"),
        ("samples_shared", "samples draw different masks, declared shared"),
        ("normalization", "kept values are not normalized as declared"),
        ("span_independence", "positions one block apart are correlated: blocks larger than declared"),
        ("drop_fraction", "the dropped fraction is not the declared geometry's (gamma, centres or block size)"),
        ("drop_positions", "positions drop at rates the declared geometry does not give"),
        ("rate_zero_identity", "fn drops or changes values at rate 0"),
        ("rate_zero", "rate 0 does not return x unchanged"),
        ("rate_one", "rate 1 does not return zeros"),
        ("sample_homogeneity", "the keep rate depends on the sample's index"),
    ):
        if name in f:
            yield name, words + (f" ({f[name].observed})" if f[name].observed else "")
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
