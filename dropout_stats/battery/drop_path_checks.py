"""The checks verify_drop_path adds to the battery, and the kind of dropout it runs.

DropPath (stochastic depth) is dropout with one draw per sample: noise shape (N, 1, ..., 1), or
(1, ..., 1) for ``mode="batch"`` (one draw per call).  The battery runs on those units; these
families replace the ones that assume many units per call:

* ``sample_fate`` / ``batch_fate`` (exact): every element of a sample (mode "batch": of the
  call) kept or dropped together, on every call at every rate.  Only it catches per-element
  decisions, and per-sample decisions where one per call is declared.
* ``scale`` with ``scale_by_keep=False`` (exact): every kept value is x bit for bit (the
  battery's own scale check, x / (1 - rate) within the rounding bound, runs otherwise).
* ``sample_homogeneity``: one keep rate at every sample index.  Fisher's exact tests of the
  kept counts over the calls (exact given the margins under i.i.d. draws, whatever the keep
  probability): the first half of the batch against the second, even indices against odd, and
  each index against the others (Bonferroni over the indices); weighted Bonferroni over the
  three; in the run's Holm family.  Only it catches a rate that depends on the sample's index
  (right on average: even and odd indices at +-0.1, halves of the batch, a ramp).
* ``call_independence`` (mode "batch"): the sequence of the calls' decisions is uncorrelated at
  every lag from 1 to half the number of calls.  The autocorrelation of that sequence by FFT,
  the most extreme lag's pairs summed exactly and bounded by Freedman's inequality with
  Bonferroni over the lags (``checks.correlation``'s exact method, at any number of calls).  Only it catches a decision
  reused by the next call (a cached draw, a counter-based seed that repeats).
* ``rate_zero``, ``rate_one``, ``inference_identity`` (exact): x bit for bit at rate 0, every
  element 0 at rate 1 (NaN is not 0), x bit for bit when a function that takes ``training`` is
  called with ``training=False``.  Only they catch rate 0 not the identity, a NaN or a partial
  drop at rate 1 (0 / 0), dropping at inference.

The rate sweep (calls at rate / 2 and (1 + rate) / 2 on the input's first samples) feeds the
scale and fate checks at those rates: a scale right at one rate only fails.
Tested in tests/test_drop_path.py against tests/structured_corpus_drop_path.py.
"""

from __future__ import annotations

import inspect
import math

import numpy as np

from .._exact import fisher_two_sided_pvalue
from ..report import Check
from .checks import Family
from .checks.backward import Backward
from .checks.correlation import (
    Correlation,
    kept_count_bound,
    lag_pvalue,
    linear_sum,
    pair_correlation,
)
from .checks.keep_fraction import KeepFraction
from .checks.pairs import Pairs
from .checks.scale import Scale
from .checks.seeds import Seeds
from .kinds import Dropout
from .runner import ContractError, read_output

SWEEP_OFFSET = 6  # seed[0] offset of the rate sweep's and the exact rates' calls (the battery uses 0 to 5)


class SampleFate(Family):
    """Every element of a unit (a sample; mode "batch": the call) kept or dropped together."""

    name = "fate"
    observes = frozenset({"main", "seed_other", "seed_repeat", "threshold", "backward"})

    def __init__(self, run):
        super().__init__(run)
        self.batch = run.kind.mode == "batch"
        self.names = ("batch_fate",) if self.batch else ("sample_fate",)
        self.mixed, self.units, self.calls, self.first_bad = 0, 0, 0, None

    def observe(self, call) -> None:
        self.calls += 1
        self.units += call.mask.size
        if call.inconsistent:
            self.mixed += call.inconsistent
            if self.first_bad is None:
                self.first_bad = (call.purpose, call.rate, call.seed)

    def conclude(self):
        what = "call" if self.batch else "sample"
        detail = ""
        if self.mixed:
            purpose, rate, seed = self.first_bad
            detail = (
                f"{self.mixed:,} of {self.units:,} {what}s have kept and dropped elements (first: a {purpose} call at "
                f"rate {rate}{'' if seed is None else f', seed {list(seed)}'}): decisions are not one per {what}"
            )
        return [
            Check(
                self.names[0],
                self.mixed == 0,
                samples=self.units,
                values={"mixed": self.mixed, "units": self.units},
                observed=f"{self.mixed:,} of {self.units:,} {what}s with mixed fate over {self.calls:,} calls",
                expected=f"every element of a {what} kept or dropped together",
                detail=detail,
                reproduce=self.cfg.reproduce(),
            )
        ]


class Unscaled(Family):
    """scale_by_keep=False: kept values are x, bit for bit, at every rate."""

    name = "scale"
    names = ("scale",)
    observes = frozenset({"main", "seed_other", "seed_repeat", "threshold", "backward"})

    def __init__(self, run):
        super().__init__(run)
        self.values, self.bad, self.calls, self.ratio = 0, 0, 0, [math.inf, -math.inf]

    def observe(self, call) -> None:
        uint = self.run.fmt.uint
        differ = (call.y.view(uint) != call.x_np.view(uint)) & self.run.kept_elements(call.y)
        self.calls += 1
        self.values += call.kept_elements
        bad = int(np.count_nonzero(differ))
        if bad:
            self.bad += bad
            r = call.y[differ].astype(np.float64) / call.x_np[differ].astype(np.float64)
            self.ratio = [min(self.ratio[0], float(r.min())), max(self.ratio[1], float(r.max()))]

    def conclude(self):
        ok = self.bad == 0
        return [
            Check(
                "scale",
                ok,
                samples=self.values,
                values={"differ": self.bad, "kept": self.values},
                observed="every kept value = x" if ok else f"{self.bad:,} of {self.values:,} kept values differ from x",
                expected="kept values unscaled (scale_by_keep=False): x bit for bit",
                detail=f"{self.values:,} kept values of {self.calls} calls"
                if ok
                else f"kept values are x times [{self.ratio[0]:.9g}, {self.ratio[1]:.9g}]",
                reproduce=self.cfg.reproduce(),
            )
        ]


class SampleHomogeneity(Family):
    """One keep rate at every sample index: Fisher's exact tests of the first half of the batch
    against the second, the even indices against the odd, and each index against the others
    (Bonferroni over the indices); weighted Bonferroni over the three, a third of the level each."""

    name = "sample_homogeneity"
    names = ("sample_homogeneity",)
    needs = frozenset({"per_position"})
    observes = frozenset()

    def applies(self) -> bool:
        return self.run.units >= 2

    def statistical(self):
        return ["sample_homogeneity"]

    def conclude(self):
        counts = self.run.per_position.ravel().astype(np.int64)
        calls, units = self.run.main_calls, counts.size
        total = int(counts.sum())
        share = total / (calls * units)
        tests = [
            _split("the first half of the batch against the second", counts, np.arange(units) < units // 2, calls),
            _split("even sample indices against odd ones", counts, np.arange(units) % 2 == 0, calls),
        ]
        for j, k in enumerate(counts.tolist()):
            p = units * fisher_two_sided_pvalue([[k, calls - k], [total - k, calls * (units - 1) - total + k]])
            tests.append((p, f"sample {j}: {k}/{calls} calls kept = {k / calls:.6g}", j))
        p, observed, j = min(tests, key=lambda t: t[0])
        delta = self.detectable(share, calls, units)
        return [
            Check(
                "sample_homogeneity",
                True,
                "statistical",
                min(1.0, 3 * p),
                None,
                calls * units,
                values={"index": j, "calls": calls, "detectable": delta},
                observed=observed,
                expected=f"{share:.6g} at every sample index",
                detail=f"Fisher exact over {calls} calls: halves of the batch, even against odd indices, and each "
                f"of {units} indices against the others (Bonferroni); the smallest p, times 3; one index off by "
                f"about {delta:.2g} fails with probability {1 - self.cfg.beta:g} (normal approximation of the "
                "power, at the smallest Holm level)",
                reproduce=self.cfg.reproduce(),
            )
        ]

    def detectable(self, share: float, calls: int, units: int) -> float:
        """The keep error of one index this test detects with probability 1 - beta at the run's
        smallest Holm level, alpha / m: a normal approximation, for reading, not for the verdict."""
        from scipy.stats import norm

        level = self.run.alpha_seq or self.cfg.alpha
        z = norm.isf(level / (6 * units)) + norm.isf(self.cfg.beta)
        pq = max(share * (1 - share), 1e-12)
        return float(z * math.sqrt(pq / calls * (1 + 1 / max(units - 1, 1))))


def _split(what, counts, first, calls):
    """(p, observed, None): Fisher exact of the kept counts of two groups of sample indices."""
    k1, k2 = int(counts[first].sum()), int(counts[~first].sum())
    n1, n2 = int(first.sum()) * calls, int((~first).sum()) * calls
    p = fisher_two_sided_pvalue([[k1, n1 - k1], [k2, n2 - k2]]) if n1 and n2 else 1.0
    return p, f"{what}: kept {k1 / max(n1, 1):.6g} and {k2 / max(n2, 1):.6g}", None


class DecisionSequence(Family):
    """Mode "batch": the calls' decisions, in order, uncorrelated at every lag."""

    name = "decision_sequence"
    names = ("call_independence",)

    def __init__(self, run):
        super().__init__(run)
        self.bits = []

    def statistical(self):
        return ["call_independence"]

    def observe(self, call) -> None:
        self.bits.append(bool(call.mask.ravel()[0]))

    def conclude(self):
        seq = np.array(self.bits, dtype=bool)
        n, p = seq.size, self.cfg.keep
        if n < 3:
            return [Check("call_independence", None, "statistical", detail=f"{n} calls: no lag to test")]
        c = seq.astype(np.float64) - p
        spectrum = np.fft.rfft(c, 2 * n)  # zero-padded: the linear (not circular) autocorrelation
        tested = n // 2  # lags 1 .. n // 2: each has at least n / 2 pairs of calls
        auto = np.fft.irfft(spectrum * np.conj(spectrum), 2 * n)[1 : tested + 1]
        z = np.abs(auto) / np.sqrt(n - np.arange(1, tested + 1))
        lag = int(np.argmax(z)) + 1
        masks = [seq]
        s, npairs = linear_sum(masks, [lag], p, True)
        v = min(kept_count_bound(masks, p), p * (1 - p) * max(p, 1 - p) ** 2 * npairs)
        pv = lag_pvalue(s, v, p, tested)
        phi = pair_correlation(masks, [lag], True)
        shown = f"{phi:.4g}" if phi is not None else "undefined (every decision the same)"
        return [
            Check(
                "call_independence",
                True,
                "statistical",
                pv,
                None,
                n,
                values={"lag": lag, "correlation": phi, "calls": n},
                observed=f"lag {lag} calls: correlation {shown} over {npairs:,} pairs of calls",
                expected=f"0 at every lag from 1 to {tested} calls",
                detail=f"autocorrelation of the {n:,} main calls' decisions by FFT; the most extreme lag's pairs "
                "summed exactly, Freedman's bound, Bonferroni over the lags",
                reproduce=self.cfg.reproduce(),
            )
        ]


class ExactRates(Family):
    """rate_zero, rate_one, inference_identity; and the rate sweep's calls."""

    name = "exact_rates"
    names = ("rate_zero", "rate_one", "inference_identity")
    observes = frozenset()

    def before_main(self) -> None:
        run, cfg = self.run, self.cfg
        x, x_np, ns = run.small_input()
        for i, rate in enumerate(sorted({cfg.rate / 2, (1 + cfg.rate) / 2} - {cfg.rate})):
            run.call("threshold", rate, run.seed_pair(i, offset=SWEEP_OFFSET), ns, x=x, x_np=x_np, index=i)
        self.checks = exact_checks(run)

    def conclude(self):
        return self.checks


def exact_checks(run) -> list[Check]:
    """The exact contract at rate 0, rate 1 and at inference, each call made directly (a NaN or an
    exception fails its own entry, not the run)."""
    kind, x_np = run.kind, run.x_np
    uint = run.fmt.uint
    pair = run.seed_pair(0, offset=SWEEP_OFFSET + 1)
    checks = []
    y, error = kind.direct(run, 0.0, pair, True)
    same = y is not None and np.array_equal(y.view(uint), x_np.view(uint))
    checks.append(
        _exact(
            "rate_zero",
            same,
            x_np.size,
            error or ("x unchanged" if same else f"{_changed(y, x_np)} of {x_np.size:,} elements changed"),
            "x bit for bit at rate 0",
            run.cfg.reproduce(f"rate 0{_seed_text(run, pair)}"),
        )
    )
    y, error = kind.direct(run, 1.0, pair, True)
    zero = y is not None and not np.any(run.kept_elements(y))
    nan = 0 if y is None else int(np.count_nonzero(np.isnan(y.astype(np.float32))))
    observed = error or (
        "every element 0" if zero else f"{np.count_nonzero(run.kept_elements(y)):,} of {y.size:,} elements not 0"
    )
    checks.append(
        _exact(
            "rate_one",
            zero,
            x_np.size,
            observed + (f" ({nan:,} NaN: 0 / 0?)" if nan else ""),
            "every element 0 at rate 1",
            run.cfg.reproduce(f"rate 1{_seed_text(run, pair)}"),
        )
    )
    if not kind.takes_training:
        checks.append(
            Check(
                "inference_identity",
                None,
                detail=f"{run.cfg.fn_name} takes no training argument: inference is the caller's "
                "(layer=True checks a module's inference mode)",
            )
        )
        return checks
    y, error = kind.direct(run, run.cfg.rate, pair, False)
    same = y is not None and np.array_equal(y.view(uint), x_np.view(uint))
    checks.append(
        _exact(
            "inference_identity",
            same,
            x_np.size,
            error or ("x unchanged" if same else f"{_changed(y, x_np)} of {x_np.size:,} elements changed"),
            f"x bit for bit with training=False at rate {run.cfg.rate}",
            run.cfg.reproduce(f"training=False{_seed_text(run, pair)}"),
        )
    )
    return checks


def _changed(y, x_np) -> str:
    return f"{int(np.count_nonzero(y.astype(np.float64) != x_np.astype(np.float64))):,}"


def _seed_text(run, pair) -> str:
    return "" if run.cfg.stateful else f", seed {list(pair)}"


def _exact(name, ok, n, observed, expected, reproduce) -> Check:
    return Check(name, bool(ok), samples=n, observed=observed, expected=expected, reproduce=reproduce)


def takes_training(fn) -> bool:
    """fn has a parameter named training (timm's drop_path, torchvision's stochastic_depth)."""
    try:
        return "training" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


class DropPathKind(Dropout):
    """Plain dropout read per sample (or per call), with drop path's own families.

    ``call(rate, x, seed, training)`` is the user's function (or layer) as the contract calls it:
    ``training`` None leaves the flag out."""

    def __init__(self, mode: str, scale_by_keep: bool, call, takes_training: bool):
        self.mode, self.scale_by_keep, self.user_call = mode, scale_by_keep, call
        self.takes_training = takes_training
        self.bounded_scale = scale_by_keep
        scale = Scale if scale_by_keep else Unscaled
        if mode == "batch":
            self.families = [KeepFraction, scale, Backward, Seeds, DecisionSequence, SampleFate, ExactRates]
        else:
            self.families = [
                KeepFraction,
                scale,
                Backward,
                Seeds,
                Pairs,
                SampleHomogeneity,
                Correlation,
                SampleFate,
                ExactRates,
            ]

    def gradient_formulas(self, run, rate: float):
        if self.scale_by_keep:
            return super().gradient_formulas(run, rate)
        return [("unscaled (* 1)", lambda u: np.asarray(u).astype(np.float64), None)]

    def direct(self, run, rate: float, pair, training: bool):
        """(y as numpy, None) or (None, why): one call outside the runner's bookkeeping."""
        cfg = run.cfg
        seed = None if cfg.stateful else run.backend.seed(pair)
        where = f"fn(x, {rate!r}{'' if seed is None else f', seed={list(pair)}'}" + (
            ")" if training else ", training=False)"
        )
        try:
            # as the main calls: the training flag left out, or training=False for inference
            y = self.user_call(rate, run.x, seed, None if training else False)
            y_np = read_output(run.backend, y, where, run.x_np.shape, cfg.dtype)
        except ContractError as exc:
            return None, str(exc)
        except Exception as exc:  # noqa: BLE001 - fn's, reported in the entry
            return None, f"{where} raised {type(exc).__name__}: {str(exc)[:300]}"
        cfg.samples += y_np.size
        return y_np, None

    def degenerate(self, run) -> list[Check]:
        """Rate 0 or 1 asked for: the exact entries decide."""
        return exact_checks(run)
