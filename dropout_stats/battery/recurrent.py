"""verify_recurrent(layer_cls): the dropout inside a Keras recurrent layer, read out exactly.

A recurrent layer's dropout cannot be seen by counting zeros in its output: the input mask
multiplies x_t before the kernel, the recurrent mask multiplies h_{t-1} before the recurrent
kernel, and the gates mix everything.  verify_recurrent sets the layer's own weights (Keras's
layouts: SimpleRNN, GRU with gates z, r, h, LSTM with gates i, f, c, o) so that each mask shows
bit for bit in the output:

* input probe: kernel = identity into the candidate block (SimpleRNN: the only one; GRU: h;
  LSTM: c), recurrent kernel 0, the update gate (GRU z) or forget gate (LSTM f) closed by a bias
  of -1000 (sigmoid exactly 0).  Then y_t is 0 exactly where x_t was dropped (x > 0 everywhere);
* recurrent probe: kernel 0, recurrent kernel = identity into the same block, its bias 0.5,
  the same gate closed, inputs 0.  Then y_t (t >= 1) equals the layer's own constant output
  for h_{t-1} = 0 exactly where h_{t-1} was dropped (h > 0 everywhere);
* cross probe (both masks of one call): kernel and recurrent kernel the identity into the block,
  its bias 0.5, the gate closed, x_0 > 0 and x_t = 0 after.  y_0 = f(x_0 m_in + 0.5) reads the
  input mask at step 0 (h_{-1} = 0), y_t = f(h_{t-1} m_rec + 0.5) the recurrent mask at each
  step t >= 1 (no input, h > 0); a dropped unit gives f(0.5) exactly.

The checks, each an entry of the report (the statistical ones share the false-fail budget by
Bonferroni, each repeats entry taking 1e-30 of it; the exact ones cannot fail a correct layer):

* ``input_keep_rate``, ``recurrent_keep_rate``: each mask's keep rate against its own rate
  (exact binomial test against the backend's keep model; a rate of 0 must keep everything).  A
  recurrent mask drawn at the input rate (keras-team/keras#19395) fails here;
* ``input_time_sharing``, ``recurrent_time_sharing``: the mask over the time steps of one
  sequence.  Keras documents one mask per sequence (Gal and Ghahramani's variational dropout),
  so by default every step must carry step 0's mask exactly; ``per_step=True`` expects a fresh,
  independent mask at every step instead (Fisher's exact test between steps);
* ``input_batch_independence``, ``recurrent_batch_independence``: sequences 2i and 2i+1 of a
  batch draw independent masks (Fisher's exact test); one mask for the whole batch fails;
* ``input_call_independence``, ``recurrent_call_independence``: two calls draw independent masks;
  a mask reused on every call (tensorflow/tensorflow#29391, #32543) fails;
* ``input_mask_repeats``, ``recurrent_mask_repeats``: no (call, sequence) row of the mask (its
  first step read; with ``per_step=True`` each (call, step, sequence) row) equals another at any
  distance, across the batch and the two calls (the pairs above are neighbours only).  Exact
  comparison in windows of g consecutive sequences, g such that a correct layer repeats a window
  with chance <= 1e-30, the entry's level (p = E / repeats, Markov: ``mask_repeats`` module;
  windows of 4 sequences for the input mask at 0.2, 2 for the recurrent mask at 0.4).  Only
  these fail masks drawn for part of the batch and tiled (sequence b's masks are sequence b +
  166's) or moved by a sequence from one call to the next; the diagnosis names the sequences;
* ``input_recurrent_independence``: the two masks of one call are independent (the contract):
  the cross probe's recurrent mask at each step t >= 1 against its input mask (step 0), at every
  cyclic displacement over sequences and units (the input's units reversed or not) and for every
  pair of units; exact tests, Bonferroni over the tables (``recurrent_cross``).  Only this check
  catches a recurrent mask that is the input mask, its complement, the input mask rolled or
  permuted, or both masks drawn from one seed;
* ``batch_shape``: a call with another batch size works and draws a fresh mask
  (keras-team/keras#9031: a mask cached for one batch shape);
* ``input_scale``, ``recurrent_scale`` (exact): kept positions equal the same layer at inference
  fed x * v (recurrent: a recurrent kernel v * I), v the mask value fl(1/(1-rate)) or another
  scale a correct implementation may use;
* ``inference_identity`` (exact): ``training=False`` and ``training`` omitted give, bit for bit,
  what a layer built with both rates 0 and the same weights gives;
* ``backward_input_mask`` (exact): through the input probe the gradient dL/dx_t is non-zero
  exactly where the same call kept x_t.

Sizes: each mask's keep test uses 2 calls of ``batch x units`` draws at step 0 (step 1 for the
recurrent mask), the batch chosen so that an exact binomial test at its budget share detects a
keep probability off by ``discrepancy`` (default: a tenth of min(rate, 1 - rate), absolute) with
false-pass rate ``false_pass_rate``.  The independence tests compare batch x units / 2 pairs or
more (10,624 pairs at rates 0.2 and 0.4), where Fisher's test at its share (1.25e-7) detects a
correlation of 0.081 between the masks with probability 1 - 1e-3 (normal approximation:
(z_{alpha/2} + z_beta) / sqrt(pairs)); a shared or reused mask has correlation 1.
input_recurrent_independence compares batch x units pairs per displacement (21,248 at 0.2 /
0.4) and batch pairs per pair of units, at a share of 1.25e-7 split over 139,776 tables: it
detects a correlation of 0.070 at one displacement or 0.56 between two units (same
approximation); a copy, shift, permutation or complement of the other mask has correlation +-1,
nested masks (one uniform, rates 0.2 and 0.4) 0.61.  Its extra cost is one call.
Corpus: ``corpus.keras_recurrent_defects()``.  Tested in tests/test_recurrent.py.
"""

from __future__ import annotations

import math
import re

import numpy as np

from .._checks import check_count, check_dtype, check_flag, check_open_unit, check_rate
from .._floats import round_to
from ..binomial import rate_test
from ..design import min_num_samples_for_rate_test
from ..report import Check, Finding, Report
from .checks._common import fisher
from .mask_repeats import mask_repeats, repeat_bound
from .recurrent_cross import cross_check
from .recurrent_probe import RecurrentProbe, _cls_name, layout

__all__ = ["verify_recurrent", "layout", "cross_check"]


def verify_recurrent(
    layer_cls,
    *,
    dropout,
    recurrent_dropout,
    dtype="float32",
    seed=0,
    per_step=False,
    false_fail_rate=1e-6,
    false_pass_rate=1e-3,
    discrepancy=None,
    units=64,
    steps=4,
    mode="eager",
) -> Report:
    """Prove or refute the dropout inside a Keras recurrent layer (module docstring: the probes,
    the checks and their sizes).  ``layer_cls(units=, dropout=, recurrent_dropout=, seed=,
    return_sequences=, dtype=)`` builds a Keras SimpleRNN, GRU or LSTM, a subclass of one, or
    ``keras.layers.RNN`` around such a cell (Keras 3 on any backend, or tf_keras).  ``mode``:
    "eager", or "function" (every call of the forward checks inside tf.function; TensorFlow)."""
    if not callable(layer_cls):
        raise TypeError(f"layer_cls ({layer_cls!r}) must be callable")
    r_in = check_rate(dropout, "dropout")
    r_rec = check_rate(recurrent_dropout, "recurrent_dropout")
    dtype = check_dtype(dtype)
    seed = check_count(seed, "seed")
    per_step = check_flag(per_step, "per_step")
    alpha = check_open_unit(false_fail_rate, "false_fail_rate")
    beta = check_open_unit(false_pass_rate, "false_pass_rate")
    units = check_count(units, "units", minimum=2)
    steps = check_count(steps, "steps", minimum=3)
    if discrepancy is not None:
        discrepancy = check_open_unit(discrepancy, "discrepancy")
    if mode not in ("eager", "function"):
        raise ValueError(f"mode ({mode!r}) must be 'eager' or 'function'")

    names = ["batch_shape"]
    for part, rate in (("input", r_in), ("recurrent", r_rec)):
        if rate > 0:
            names += [f"{part}_keep_rate", f"{part}_batch_independence", f"{part}_call_independence"]
            if per_step:
                names.append(f"{part}_time_sharing")
    if r_in > 0 and r_rec > 0:
        names.append("input_recurrent_independence")
    level, repeats_level = _levels(alpha, len(names), sum(r > 0 for r in (r_in, r_rec)))
    rates = [r for r in (r_in, r_rec) if r > 0] or [0.5]
    d = discrepancy or float(f"{0.1 * min(min(r, 1 - r) for r in rates):.12g}")  # 0.02, not 0.020000000000000004
    need = max(min_num_samples_for_rate_test(1 - r, d, false_fail_rate=level, false_pass_rate=beta) for r in rates)
    batch = max(64, 2 * math.ceil(need / (2 * 2 * units)))  # 2 calls of batch x units draws, batch even

    probe = RecurrentProbe(layer_cls, r_in, r_rec, dtype, seed, units, steps, batch, mode)
    checks, findings = [], []
    model = probe.backend
    name = _cls_name(layer_cls, probe.layer)
    reproduce = f"verify_recurrent({name}, dropout={r_in}, recurrent_dropout={r_rec}, dtype={dtype!r}, seed={seed}" + (
        f", mode={mode!r})" if mode != "eager" else ")"
    )

    def keep_of(rate):
        return float(model.keep_fraction(rate, dtype, model.default_reference)) if rate > 0 else 1.0

    # the input mask: 2 calls of the input probe
    layer = probe.layer
    probe.set(layer, "input")
    in_masks = [probe.input_mask(layer) for _ in range(2)]
    # the recurrent mask: a second layer from the same class (its own seed stream)
    rec_layer = probe.make(r_in, r_rec, seed + 1)
    probe.build(rec_layer, batch)
    probe.set(rec_layer, "recurrent")
    base = probe.base()
    rec_masks = [probe.recurrent_mask(rec_layer, base) for _ in range(2)]

    for part, rate, masks in (("input", r_in, in_masks), ("recurrent", r_rec, rec_masks)):
        checks += _mask_checks(part, rate, masks, keep_of(rate), per_step, level, reproduce, repeats_level)
        if rate > 0:
            findings.append(Finding("time_semantics", f"{part} mask: " + _semantics(masks), _semantics(masks)))
    checks.append(
        _guard(
            "batch_shape",
            lambda: _batch_shape(
                probe, layer, in_masks[1], level, r_in, r_rec, rec_layer, base, rec_masks[1], reproduce
            ),
        )
    )
    checks.append(_guard("input_scale", lambda: _input_scale(probe, layer, r_in)))
    checks.append(_guard("recurrent_scale", lambda: _recurrent_scale(probe, rec_layer, r_rec, base)))
    checks.append(_guard("inference_identity", lambda: _inference_identity(probe, layer, rec_layer)))
    checks.append(_guard("backward_input_mask", lambda: _backward(probe, layer, r_in)))
    cross = _cross(probe, rec_layer, base, level, reproduce, r_in > 0 and r_rec > 0)  # last: others as they were
    checks.insert([c.name for c in checks].index("batch_shape"), cross)
    blocks = f"{probe.k} gate block" + ("s" if probe.k > 1 else "")
    findings.insert(
        0,
        Finding(
            "layout",
            f"{name}: {probe.kind} layout ({blocks}), "
            f"{probe.framework}; {batch} sequences of {steps} steps x {units} units",
            probe.kind,
        ),
    )
    passed = all(c.passed is not False for c in checks)
    config = {
        "api": "verify_recurrent",
        "fn": name,
        "dropout": r_in,
        "recurrent_dropout": r_rec,
        "dtype": dtype,
        "seed": seed,
        "per_step": per_step,
        "false_fail_rate": alpha,
        "false_pass_rate": beta,
        "discrepancy": d,
        "units": units,
        "steps": steps,
        "batch": batch,
        "backend": probe.framework,
        "mode": mode,
    }
    return Report(passed, checks, findings, probe.samples, seed, config)


# -- the checks ---------------------------------------------------------------------------------
def _keep_check(name, masks, rate, keep, level, reproduce) -> Check:
    kept, n = int(masks.sum()), int(masks.size)
    if rate == 0:
        return Check(
            name,
            kept == n,
            samples=n,
            observed=f"{kept}/{n} kept",
            expected="every unit kept (rate 0)",
            values={"kept": kept, "n": n},
            detail="" if kept == n else f"rate 0 but {n - kept} positions dropped",
            reproduce=reproduce,
        )
    res = rate_test(kept, n, keep)
    return Check(
        name,
        bool(res.pvalue > level),
        "statistical",
        float(res.pvalue),
        level,
        n,
        observed=f"{kept}/{n} = {kept / n:.6g}",
        expected=f"{keep:.10g}",
        values={"kept": kept, "n": n, "fraction": kept / n, "expected": keep},
        detail=f"keeps {kept / n:.6g} where rate {rate} keeps {keep:.6g}: exact binomial test over 2 calls "
        f"of batch x units draws",
        reproduce=reproduce,
    )


def _time_check(name, masks, per_step, level, part) -> Check:
    m = masks[0]
    if not per_step:
        differ = int(sum(np.count_nonzero(m[:, t] != m[:, 0]) for t in range(1, m.shape[1])))
        n = m[:, 1:].size
        return Check(
            name,
            differ == 0,
            samples=n,
            values={"differing": differ, "compared": n},
            observed=f"{differ} of {n:,} positions differ from step {0 if part == 'input' else 1}",
            expected="one mask per sequence: every time step carries the same mask",
            detail=""
            if differ == 0
            else f"the {part} mask changes between time steps of one sequence "
            "(pass per_step=True if the layer documents a fresh mask per step)",
        )
    p, agree = fisher(_table(m[:, 0], m[:, 1]))
    return Check(
        name,
        bool(p > level),
        "statistical",
        p,
        level,
        int(m[:, 0].size),
        observed=f"agreement between steps {agree:.6g}",
        expected="independent masks at each step",
        values={"agreement": agree},
    )


def _table(a, b):
    a, b = a.ravel(), b.ravel()
    return [int(np.count_nonzero(a & b)), int(a.sum()), int(b.sum()), int(a.size)]


def _fisher_check(name, a, b, level, what, reproduce) -> Check:
    table = _table(a, b)
    p, agree = fisher(table)
    both, na, nb, n = table
    return Check(
        name,
        bool(p > level),
        "statistical",
        p,
        level,
        n,
        values={"agreement": agree, "kept_given_partner_kept": both / na if na else float("nan")},
        observed=f"P(kept | partner kept) = {both / na if na else float('nan'):.6g}, agreement {agree:.6g}",
        expected=f"P(kept) = {nb / n:.6g} (independent)",
        detail=f"Fisher's exact test between the masks of {what}",
        reproduce=reproduce,
    )


def _semantics(masks) -> str:
    m = masks[0]
    same = all(np.array_equal(m[:, t], m[:, 0]) for t in range(1, m.shape[1]))
    return (
        f"one per sequence, shared by its {m.shape[1]} time steps read"
        if same
        else f"changes between the {m.shape[1]} time steps read"
    )


def _batch_shape(probe, layer, last, level, r_in, r_rec, rec_layer, base, rec_last, reproduce) -> Check:
    """A call with an odd batch size below the first, then the first size again."""
    small = probe.batch // 2 + 1
    ys = probe.call(layer, probe.x[:small], True)
    again = probe.input_mask(layer)
    if r_in == 0 and r_rec == 0:
        ok = bool(np.all(ys != 0)) and bool(np.all(again))
        return Check(
            "batch_shape",
            ok,
            samples=int(ys.size),
            observed="other batch sizes run",
            expected="the layer runs at any batch size",
        )
    if r_in > 0:
        a, b = (ys != 0)[:, 0], last[:small, 0]
    else:
        rec_small = probe.call(rec_layer, probe.zeros[:small], True)
        a, b = (rec_small != base[:small])[:, 1], rec_last[:small, 0]
    p, agree = fisher(_table(a, b))
    return Check(
        "batch_shape",
        bool(p > level),
        "statistical",
        p,
        level,
        int(a.size),
        observed=f"batch {small}: agreement with the previous call {agree:.6g}",
        expected="a fresh mask at another batch size",
        values={"agreement": agree, "batch": small},
        detail=f"a call with batch {small} after batch {probe.batch}, then batch {probe.batch} again",
        reproduce=reproduce,
    )


def _levels(alpha: float, entries: int, repeats: int) -> tuple[float, float]:
    """(level of each entry, level of each {part}_mask_repeats): the repeats entries take
    repeat_bound(alpha) each, their chance of failing a correct layer (mask_repeats module
    docstring); the other entries share the rest (alpha / m in floating point)."""
    repeats_level = repeat_bound(alpha)
    return (alpha - repeats_level * repeats) / entries, repeats_level


def _mask_checks(part, rate, masks, keep, per_step, level, reproduce, repeats_level) -> list:
    """One path's masks (input or recurrent, two calls): its keep rate at the first step, and
    (rate > 0) its sharing across time steps, its independence across sequences and calls, and
    no mask row repeated at any distance (``{part}_mask_repeats``: each (call, sequence) row, or
    with ``per_step`` each (call, step, sequence) row, at level ``repeats_level``)."""
    first = np.stack([m[:, 0, :] for m in masks])
    checks = [_keep_check(f"{part}_keep_rate", first, rate, keep, level, reproduce)]
    if rate == 0:
        return checks
    return checks + [
        _time_check(f"{part}_time_sharing", masks, per_step, level, part),
        _fisher_check(
            f"{part}_batch_independence",
            masks[0][0::2, 0],
            masks[0][1::2, 0],
            level,
            "sequences 2i and 2i+1 of one batch",
            reproduce,
        ),
        _fisher_check(f"{part}_call_independence", masks[0][:, 0], masks[1][:, 0], level, "two calls", reproduce),
        _repeats_check(part, rate, masks, keep, per_step, repeats_level, reproduce),
    ]


def _repeats_check(part, rate, masks, keep, per_step, level, reproduce) -> Check:
    """{part}_mask_repeats: the rows (call, sequence) of the mask (one per sequence: its first
    step read), or (call, step, sequence) with ``per_step``, compared exactly at any distance,
    windows along the batch (mask_repeats module docstring)."""
    if per_step:
        rows = np.stack([m.transpose(1, 0, 2) for m in masks])  # (call, step, sequence, units)
        axes = ("call", "step", "sequence")
    else:
        rows = np.stack([m[:, 0] for m in masks])  # (call, sequence, units)
        axes = ("call", "sequence")
    first = {"step": 1 if part == "recurrent" else 0}  # the recurrent mask is read from step 1 on
    return mask_repeats(
        f"{part}_mask_repeats", rows, axes, (axes,), [keep, 1 - rate], level, f"{part} mask", reproduce, first
    )


def _cross(probe, layer, base, level, reproduce, both) -> Check:
    """input_recurrent_independence on one call of the cross probe (``layer`` draws both masks)."""
    if not both:
        return Check("input_recurrent_independence", None, detail="a rate of 0: one of the two masks is not drawn")

    def run():
        probe.set(layer, "cross")
        return cross_check(*probe.cross_masks(layer, base), level, reproduce)

    return _guard("input_recurrent_independence", run)


def _mask_values(probe, rate):
    """The values a kept unit's mask may hold: each scale formula applied to 1."""
    vals = []
    for f in probe.backend.scale_formulas(rate, probe.dtype):
        from ..precision import apply_scale

        v = float(np.asarray(apply_scale(np.ones(1), f)).ravel()[0])
        vals.append((f.formula, v))
    return vals


def _input_scale(probe, layer, rate) -> Check:
    if rate == 0:
        return Check("input_scale", None, detail="rate 0: nothing is scaled")
    y = probe.call(layer, probe.x, True)
    kept = y != 0
    ref = probe.make(0.0, 0.0, probe.seed)
    probe.build(ref, probe.batch)
    probe.set(ref, "input")
    for label, v in _mask_values(probe, rate):
        xs = round_to(probe.x.astype(np.float64) * v, probe.dtype).astype(probe.x.dtype)
        want = probe.call(ref, xs, False)
        bad = int(np.count_nonzero(want[kept] != y[kept]))
        if bad == 0:
            return Check(
                "input_scale",
                True,
                samples=int(kept.sum()),
                values={"factor": v},
                observed=f"every kept input = x * {v!r} ({label})",
                expected="x * fl(1/(1-rate))",
            )
    return Check(
        "input_scale",
        False,
        samples=int(kept.sum()),
        observed=f"{bad:,} of {int(kept.sum()):,} kept positions differ from x * {v!r}",
        expected="kept inputs scaled by 1/(1-rate)",
        detail="the kept inputs are not x times the mask value a correct layer uses",
    )


def _recurrent_scale(probe, layer, rate, base) -> Check:
    if rate == 0:
        return Check("recurrent_scale", None, detail="rate 0: nothing is scaled")
    y = probe.call(layer, probe.zeros, True)
    kept = (y != base)[:, 1]
    ref = probe.make(0.0, 0.0, probe.seed)
    probe.build(ref, probe.batch)
    for label, v in _mask_values(probe, rate):
        ref.set_weights(probe.weights("recurrent", v))
        want = probe.call(ref, probe.zeros, False)[:, 1]
        bad = int(np.count_nonzero(want[kept] != y[:, 1][kept]))
        if bad == 0:
            return Check(
                "recurrent_scale",
                True,
                samples=int(kept.sum()),
                values={"factor": v},
                observed=f"every kept state = h * {v!r} ({label})",
                expected="h * fl(1/(1-rate))",
            )
    return Check(
        "recurrent_scale",
        False,
        samples=int(kept.sum()),
        observed=f"{bad:,} of {int(kept.sum()):,} kept states at step 1 differ from h * {v!r}",
        expected="kept states scaled by 1/(1-rate)",
        detail="the kept states are not h times the mask value a correct layer uses",
    )


def _inference_identity(probe, layer, rec_layer) -> Check:
    results = {}
    for part, lay, x in (("input", layer, probe.x), ("recurrent", rec_layer, probe.zeros)):
        ref = probe.make(0.0, 0.0, probe.seed)
        probe.build(ref, probe.batch)
        probe.set(ref, part)
        want = probe.call(ref, x, False)
        for flag in (False, None):
            got = probe.call(lay, x, flag)
            results[f"{part} probe, training={flag}" if flag is False else f"{part} probe, training omitted"] = (
                np.array_equal(got, want)
            )
    bad = [k for k, ok in results.items() if not ok]
    return Check(
        "inference_identity",
        not bad,
        samples=len(results) * probe.x.size,
        values={k: bool(v) for k, v in results.items()},
        observed="equal to the layer without dropout" if not bad else f"differs: {', '.join(bad)}",
        expected="at inference, the output of the same weights with both rates 0, bit for bit",
        detail="" if not bad else "the layer drops or scales at inference",
    )


def _backward(probe, layer, rate) -> Check:
    if rate == 0:
        return Check("backward_input_mask", None, detail="rate 0")
    b = probe.backend
    if not getattr(b, "differentiable", False):
        return Check("backward_input_mask", None, detail=f"backend {b.name!r} has no gradients")
    y, g = b.vjp(lambda t: layer(t, training=True), probe.native(probe.x), probe.native(np.ones_like(probe.x)))
    if g is None or isinstance(g, str):
        return Check("backward_input_mask", None, detail=f"the gradient could not be computed: {g or 'none'}")
    y, g = np.asarray(b.to_numpy(y), np.float64), np.asarray(b.to_numpy(g), np.float64)
    kept = y != 0
    bad = int(np.count_nonzero(kept != (g != 0)))
    return Check(
        "backward_input_mask",
        bad == 0,
        samples=int(y.size),
        values={"differing": bad},
        observed=f"{bad} of {y.size:,} positions where the gradient's mask differs from the output's",
        expected="dL/dx_t != 0 exactly where the same call kept x_t",
        detail="" if bad == 0 else "the backward pass uses another input mask than the forward",
    )


def _guard(name, check) -> Check:
    try:
        return check()
    except Exception as exc:  # noqa: BLE001 - the layer's own error is the finding
        words = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()  # Keras's bold markers
        return Check(name, False, detail=f"the layer raised {type(exc).__name__}: {words[:300]}")


# -- helpers ------------------------------------------------------------------------------------
