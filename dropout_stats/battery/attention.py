"""verify_attention(layer_cls): the dropout on attention probabilities, read out exactly.

Attention dropout zeroes attention probabilities after the softmax; the output mixes them with
the values, so counting zeros in the output shows nothing.  verify_attention chooses the inputs
and weights so that every probability shows bit for bit:

* queries and keys give scores of exactly 0 (zero queries and keys; for MultiHeadAttention zero
  query and key projections), so the softmax over S = ``keys`` keys is 1/S everywhere (S a power
  of two: 1/S is exact);
* the values are one-hot (value s is e_s), and MultiHeadAttention's value projection is the
  identity for every head and its output projection routes head h to outputs h*S .. h*S + S - 1,
  so output[b, q, h*S + s] is the dropped-or-kept probability of head h, query q, key s.
  With one-hot values the output IS the probability matrix, so dropout on the output would look
  exactly like dropout on the probabilities; a second set of values tells them apart (the site
  probe): value s < S/2 is e_s + e_{s + S/2}, the others 0, so outputs s and s + S/2 are two
  copies of P_s.

The checks, each an entry of the report (statistical ones share the false-fail budget by
Bonferroni, mask_repeats taking 1e-30 of it; exact ones cannot fail a correct layer):

* ``keep_rate``: the kept share of the probabilities against the backend's keep model (exact
  binomial test; 2 calls of batch x heads x queries x keys draws);
* ``head_independence``, ``batch_independence``, ``query_independence``, ``key_independence``:
  heads 0 and 1, sequences 2i and 2i+1, queries 2i and 2i+1, keys 2i and 2i+1 draw independent
  masks (Fisher's exact test): a mask shared by the heads, the batch, the queries or broadcast
  over the keys fails;
* ``call_independence``: two calls draw independent masks (flash-attention's RNG offset that
  never advanced, Dao-AILab/flash-attention#314, fails here);
* ``mask_repeats``: no mask row (call, sequence, head, query: the row over the keys) equals
  another at any distance, across the batch, the heads, the queries and the two calls (the pairs
  above are neighbours only).  Exact comparison in windows of g consecutive rows, along the batch
  and along each sequence's rows, g such that a correct layer repeats a window with chance <=
  1e-30, the entry's level (p = E / repeats, Markov: ``mask_repeats`` module; 14 rows of 16 keys
  at the defaults).  Only this entry fails a mask drawn for 4 queries and tiled over 8, batch
  halves on one mask (micro-batches seeded the same), heads h and h + 2 on one mask, or call 1's
  mask equal to call 0's moved by a sequence; its diagnosis names the rows ("query 4's mask is
  query 0's (4 queries apart) in 224 of 224 (call, sequence, head) rows");
* ``scale`` (exact): every kept probability equals (1/S) times the mask value fl(1/(1-rate)) (or
  another scale a correct implementation may use);
* ``dropout_site`` (exact): through the site probe, outputs s and s + S/2 are dropped together.
  Dropout on the probabilities zeroes P_s, so both copies; dropout on the attention output (or
  on the values) draws each copy's mask apart, and all pairs agree with probability
  (p^2 + q^2)^pairs, the batch of this one call chosen so that it is <= ``false_pass_rate``.  Only
  this check catches dropout moved to the attention output, per element: its masks have the
  rate, scale, independence and backward of a correct layer's (tests/test_attention.py, Keras
  and torch).  Dropout on the values fails here and query_independence (one mask for every
  query); dropout on the scores before the softmax changes nothing at zero scores and fails
  keep_rate;
* ``inference_identity`` (exact): ``training=False`` and ``training`` omitted give every
  probability exactly 1/S (PyTorch's scaled_dot_product_attention that dropped in eval mode,
  pytorch/pytorch#124464, is this class);
* ``backward_mask`` (exact): the gradient reaches an attention probability exactly where the same
  call kept it, read from the sign of dL/dkey (pytorch/pytorch#102038: wrong gradients with
  dropout; a hand-written backward that draws its own mask).

Sizes: the batch is chosen so that the keep test at its share detects a keep probability off by
``discrepancy`` (default: a tenth of min(rate, 1 - rate), absolute) with false-pass rate
``false_pass_rate``; the pair tests then compare at least a quarter of that many pairs.
Layers (Keras 3 on any backend, or Keras 2): ``layer_cls(num_heads=, key_dim=, dropout=, seed=)``
called as ``layer(query, value, key=..., training=...)`` (Keras's MultiHeadAttention), or
``layer_cls(dropout=, seed=)`` called as ``layer([query, value, key], training=...)`` (Keras's
Attention and AdditiveAttention).
PyTorch: ``layer_cls(num_heads=, key_dim=, dropout=, seed=, dtype=)`` returns a torch module
called as ``module(query, key, value)`` on (batch, length, num_heads * key_dim) inputs, its mode
set by ``train()``/``eval()`` (inference: ``eval()``, with autograd on and under ``no_grad``):
``adapters.torch.multihead_attention`` (nn.MultiheadAttention, whose projections are set as for
Keras) and ``adapters.torch.scaled_dot_product_attention`` (F.scaled_dot_product_attention over
the heads' slices; no parameters, so head 0's query is e_0 in the input).
Corpus: ``calibration.corpus.keras_attention_defects()``, ``calibration.corpus_torch.torch_attention_defects()``.
Tested in tests/test_attention.py and tests/test_torch.py.
"""

from __future__ import annotations

import math
import re

import numpy as np

from .._checks import check_count, check_dtype, check_open_unit, check_rate
from ..binomial import rate_test
from ..design import min_num_samples_for_rate_test
from ..report import Check, Finding, Report
from .mask_repeats import mask_repeats, repeat_bound
from .recurrent import _fisher_check
from .recurrent_probe import _cls_name, _framework_of, _np_dtype, construct

CHECKS_STATISTICAL = (
    "keep_rate",
    "head_independence",
    "batch_independence",
    "query_independence",
    "key_independence",
    "call_independence",
)  # and mask_repeats, whose share is repeat_bound(alpha) (mask_repeats module docstring)
AXES = ("call", "sequence", "head", "query")  # the rows of mask_repeats, each over the keys
# its windows: along the batch (repeats over calls, heads, queries), along each sequence's rows
ORDERS = (("call", "head", "query", "sequence"), ("call", "sequence", "head", "query"))


class AttentionProbe:
    """The layer, its weights and inputs, and the read-out masks (batch, heads, queries, keys)."""

    def __init__(self, layer_cls, rate, dtype, seed, heads, keys, queries, batch):
        self.layer_cls, self.rate, self.dtype, self.seed = layer_cls, rate, dtype, seed
        self.heads, self.keys, self.queries, self.batch = heads, keys, queries, batch
        self.samples = 0
        self.layer, self.multi_head = self.make(rate, seed)
        self.is_torch = _is_torch(self.layer)
        self.framework = "torch" if self.is_torch else _framework_of(self.layer)
        from ..backends import get_backend

        self.backend = get_backend(self.framework)
        if self.is_torch:
            import torch

            torch.manual_seed(seed)  # torch modules draw from the global generator: a run replays
        if not self.multi_head:
            self.heads = 1
        self.width = self.heads * keys if self.multi_head else keys
        # torch's attention takes values and keys of the embedding width: value s is e_s in
        # every head's slice; Keras's value projection does that from inputs of width S
        wide = self.width if self.is_torch else keys
        self.query = np.zeros((batch, queries, self.width), _np_dtype(dtype))
        one_hot = np.tile(np.eye(keys), (1, wide // keys))
        self.value = np.broadcast_to(one_hot, (batch, keys, wide)).astype(_np_dtype(dtype))
        # the site probe's values: value s < S/2 is e_s + e_{s + S/2}, the others 0, so outputs s
        # and s + S/2 both read P_s: copies under dropout on P, apart under dropout on the output
        half, first = np.zeros((keys, keys)), np.arange(keys // 2)
        half[first, first] = half[first, first + keys // 2] = 1
        self.copies = np.broadcast_to(np.tile(half, (1, wide // keys)), (batch, keys, wide)).astype(_np_dtype(dtype))
        self.key = np.zeros((batch, keys, wide), _np_dtype(dtype))
        self.prepare(self.layer)

    def make(self, rate, seed):
        """(layer, multi_head): multi-head when layer_cls takes num_heads."""
        import inspect

        policy = (
            self.dtype
            if _is_torch_factory(self.layer_cls)
            else f"mixed_{self.dtype}"
            if self.dtype in ("float16", "bfloat16")
            else self.dtype
        )
        try:
            multi_head = "num_heads" in inspect.signature(self.layer_cls).parameters
        except (TypeError, ValueError):
            multi_head = True
        kwargs = dict(num_heads=self.heads, key_dim=self.keys) if multi_head else {}
        form = (
            "layer_cls(num_heads=, key_dim=, dropout=, seed=, dtype=)"
            if multi_head
            else "layer_cls(dropout=, seed=, dtype=)"
        )
        return construct(self.layer_cls, dict(kwargs, dropout=rate, dtype=policy), seed, form), multi_head

    def native(self, a):
        return self.backend.native(np.ascontiguousarray(a))

    def apply(self, layer, query, value, key, training):
        return self.call(layer, self.native(query), self.native(value), self.native(key), training)

    def call(self, layer, q, v, k, training):
        """One call on native arrays.  torch: ``train()``/``eval()`` are the flag and the module is
        called as ``module(query, key, value)`` (its output, or a tuple led by it)."""
        if self.is_torch:
            if training is not None:
                layer.train(training)
            out = layer(q, k, v, need_weights=False) if _takes(layer, "need_weights") else layer(q, k, v)
            return out[0] if isinstance(out, tuple) else out
        kwargs = {} if training is None else {"training": training}
        if self.multi_head:
            return layer(q, v, key=k, **kwargs)
        return layer([q, v, k], **kwargs)

    def prepare(self, layer):
        """Build the layer and set MultiHeadAttention's weights (zero projections of queries and
        keys, identity values, head h routed to outputs h*S ...)."""
        try:
            self.apply(layer, self.query[:2], self.value[:2], self.key[:2], False)
        except Exception as exc:
            words = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()[0][:200]
            raise TypeError(
                f"{type(layer).__name__} could not be called on query [2, {self.queries}, {self.width}], "
                f"value and key [2, {self.keys}, {self.keys}]: {type(exc).__name__}: {words}"
            ) from None
        if self.is_torch:
            return self.prepare_torch(layer)
        if not self.multi_head:
            return
        s, h = self.keys, self.heads
        shapes = [tuple(np.shape(w)) for w in layer.get_weights()]
        want = [(self.width, h, s), (h, s), (s, h, s), (h, s), (s, h, s), (h, s), (h, s, self.width), (self.width,)]
        if shapes != want:
            raise ValueError(
                f"layer_cls ({type(layer).__name__}) has weights {shapes}, not MultiHeadAttention's "
                f"layout for num_heads={h}, key_dim={s}: expected query, key, value kernels and biases "
                f"{want[:6]} and the output kernel and bias {want[6:]}"
            )
        weights = [np.zeros(w) for w in want]
        # head 0 for the backward check: query projection e_0 (a bias), key projection the
        # identity; with key inputs 0 every score is still exactly 0
        weights[1][0, 0] = 1.0
        weights[2][:, 0, :] = np.eye(s)
        for head in range(h):
            weights[4][:, head, :] = np.eye(s)
            weights[6][head, :, head * s : (head + 1) * s] = np.eye(s)
        dt = str(layer.get_weights()[0].dtype)
        layer.set_weights([w.astype(dt) for w in weights])

    def prepare_torch(self, layer):
        """torch.nn.MultiheadAttention: zero query and key projections (head 0's key projection
        the identity and its query bias e_0, for the backward check), identity value and output
        projections.  A module without parameters (scaled_dot_product_attention over the heads'
        slices) needs nothing; other layouts get a clear error."""
        import torch

        params = dict(layer.named_parameters())
        if not params:
            self.query_e0 = True
            return
        e, s = self.width, self.keys
        want = {
            "in_proj_weight": (3 * e, e),
            "in_proj_bias": (3 * e,),
            "out_proj.weight": (e, e),
            "out_proj.bias": (e,),
        }
        shapes = {k: tuple(v.shape) for k, v in params.items()}
        if shapes != want:
            raise ValueError(
                f"layer_cls ({type(layer).__name__}) has parameters {shapes}, not "
                f"torch.nn.MultiheadAttention's layout for embed_dim={e}: expected {want} (or a module "
                "without parameters)"
            )
        w = np.zeros((3 * e, e))
        w[e : e + s, :s] = np.eye(s)  # head 0's key projection
        w[2 * e :] = np.eye(e)
        bias = np.zeros(3 * e)
        bias[0] = 1.0  # head 0's query: e_0
        values = {"in_proj_weight": w, "in_proj_bias": bias, "out_proj.weight": np.eye(e), "out_proj.bias": np.zeros(e)}
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(torch.from_numpy(values[name]).to(p.dtype))

    query_e0 = False

    def probabilities(self, layer, training=True, batch=None, value=None):
        """Each attention probability as the layer computed it: (batch, heads, queries, keys)
        (with ``value=self.copies``: outputs s and s + S/2 both read P_s, s < S/2)."""
        b = self.batch if batch is None else batch
        value = self.value if value is None else value
        y = self.backend.to_numpy(self.apply(layer, self.query[:b], value[:b], self.key[:b], training))
        y = np.asarray(y, np.float64)
        self.samples += y.size
        return y.reshape(b, self.queries, self.heads, self.keys).transpose(0, 2, 1, 3)


def verify_attention(
    layer_cls,
    *,
    rate,
    dtype="float32",
    seed=0,
    false_fail_rate=1e-6,
    false_pass_rate=1e-3,
    discrepancy=None,
    num_heads=2,
    keys=16,
    queries=8,
    exact_scale=False,
) -> Report:
    """Prove or refute the dropout on a layer's attention probabilities (module docstring: the
    read-out, the checks and their sizes).  ``exact_scale``: as ``verify``'s (kept probabilities
    within the rounding bound of (1/S) / (1 - rate) by default; bit-identical to a backend formula
    with True)."""
    if not callable(layer_cls):
        raise TypeError(f"layer_cls ({layer_cls!r}) must be callable")
    rate = check_rate(rate)
    if rate == 0:
        raise ValueError("rate (0.0) must be > 0: there is no dropout to verify")
    dtype = check_dtype(dtype)
    seed = check_count(seed, "seed")
    alpha = check_open_unit(false_fail_rate, "false_fail_rate")
    beta = check_open_unit(false_pass_rate, "false_pass_rate")
    num_heads = check_count(num_heads, "num_heads", minimum=2)
    keys = check_count(keys, "keys", minimum=4)
    queries = check_count(queries, "queries", minimum=2)
    if keys & (keys - 1):
        raise ValueError(f"keys ({keys}) must be a power of two (1/keys is then exact)")
    if discrepancy is not None:
        d = check_open_unit(discrepancy, "discrepancy")
    else:
        d = float(f"{0.1 * min(rate, 1 - rate):.12g}")  # 0.02, not 0.020000000000000004
    repeats_level = repeat_bound(alpha)  # mask_repeats' share: its chance of failing a correct layer
    level = (alpha - repeats_level) / len(CHECKS_STATISTICAL)  # alpha / 6 in floating point
    need = min_num_samples_for_rate_test(1 - rate, d, false_fail_rate=level, false_pass_rate=beta)
    per_sequence = num_heads * queries * keys
    batch = max(8, 2 * math.ceil(need / (2 * 2 * per_sequence)))

    probe = AttentionProbe(layer_cls, rate, dtype, seed, num_heads, keys, queries, batch)
    model = probe.backend
    keep = float(model.keep_fraction(rate, dtype, model.default_reference))
    name = _cls_name(layer_cls, probe.layer)
    reproduce = f"verify_attention({name}, rate={rate}, dtype={dtype!r}, seed={seed})"
    uniform = 1.0 / keys

    p1 = probe.probabilities(probe.layer)
    p2 = probe.probabilities(probe.layer)
    m1, m2 = p1 != 0, p2 != 0
    checks = []
    kept, n = int(m1.sum() + m2.sum()), int(m1.size + m2.size)
    res = rate_test(kept, n, keep)
    checks.append(
        Check(
            "keep_rate",
            bool(res.pvalue > level),
            "statistical",
            float(res.pvalue),
            level,
            n,
            observed=f"{kept}/{n} = {kept / n:.6g}",
            expected=f"{keep:.10g}",
            values={"kept": kept, "n": n, "fraction": kept / n, "expected": keep},
            detail=f"keeps {kept / n:.6g} where rate {rate} keeps {keep:.6g}: exact binomial test over 2 calls",
            reproduce=reproduce,
        )
    )
    if probe.heads >= 2:
        checks.append(_fisher_check("head_independence", m1[:, 0], m1[:, 1], level, "heads 0 and 1", reproduce))
    else:
        checks.append(Check("head_independence", None, detail="a single head"))
    checks.append(_fisher_check("batch_independence", m1[0::2], m1[1::2], level, "sequences 2i and 2i+1", reproduce))
    checks.append(
        _fisher_check("query_independence", m1[:, :, 0::2], m1[:, :, 1::2], level, "queries 2i and 2i+1", reproduce)
    )
    checks.append(_fisher_check("key_independence", m1[..., 0::2], m1[..., 1::2], level, "keys 2i and 2i+1", reproduce))
    checks.append(_fisher_check("call_independence", m1, m2, level, "two calls", reproduce))
    checks.append(_repeats(m1, m2, [keep, 1 - rate], repeats_level, reproduce))
    checks.append(_scale(probe, p1, m1, rate, uniform, exact_scale))
    checks.append(_guard("dropout_site", lambda: _site(probe, keep, beta)))
    checks.append(_guard("inference_identity", lambda: _inference(probe, uniform)))
    checks.append(_guard("backward_mask", lambda: _backward(probe)))
    findings = [
        Finding(
            "layout",
            f"{name}: {'multi-head' if probe.multi_head else 'single-head'} attention, "
            f"{probe.framework}; {batch} sequences, {probe.heads} heads, {queries} queries, "
            f"{keys} keys",
            name,
        )
    ]
    passed = all(c.passed is not False for c in checks)
    config = {
        "api": "verify_attention",
        "fn": name,
        "rate": rate,
        "dtype": dtype,
        "seed": seed,
        "false_fail_rate": alpha,
        "false_pass_rate": beta,
        "discrepancy": d,
        "num_heads": probe.heads,
        "keys": keys,
        "queries": queries,
        "batch": batch,
        "backend": probe.framework,
    }
    return Report(passed, checks, findings, probe.samples, seed, config)


def _repeats(m1, m2, keeps, level, reproduce) -> Check:
    """mask_repeats on the two calls' masks (the mask_repeats module)."""
    return mask_repeats("mask_repeats", np.stack([m1, m2]), AXES, ORDERS, keeps, level, reproduce=reproduce)


def _scale(probe, p, kept, rate, uniform, exact_scale=False) -> Check:
    from ..precision import apply_scale, scale_bound, within_scale_bound

    got = p[kept]
    tried = []
    for f in probe.backend.scale_formulas(rate, probe.dtype):
        want = float(np.asarray(apply_scale(np.array([uniform]), f)).ravel()[0])
        bad = int(np.count_nonzero(got != want))
        if bad == 0:
            return Check(
                "scale",
                True,
                samples=int(got.size),
                values={"value": want},
                observed=f"every kept probability = {want!r} (1/{probe.keys} scaled, {f.formula})",
                expected="(1/S) / (1 - rate)",
            )
        tried.append((bad, want))
    if not exact_scale and got.size and within_scale_bound(np.full(got.shape, uniform), got, rate, probe.dtype).all():
        b = scale_bound(rate, probe.dtype)
        return Check(
            "scale",
            True,
            samples=int(got.size),
            observed=f"every kept probability = (1/{probe.keys}) / (1 - rate) within the rounding bound",
            expected=f"(1/S) / (1 - rate) within {b.units:.3g} u",
            detail="not bit-identical to one of the backend's formulas (exact_scale=True makes that a failure)",
        )
    bad, want = min(tried)
    values = np.unique(got)[:4]
    return Check(
        "scale",
        False,
        samples=int(got.size),
        observed=f"{bad:,} of {got.size:,} kept probabilities differ "
        f"from {want!r}; values seen {', '.join(repr(float(v)) for v in values)}",
        expected="(1/S) / (1 - rate)",
        detail="kept attention probabilities are not scaled by 1/(1-rate)",
    )


def _site(probe, keep, beta) -> Check:
    """dropout_site (exact): with the copy values, outputs s and s + S/2 are one probability times
    the same value column, so dropout on the probabilities zeroes both or neither; dropout on the
    output (or on the values) draws each apart, and all pairs agree with probability
    (p^2 + q^2)^pairs, sized here to at most ``beta``."""
    half = probe.keys // 2
    per_sequence = probe.heads * probe.queries * half
    need = math.log(beta) / math.log(keep**2 + (1 - keep) ** 2) if 0 < keep < 1 else 1
    b = min(probe.batch, max(8, math.ceil(need / per_sequence)))
    y = probe.probabilities(probe.layer, True, batch=b, value=probe.copies)
    first, second = y[..., :half] != 0, y[..., half:] != 0
    differ, pairs = int(np.count_nonzero(first != second)), int(first.size)
    return Check(
        "dropout_site",
        differ == 0,
        samples=pairs,
        values={"differing": differ, "pairs": pairs, "dropped": int(pairs - np.count_nonzero(first))},
        observed=f"{differ:,} of {pairs:,} output pairs (s, s + S/2) dropped apart",
        expected="outputs s and s + S/2 (equal value columns: both read P_s) dropped together",
        detail=""
        if differ == 0
        else "outputs that read one probability through equal value columns are dropped apart: a dropout acts "
        "on the attention output or on the values, not only on the probabilities",
    )


def _inference(probe, uniform) -> Check:
    results = {}
    if probe.is_torch:  # eval() with autograd on, and under no_grad (torch's fast inference paths)
        import torch

        p = probe.probabilities(probe.layer, False, batch=min(probe.batch, 16))
        results["eval()"] = bool(np.all(p == uniform))
        with torch.no_grad():
            p = probe.probabilities(probe.layer, False, batch=min(probe.batch, 16))
        results["eval() under torch.no_grad()"] = bool(np.all(p == uniform))
        probe.layer.train()
    for label, flag in () if probe.is_torch else (("training=False", False), ("training omitted", None)):
        p = probe.probabilities(probe.layer, flag, batch=min(probe.batch, 16))
        results[label] = bool(np.all(p == uniform))
    bad = [k for k, ok in results.items() if not ok]
    return Check(
        "inference_identity",
        not bad,
        values=results,
        observed="every probability 1/S" if not bad else f"dropped or scaled with {', '.join(bad)}",
        expected=f"every attention probability exactly 1/{probe.keys} at inference",
        detail="" if not bad else "the layer drops attention probabilities at inference",
    )


def _backward(probe) -> Check:
    """Through the softmax, dL/dz_s = P_s (g_s - sum_j P_j g_j) with g_s = dL/dP_s: at uniform P it
    is positive where the dropout's backward passed the gradient to P_s and negative where it
    blocked it (rows with both).  Scores z_s = q . k_s with q = e_0 and keys 0, so dL/dk[s, 0] is
    dL/dz_s times a constant of fixed sign: its sign pattern is the backward's mask, compared with
    the forward's mask of the same call (head 0, one query)."""
    b = probe.backend
    if not getattr(b, "differentiable", False):
        return Check("backward_mask", None, detail=f"backend {b.name!r} has no gradients")
    n, s = min(probe.batch, 64), probe.keys
    query = np.zeros((n, 1, probe.width), probe.query.dtype)
    if not probe.multi_head or probe.query_e0:
        query[..., 0] = 1  # q = e_0 (MultiHeadAttention: its query bias does this)
    cot = np.zeros((n, 1, probe.width), probe.query.dtype)
    cot[..., :s] = 1  # head 0's outputs: g_s = the kept-and-scaled indicator of P_s
    q, v = probe.native(query), probe.native(probe.value[:n])

    def f(k):
        return probe.call(probe.layer, q, v, k, True)

    y, g = b.vjp(f, probe.native(probe.key[:n]), probe.native(cot))
    if g is None or isinstance(g, str):
        return Check("backward_mask", None, detail=f"the gradient could not be computed: {g or 'none'}")
    kept = np.asarray(b.to_numpy(y), np.float64)[:, 0, :s] != 0
    grad = np.asarray(b.to_numpy(g), np.float64)[:, :, 0]
    mixed = (kept.sum(axis=1) > 0) & (kept.sum(axis=1) < s)
    bad = min(int(np.count_nonzero((sign * grad[mixed] > 0) != kept[mixed])) for sign in (1, -1))
    n_cmp = int(kept[mixed].size)
    if n_cmp == 0:
        return Check("backward_mask", None, detail="no row of head 0 with both kept and dropped probabilities")
    return Check(
        "backward_mask",
        bad == 0,
        samples=n_cmp,
        values={"differing": bad, "compared": n_cmp},
        observed=f"{bad} of {n_cmp:,} probabilities where the gradient's mask differs from the output's",
        expected="the gradient reaches P_s exactly where the same call kept P_s",
        detail="" if bad == 0 else "the backward pass uses another attention mask than the forward",
    )


def _is_torch(layer) -> bool:
    """A torch module, not a Keras layer (Keras 3's layers on the torch backend are torch modules too)."""
    from .layer_probe import _is_torch as is_torch

    return is_torch(layer) and not any(c.__module__.startswith(("keras.", "tf_keras.")) for c in type(layer).__mro__)


def _is_torch_factory(layer_cls) -> bool:
    """A factory of torch modules: a torch.nn.Module subclass, or marked ``framework = "torch"``."""
    return getattr(layer_cls, "framework", None) == "torch" or (
        isinstance(layer_cls, type)
        and any(c.__module__ == "torch.nn.modules.module" and c.__name__ == "Module" for c in layer_cls.__mro__)
        and not any(c.__module__.startswith(("keras.", "tf_keras.")) for c in layer_cls.__mro__)
    )


def _takes(layer, name) -> bool:
    import inspect

    try:
        return name in inspect.signature(layer.forward).parameters
    except (TypeError, ValueError, AttributeError):
        return False


def _guard(name, check) -> Check:
    try:
        return check()
    except Exception as exc:  # noqa: BLE001 - the layer's own error is the finding
        words = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
        return Check(name, False, detail=f"the layer raised {type(exc).__name__}: {words[:300]}")


__all__ = ["verify_attention"]
