"""backward_mask and backward_scale: the gradient of a call uses that call's mask and scale.

Detects a backward pass that uses another mask than the forward pass (a recomputed stateful
dropout under activation checkpointing, an RNG offset not replayed, a backward kernel seeded
apart), a backward without the scale or scaled by the rate, and dropped positions that pass a
gradient.
Only these catch: ``corpus.backward_other_seed`` (the forward is stateless_dropout, the
backward drops with the next seed: every forward check passes).
Tests: exact (no false-fail rate).  Two calls are made with their gradient (fresh seeds
(s + 5, i); the stateful contract's next draws), for a random upstream gradient with no zeros:
backward_mask compares the positions with a non-zero gradient with the kept positions of the
same call's output, bit for bit; when they differ it reports their agreement with its exact
binomial p-values against the same mask (1) and against independent masks (p^2 + q^2).
backward_scale compares each kept position's gradient with the upstream gradient scaled by
one of the backend's formulas (the ones the scale check accepts) or, for alpha dropout, by a.
With ``recompute`` the calls go through the backend's rematerialisation (``tf.recompute_grad``,
``keras.remat``).  A function whose output does not depend differentiably on x gets both
entries as not applicable, with the reason.  Tested in tests/test_backward.py.
"""

from __future__ import annotations

import numpy as np

from ...binomial import rate_test
from ...precision import _scaled_native, scale_bound, within_scale_bound
from ...report import Check
from . import Family

CALLS = 2


class Backward(Family):
    name = "backward"
    names = ("backward_mask", "backward_scale")
    observes = frozenset({"backward"})

    def __init__(self, run):
        super().__init__(run)
        self.calls = []

    def applies(self) -> bool:
        return self.cfg.backward is not None and (self.cfg.backward or self.cfg.recompute)

    def before_main(self) -> None:
        run, cfg = self.run, self.cfg
        if not run.backend.differentiable:
            return
        cot_np = run.kind.make_input(cfg.shape, cfg.dtype, cfg.seed + 7)  # no zeros, both signs
        cot = run.backend.native(cot_np)
        for i in range(CALLS):
            run.call(
                "backward",
                cfg.rate,
                run.seed_pair(i, offset=5),
                cfg.noise_shape,
                index=i,
                fresh=True,
                cotangent=(cot, cot_np),
            )

    def observe(self, call) -> None:
        self.calls.append(call)

    def conclude(self):
        run = self.run
        if not run.backend.differentiable:
            why = f"backend {run.backend.name!r} has no gradients"
            return [Check("backward_mask", None, detail=why), Check("backward_scale", None, detail=why)]
        missing = [c for c in self.calls if c.grad is None]
        if missing:
            c = missing[0]
            why = (
                f"the gradient could not be computed: {c.grad_error}"
                if c.grad_error
                else "no gradient flows from y to x: fn's output does not depend differentiably on x (a "
                "stop_gradient, numpy in the middle, an integer output)"
            )
            return [Check("backward_mask", None, detail=why), Check("backward_scale", None, detail=why)]
        return [self.mask_check(), self.scale_check()]

    def masks(self, call):
        kept = self.run.kept_elements(call.y)
        passing = call.grad != 0  # -0.0 == 0
        return kept, passing

    def mask_check(self) -> Check:
        cfg = self.cfg
        agree = total = wrong_kept = wrong_dropped = 0
        for c in self.calls:
            kept, passing = self.masks(c)
            agree += int(np.count_nonzero(kept == passing))
            wrong_kept += int(np.count_nonzero(kept & ~passing))
            wrong_dropped += int(np.count_nonzero(~kept & passing))
            total += kept.size
        same = agree == total
        how = f" under {cfg.recompute}" if cfg.recompute else ""
        independent = cfg.keep**2 + (1 - cfg.keep) ** 2
        detail = ""
        if not same:
            p_indep = rate_test(agree, total, independent).pvalue
            detail = (
                f"the gradient's mask is not the output's{how}: {wrong_dropped:,} dropped positions pass a "
                f"gradient, {wrong_kept:,} kept ones get none; agreement {agree / total:.6g} (exact p against the "
                f"same mask: 0; against independent masks, p^2 + q^2 = {independent:.6g}: p = {p_indep:.3g})"
            )
        return Check(
            "backward_mask",
            same,
            samples=total,
            values={
                "agreement": agree / total,
                "positions": total,
                "dropped_passing": wrong_dropped,
                "kept_blocked": wrong_kept,
            },
            observed=f"agreement {agree / total:.6g} ({total - agree:,} positions differ)",
            expected="dL/dx != 0 exactly where the same call kept x",
            detail=detail,
            reproduce=cfg.reproduce(f"seeds {[list(c.seed) for c in self.calls if c.seed]}"),
        )

    def scale_passed(self, label: str, size: int) -> Check:
        return Check(
            "backward_scale",
            True,
            samples=int(size),
            observed=f"every kept gradient = upstream {label}",
            expected="the upstream gradient scaled as the forward pass scales x",
            detail=f"{size:,} kept positions of {len(self.calls)} calls",
        )

    def scale_check(self) -> Check:
        cfg, kind = self.cfg, self.run.kind
        boths = [np.logical_and(*self.masks(c)) for c in self.calls]
        size = int(sum(np.count_nonzero(b) for b in boths))
        if size == 0:
            return Check("backward_scale", None, detail="no kept position passes a gradient")
        formulas = kind.gradient_formulas(self.run, cfg.rate)
        uint = self.run.fmt.uint
        for label, _, f in formulas:
            # the common case, decided in the dtype's own arithmetic on whole arrays (equal bits:
            # equal values; positions outside ``both`` are not compared); else in float64 below
            if f is None or f.formula not in ("multiply", "divide") or cfg.dtype == "float64":
                continue
            if not any(
                np.any((_scaled_native(c.cotangent, f).view(uint) != c.grad.view(uint)) & b)
                for c, b in zip(self.calls, boths, strict=True)
            ):
                return self.scale_passed(label, size)
        got = np.concatenate([c.grad[b] for c, b in zip(self.calls, boths, strict=True)]).astype(np.float64)
        up = np.concatenate([c.cotangent[b] for c, b in zip(self.calls, boths, strict=True)])
        results = []
        for label, formula, _ in formulas:
            want = formula(up)
            bad = int(np.count_nonzero(want != got))
            if bad == 0:
                return self.scale_passed(label, got.size)
            results.append((label, bad))
        if not cfg.exact_scale and kind.bounded_scale:  # the contract: the forward's rounding bound
            ok = within_scale_bound(up, got, cfg.rate, cfg.dtype)
            if ok.all():
                b = scale_bound(cfg.rate, cfg.dtype)
                return Check(
                    "backward_scale",
                    True,
                    samples=int(got.size),
                    observed="every kept gradient = upstream / (1 - rate) within the rounding bound",
                    expected=f"the upstream gradient scaled by 1/(1-rate) within {b.units:.3g} u, as the forward",
                    detail=f"{got.size:,} kept positions of {len(self.calls)} calls; not bit-identical to one formula",
                )
            results.append(("/ (1 - rate) within the rounding bound", int(np.count_nonzero(~ok))))
        label, bad = min(results, key=lambda r: r[1])
        ratio = got / up.astype(np.float64)
        how = f" under {cfg.recompute}" if cfg.recompute else ""
        return Check(
            "backward_scale",
            False,
            samples=int(got.size),
            observed=f"{bad:,}/{got.size:,} differ from the closest formula (upstream {label})"
            if cfg.exact_scale or not kind.bounded_scale
            else f"{bad:,}/{got.size:,} kept gradients outside the rounding bound of upstream / (1 - rate)",
            expected="the upstream gradient scaled as the forward pass scales x",
            detail=(
                f"the backward pass{how} scales the upstream gradient by [{ratio.min():.9g}, {ratio.max():.9g}] "
                f"where the forward's scale is {1 / (1 - cfg.rate):.9g}"
            ),
            reproduce=cfg.reproduce(),
        )
