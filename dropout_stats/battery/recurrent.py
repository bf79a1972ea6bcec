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
  for h_{t-1} = 0 exactly where h_{t-1} was dropped (h > 0 everywhere).

The checks, each an entry of the report (the statistical ones share the false-fail budget by
Bonferroni; the exact ones cannot fail a correct layer):

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
more (10,560 pairs at rates 0.2 and 0.4), where Fisher's test at its share (1.4e-7) detects a
correlation of 0.081 between the masks with probability 1 - 1e-3 (normal approximation:
(z_{alpha/2} + z_beta) / sqrt(pairs)); a shared or reused mask has correlation 1.
Corpus: ``corpus.keras_recurrent_defects()``.  Tested in tests/test_recurrent.py.
"""

from __future__ import annotations

import math
import re

import numpy as np

from .._checks import check_count, check_flag, check_open_unit, check_rate
from .._floats import dtype_name, round_to
from ..binomial import rate_test
from ..design import min_num_samples_for_rate_test
from ..report import Check, Finding, Report
from .checks._common import fisher

KINDS = {1: "SimpleRNN", 3: "GRU", 4: "LSTM"}
BLOCK = {1: 0, 3: 2, 4: 2}  # the candidate block: SimpleRNN's only, GRU's h, LSTM's c
CLOSED_GATE = {3: 0, 4: 1}  # GRU's update gate z, LSTM's forget gate f
CLOSED = -1000.0  # sigmoid(-1000) is exactly 0 in every float dtype
BETA = 0.5  # the recurrent probe's bias: h > 0 at every step


def _layout_error(name, shapes, units, in_dim) -> ValueError:
    return ValueError(
        f"layer_cls ({name}) has weights {shapes}, not a Keras recurrent layout for units={units}, "
        f"input_dim={in_dim}: expected kernel ({in_dim}, k*units), recurrent_kernel ({units}, k*units), "
        "bias (k*units,) (GRU with reset_after: (2, 3*units)) with k = 1 (SimpleRNN), 3 (GRU: z, r, h) "
        "or 4 (LSTM: i, f, c, o)"
    )


def layout(weights, units: int, in_dim: int, name: str = "layer_cls") -> int:
    """The number of gate blocks k of a Keras recurrent layer's weights (1, 3 or 4), or a
    ValueError naming what was expected."""
    shapes = [tuple(np.shape(w)) for w in weights]
    if len(shapes) != 3 or len(shapes[0]) != 2 or shapes[0][0] != in_dim or shapes[0][1] % units:
        raise _layout_error(name, shapes, units, in_dim)
    k = shapes[0][1] // units
    bias_ok = shapes[2] == (k * units,) or (k == 3 and shapes[2] == (2, 3 * units))
    if k not in KINDS or shapes[1] != (units, k * units) or not bias_ok:
        raise _layout_error(name, shapes, units, in_dim)
    return k


class RecurrentProbe:
    """The layers, weights and calls behind verify_recurrent's checks."""

    def __init__(self, layer_cls, dropout, recurrent_dropout, dtype, seed, units, steps, batch, mode="eager"):
        self.layer_cls, self.dropout, self.recurrent_dropout = layer_cls, dropout, recurrent_dropout
        self.dtype, self.seed, self.units, self.steps, self.batch = dtype, seed, units, steps, batch
        self.samples, self.mode, self.compiled = 0, mode, {}
        self.layer = self.make(dropout, recurrent_dropout, seed)
        self.framework = _framework_of(self.layer)
        from ..backends import get_backend

        self.backend = get_backend(self.framework)
        if mode == "function" and self.framework != "tensorflow":
            raise ValueError(
                f"mode ('function') runs the layer in tf.function: {_name(self.layer)} runs on "
                f"{self.framework}, not TensorFlow"
            )
        self.build(self.layer, batch)
        self.k = layout(self.layer.get_weights(), units, units, _name(self.layer))
        self.kind = KINDS[self.k]
        rng = np.random.default_rng([seed, 0x12EC])
        # x in [0.5, 2]: never 0, so a zero output means a dropped input
        self.x = np.asarray(round_to(rng.uniform(0.5, 2.0, (batch, steps, units)), dtype)).astype(_np_dtype(dtype))
        self.zeros = np.zeros((batch, steps, units), _np_dtype(dtype))

    # -- layers and weights ---------------------------------------------------------------
    def make(self, dropout, recurrent_dropout, seed):
        # 16-bit: Keras's mixed policy (float32 weights, 16-bit compute), as models use it; a
        # bfloat16 policy cannot even build on TensorFlow (its orthogonal initializer needs a QR)
        policy = f"mixed_{self.dtype}" if self.dtype in ("float16", "bfloat16") else self.dtype
        layer = construct(
            self.layer_cls,
            dict(
                units=self.units,
                dropout=dropout,
                recurrent_dropout=recurrent_dropout,
                return_sequences=True,
                dtype=policy,
            ),
            seed,
            "layer_cls(units=, dropout=, recurrent_dropout=, seed=, return_sequences=, dtype=)",
        )
        if not callable(layer) or not hasattr(layer, "get_weights"):
            raise TypeError(f"layer_cls ({self.layer_cls!r}) returned {type(layer).__name__}, not a Keras layer")
        return layer

    def build(self, layer, batch):
        try:
            layer(self.native(np.zeros((batch, self.steps, self.units), _np_dtype(self.dtype))), training=False)
        except Exception as exc:
            words = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()[0][:200]
            raise TypeError(
                f"{_name(layer)} could not be built and called in {self.dtype}: {type(exc).__name__}: {words}"
            ) from None

    def native(self, a):
        return self.backend.native(np.ascontiguousarray(a))

    def weights(self, probe: str, recurrent_scale: float = 1.0):
        """The weights of the input probe or the recurrent probe (see the module docstring)."""
        u, k = self.units, self.k
        shapes = [np.shape(w) for w in self.layer.get_weights()]
        kernel, rec, bias = (np.zeros(s, np.float64) for s in shapes)
        block = slice(BLOCK[k] * u, (BLOCK[k] + 1) * u)
        eye = np.eye(u)
        if probe == "input":
            kernel[:, block] = eye
        else:
            rec[:, block] = eye * recurrent_scale
            (bias[0] if bias.ndim == 2 else bias)[block] = BETA
        if k in CLOSED_GATE:
            gate = slice(CLOSED_GATE[k] * u, (CLOSED_GATE[k] + 1) * u)
            (bias[0] if bias.ndim == 2 else bias)[gate] = CLOSED
        return [np.asarray(w).astype(_np_dtype(self.variable_dtype(self.layer))) for w in (kernel, rec, bias)]

    @staticmethod
    def variable_dtype(layer):
        return str(getattr(layer.get_weights()[0], "dtype", "float32"))

    def set(self, layer, probe, recurrent_scale=1.0):
        layer.set_weights(self.weights(probe, recurrent_scale))

    def call(self, layer, x, training):
        y = self.runner(layer, training)(self.native(x))
        out = self.backend.to_numpy(y)
        if out.shape != x.shape:
            raise TypeError(
                f"the layer returned shape {list(out.shape)} for input {list(x.shape)}: build it with "
                "return_sequences=True"
            )
        self.samples += out.size
        return np.asarray(out, np.float64)

    def runner(self, layer, training):
        """layer(x, training=...) eagerly, or inside one tf.function per layer and flag (its masks
        then come from the traced graph: the seed generator's state is a variable)."""

        def run(t):
            return layer(t, training=training) if training is not None else layer(t)

        if self.mode == "eager":
            return run
        key = (id(layer), training)
        if key not in self.compiled:
            import tensorflow as tf

            self.compiled[key] = (layer, tf.function(run))  # the layer kept alive: ids stay unique
        return self.compiled[key][1]

    # -- masks ------------------------------------------------------------------------------
    def input_mask(self, layer, x=None):
        x = self.x if x is None else x
        return self.call(layer, x, True) != 0

    def base(self):
        """The recurrent probe's output for h_{t-1} = 0: the same weights, recurrent kernel 0."""
        layer = self.make(0.0, 0.0, self.seed)
        self.build(layer, self.batch)
        layer.set_weights(self.weights("recurrent", 0.0))
        return self.call(layer, self.zeros, False)

    def recurrent_mask(self, layer, base):
        y = self.call(layer, self.zeros, True)
        return (y != base)[:, 1:, :]


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
    dtype = dtype_name(dtype)
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
    level = alpha / len(names)
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
        keep = keep_of(rate)
        first = np.stack([m[:, 0, :] for m in masks])
        checks.append(_keep_check(f"{part}_keep_rate", first, rate, keep, level, reproduce))
        if rate == 0:
            continue
        checks.append(_time_check(f"{part}_time_sharing", masks, per_step, level, part))
        checks.append(
            _fisher_check(
                f"{part}_batch_independence",
                masks[0][0::2, 0],
                masks[0][1::2, 0],
                level,
                "sequences 2i and 2i+1 of one batch",
                reproduce,
            )
        )
        checks.append(
            _fisher_check(f"{part}_call_independence", masks[0][:, 0], masks[1][:, 0], level, "two calls", reproduce)
        )
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
def construct(layer_cls, kwargs: dict, seed, form: str):
    """layer_cls(**kwargs, seed=seed).  Keras 2's SimpleRNN and MultiHeadAttention take no seed:
    they are made without one after ``tf.random.set_seed(seed)``, so a run still replays."""
    try:
        return layer_cls(**kwargs, seed=seed)
    except Exception as exc:
        first = exc
    if "seed" in str(first) and seed is not None:
        import tensorflow as tf

        tf.random.set_seed(seed)
        try:
            return layer_cls(**kwargs)
        except Exception:  # noqa: BLE001 - the first error is the one to report
            pass
    raise TypeError(f"{form} raised {type(first).__name__}: {first}") from None


def _framework_of(layer) -> str:
    module = type(layer).__module__
    for cls in type(layer).__mro__:
        if cls.__module__.startswith("tf_keras"):
            return "tensorflow"
        if cls.__module__.startswith("keras"):
            module = cls.__module__
            break
    if module.startswith("keras"):
        import keras

        return keras.backend.backend()
    return "tensorflow"


def _np_dtype(dtype: str):
    if dtype == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return np.dtype(dtype)


def _name(layer) -> str:
    return type(layer).__qualname__


def _cls_name(layer_cls, layer) -> str:
    """The name a reader knows: the class, or the factory's own name (corpus: "RNN(cell)")."""
    name = getattr(layer_cls, "__qualname__", "") or _name(layer)
    return _name(layer) if "<lambda>" in name else name
