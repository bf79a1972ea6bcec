"""The verdict of verify(): named checks with their evidence, findings, and a readable table."""

from __future__ import annotations

import json
import math
import textwrap
from dataclasses import asdict, dataclass, field

SCHEMA = "dropout-stats/report/1"  # docs/json.md


@dataclass
class Check:
    """One entry of the battery.

    kind: "exact" (a deterministic property: pvalue is None) or "statistical" (compared with
    ``level``, its share of the run's false-fail budget).  ``passed`` is None when the check did
    not apply to this configuration (``detail`` says why).
    """

    name: str
    passed: bool | None
    kind: str = "exact"
    pvalue: float | None = None
    level: float | None = None
    samples: int = 0
    observed: str = ""
    expected: str = ""
    interval: tuple[float, float] | None = None
    detail: str = ""
    reproduce: str = ""
    values: dict = field(default_factory=dict)  # the observed quantities as numbers (JSON)

    @property
    def status(self) -> str:
        return {True: "pass", False: "FAIL", None: "n/a"}[self.passed]


@dataclass
class Finding:
    """A fact about the implementation worth knowing that is not a failure by itself.

    ``detail`` states the fact (the same words for every run it holds for: the audit groups runs
    by it); ``measured`` is what this run measured of it on fn's own outputs."""

    name: str
    detail: str
    value: object = None
    measured: str = ""


@dataclass
class Report:
    passed: bool
    checks: list[Check]
    findings: list[Finding]
    samples: int
    seed: int
    config: dict = field(default_factory=dict)

    def check(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"no check named {name!r}; checks: {[c.name for c in self.checks]}")

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.passed is False]

    def to_dict(self) -> dict:
        def clean(v):
            if isinstance(v, float) and not math.isfinite(v):
                return str(v)
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, (list, tuple)):
                return [clean(x) for x in v]
            return v

        return clean(
            {
                "schema": SCHEMA,
                "passed": self.passed,
                "seed": self.seed,
                "samples": self.samples,
                "config": self.config,
                "checks": [asdict(c) for c in self.checks],
                "findings": [
                    {"name": f.name, "detail": f.detail, "value": _jsonable(f.value), "measured": f.measured}
                    for f in self.findings
                ],
            }
        )

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, **kwargs)

    def __str__(self) -> str:
        return self.text()

    def text(self, width: int = 100) -> str:
        """The report for a terminal: at most ``width`` columns (JSON has every field in full)."""
        cfg = {
            k: v
            for k, v in self.config.items()
            if k not in ("fn", "api") and v not in (None, False) and not (k == "mechanism" and v == "auto")
        }
        head = (
            f"{self.config.get('api', 'verify')}({self.config.get('fn', 'fn')}, "
            f"{', '.join(f'{k}={_short(v)}' for k, v in cfg.items())}): "
            f"{'PASSED' if self.passed else 'FAILED'}"
        )
        lines = _wrap(head, width, subsequent_indent="    ")
        diagnosis = None
        if not self.passed:
            from .diagnosis import diagnose

            diagnosis = diagnose(self)
        if diagnosis:
            words, following, others = diagnosis
            lines += _wrap(f"diagnosis: {words}", width, subsequent_indent="  ")
            if following:
                lines += _wrap("failures that follow from it: " + ", ".join(following), width, subsequent_indent="  ")
            if others:
                lines += _wrap(
                    "other failures, not explained by it: " + ", ".join(others), width, subsequent_indent="  "
                )
        lines.append("")
        rows = [("check", "status", "p", "level", "n")]
        for c in self.checks:
            rows.append(
                (
                    c.name,
                    c.status,
                    f"{c.pvalue:.3g}" if c.pvalue is not None else "exact" if c.passed is not None else "",
                    f"{c.level:.2g}" if c.level is not None else "",
                    f"{c.samples:,}" if c.samples else "",
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        left = sum(widths) + 2 * 5
        for r, c in zip(rows, [None] + self.checks, strict=True):
            observed = "observed" if c is None else c.observed
            fixed = "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True))
            wrapped = _wrap(observed, max(20, width - left)) or [""]
            lines.append(f"{fixed}  {wrapped[0]}".rstrip())
            lines += [" " * left + more for more in wrapped[1:]]
        for c in self.checks:
            if c.passed is False:
                lines += _wrap(f"FAIL {c.name}: {c.detail or c.observed}", width, subsequent_indent="     ")
                if c.expected:
                    lines += _wrap(
                        f"expected: {c.expected}", width, initial_indent="     ", subsequent_indent="       "
                    )
                if c.reproduce:
                    lines += _wrap(
                        f"reproduce: {c.reproduce}", width, initial_indent="     ", subsequent_indent="       "
                    )
        if self.findings:
            lines += ["", "findings:"]
            for f in self.findings:
                text = f"- {f.name}: {f.detail}" + (f"; measured: {f.measured}" if f.measured else "")
                lines += _wrap(text, width, initial_indent="  ", subsequent_indent="    ")
        lines += _wrap(
            f"{self.samples:,} elements drawn; seed {self.seed}; a correct implementation fails "
            f"with probability <= {self.config.get('false_fail_rate', '?')}",
            width,
        )
        return "\n".join(lines)


def _short(v) -> str:
    """A setting as typed: 0.003, not the 0.0030000000000000005 that 0.01 * 0.3 computes."""
    return f"{v:.12g}" if isinstance(v, float) and v == v and f"{v:.12g}" != repr(v) else repr(v)


def _wrap(text: str, width: int, **kwargs) -> list[str]:
    """Lines of at most ``width``, never breaking names such as 'tensorflow-xla'."""
    return textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False, **kwargs)


def _jsonable(v):
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return str(v)
