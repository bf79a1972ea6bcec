"""The verdict of verify(): named checks with their evidence, findings, and a readable table."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field


SCHEMA = "dropout-stats/report/1"   # docs/json.md


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
    values: dict = field(default_factory=dict)   # the observed quantities as numbers (JSON)

    @property
    def status(self) -> str:
        return {True: "pass", False: "FAIL", None: "n/a"}[self.passed]


@dataclass
class Finding:
    """A fact about the implementation worth knowing that is not a failure by itself."""

    name: str
    detail: str
    value: object = None


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

        return clean({
            "schema": SCHEMA,
            "passed": self.passed,
            "seed": self.seed,
            "samples": self.samples,
            "config": self.config,
            "checks": [asdict(c) for c in self.checks],
            "findings": [{"name": f.name, "detail": f.detail, "value": _jsonable(f.value)} for f in self.findings],
        })

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, **kwargs)

    def __str__(self) -> str:
        cfg = ", ".join(f"{k}={v!r}" for k, v in self.config.items() if k != "fn")
        head = f"verify({self.config.get('fn', 'fn')}, {cfg}): {'PASSED' if self.passed else 'FAILED'}"
        rows = [("check", "status", "observed", "expected", "interval", "p", "level", "n")]
        for c in self.checks:
            rows.append((
                c.name, c.status, c.observed, c.expected,
                f"[{c.interval[0]:.6g}, {c.interval[1]:.6g}]" if c.interval else "",
                f"{c.pvalue:.3g}" if c.pvalue is not None else "exact" if c.passed is not None else "",
                f"{c.level:.2g}" if c.level is not None else "",
                f"{c.samples:,}" if c.samples else "",
            ))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [head, ""]
        for i, r in enumerate(rows):
            lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        for c in self.checks:
            if c.passed is False:
                lines.append(f"FAIL {c.name}: {c.detail}")
                if c.reproduce:
                    lines.append(f"     reproduce: {c.reproduce}")
        if self.findings:
            lines.append("")
            lines.append("findings:")
            for f in self.findings:
                lines.append(f"  - {f.name}: {f.detail}")
        lines.append(f"{self.samples:,} elements drawn; seed {self.seed}; a correct implementation fails "
                     f"with probability <= {self.config.get('false_fail_rate', '?')}")
        return "\n".join(lines)


def _jsonable(v):
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return str(v)
