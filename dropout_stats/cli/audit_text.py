"""The audit in words, for a terminal at most 100 columns wide: the table of entry points, then the
layers in a model, the backward pass under activation checkpointing, the recurrent and the
attention layers."""

from __future__ import annotations

from ._common import versions_text, wrap100


def audit_table(results, rate, versions: dict, width: int = 100) -> str:
    """The audit for a terminal, at most ``width`` columns: a row per configuration, then the
    failures (with their diagnosis) and the findings, each grouped by the fact it states."""
    import textwrap

    def wrap(text, indent="    "):
        return textwrap.wrap(text, width, subsequent_indent=indent, break_on_hyphens=False, break_long_words=False)

    if not results:  # transformers: attention dropout only
        return "\n".join(
            [f"dropout-stats audit: {versions_text(versions)}, rate {rate}", "(no dropout entry point of its own)"]
        )

    rows = [("entry point", "mode", "dtype", "verdict", "observed / expected", "draws")]
    failures = {}
    findings: dict[tuple, list] = {}
    for a, d, r in results:
        rows.append((a.entry_point, a.mode, d, "pass" if r.passed else "FAIL", *_observed(a, r)))
        if not r.passed:
            failures[(a.name, d)] = r
        for f in r.findings:
            if f.name == "keep_probability" and abs(f.value - (1 - rate)) <= 1e-6 * (1 - rate):
                continue  # float32/float64: off by an ulp of the rate, not worth a line
            if f.name == "mean_bias" and abs(f.value) <= 1e-6:
                continue
            key = (f.name, f.detail)  # the same fact, in the same words: true of every run listed
            findings.setdefault(key, []).append(f"{a.name} {d}")
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = [
        *wrap(f"dropout-stats audit: {versions_text(versions)}, rate {rate}"),
        *(
            ["(observed / expected: the keep fraction; var: GaussianDropout's noise variance)"]
            if not any(a.kind in ("drop_path", "dropblock") for a, _, _ in results)
            else wrap(
                "(observed / expected: the keep fraction; var: GaussianDropout's noise variance; drop: the "
                "dropped share of a DropPath against the rate, of a DropBlock against its declared geometry's "
                "exact share; draws: a DropBlock's are its maps)",
                "",
            )
        ),
        "",
    ]
    for i, row in enumerate(rows):
        lines.append("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines += ["", f"{len(results) - len(failures)} of {len(results)} configurations passed"]
    for (name, d), r in failures.items():
        words, others = _diagnosis(r)
        lines += wrap(f"FAIL {name} {d}: {words}" + (f" (also failing: {', '.join(others)})" if others else ""))
        for c in r.failures:
            lines += wrap(check_numbers(c), "      ")
    lines += _declared(results, wrap)
    if findings:
        lines += ["", "findings (each true of every configuration listed under it):"]
        for (name, text), where in sorted(findings.items()):
            lines += wrap(f"- {name}: {text}", "    ")
            lines += wrap(f"    in {len(where)}: {', '.join(where[:4])}{' ...' if len(where) > 4 else ''}", "      ")
    return "\n".join(lines)


def _observed(adapter, report) -> tuple[str, str]:
    """(observed / expected, draws) of a row: the keep fraction, GaussianDropout's noise variance,
    or the dropped share of a DropPath (against the rate) or a DropBlock (against the exact share
    of its declared geometry)."""
    k = next((c for c in report.checks if c.name == "keep_fraction" and c.values), None)
    if adapter.kind == "dropblock":
        f = next((c for c in report.checks if c.name == "drop_fraction" and c.values), None)
        if f is None:
            return "", ""
        return f"drop {f.values['fraction']:.4f} / {f.values['expected']:.4f}", f"{f.values['maps']:,}"
    if adapter.kind == "drop_path" and k is not None:
        return f"drop {1 - k.values['fraction']:.4f} / {1 - k.values['expected']:.4g}", f"{k.values['n']:,}"
    if k is not None:
        return f"{k.values['fraction']:.6f} / {k.values['expected']:.7g}", f"{k.values['n']:,}"
    v = next((c for c in report.checks if c.name == "gaussian_variance" and c.pvalue is not None), None)
    if v is not None:
        return f"var {float(v.observed):.5g} / {float(v.expected.split(' ')[0]):.4g}", f"{v.samples:,}"
    return "", ""


def _declared(results, wrap) -> list[str]:
    """The variant each DropPath and DropBlock row was verified against (verify_drop_path's and
    verify_dropblock's parameters), once per entry point."""
    lines = []
    for a in dict.fromkeys(a for a, _, _ in results if a.kind in ("drop_path", "dropblock")):
        shown = {k: v for k, v in a.options if k not in ("layer", "stateful")}
        api = "verify_drop_path" if a.kind == "drop_path" else "verify_dropblock"
        words = ", ".join(f"{k}={v!r}" for k, v in shown.items()) or "the default contract"
        lines += wrap(
            f"- {a.entry_point}: {api}, shape {list(a.shape)}, {words}" + (f" ({a.notes})" if a.notes else "")
        )
    return ["", "declared variants (the contract each structured row is verified against):", *lines] if lines else []


def layers_text(layers, rate) -> str:
    """verify_layer on every Keras dropout layer: its verdict, the layer checks, the replicas."""
    lines = [
        "",
        *wrap100(
            f"layers in a model (verify_layer, float32, rate {rate}; Keras: 2 replicas; torch: train() "
            "and eval() are the flag): the training flag, fit, mode switches, instances, replicas, "
            "config round trip"
        ),
    ]
    for name, r, _ in layers:
        if r.passed:
            lines.append(f"  {name}: pass")
        else:
            words, others = _diagnosis(r)
            lines += wrap100(f"  {name}: FAIL: {words}" + (f" (also: {', '.join(others)})" if others else ""))
            lines += _failed_checks(r)
        replica = next((f for f in r.findings if f.name == "replicas"), None)
        if replica is not None:
            lines += wrap100(f"    {replica.detail}; {replica.measured}")
    return "\n".join(lines)


def recompute_text(facts: dict, rate: float) -> str:
    """Each entry point's backward mask under activation checkpointing, in words."""
    independent = rate**2 + (1 - rate) ** 2
    lines = [
        "",
        *wrap100(
            f"backward pass under activation checkpointing (eager, rate {rate}): does the gradient "
            f"use the output's mask? Exact binomial p-values of the agreement against the same mask "
            f"(1) and against independent masks ({independent:.4f})"
        ),
    ]
    for key, v in facts.items():
        if not isinstance(v, dict):
            lines += wrap100(f"  {key}: {v}")
        elif v["p_vs_same_mask"] == 1.0:
            lines += wrap100(f"  {key}: the forward's mask (agreement 1)")
        else:
            lines += wrap100(
                f"  {key}: ANOTHER MASK, agreement {v['agreement']:.4f} (against independent: "
                f"p = {v['p_vs_independent']:.3g}; against the same mask: p = 0)"
            )
    return "\n".join(lines)


def recurrent_text(recurrent) -> str:
    r0 = recurrent[0][1].config
    lines = [
        "",
        *wrap100(
            f"recurrent layers (verify_recurrent, float32, dropout {r0['dropout']}, recurrent_dropout "
            f"{r0['recurrent_dropout']}): each mask read out exactly through chosen weights; its rate, "
            "time steps, batch, calls, batch shape, scale, inference, backward"
        ),
    ]
    for name, r, _ in recurrent:
        words = "pass" if r.passed else "FAIL: " + ", ".join(c.name for c in r.failures)
        semantics = "; ".join(f.detail for f in r.findings if f.name == "time_semantics")
        lines += wrap100(f"  {name}: {words}" + (f" ({semantics})" if semantics else ""))
        lines += _failed_checks(r)
    return "\n".join(lines)


def attention_text(attention) -> str:
    lines = [
        "",
        *wrap100(
            f"attention layers (verify_attention, float32, rate {attention[0][1].config['rate']}): "
            "every attention probability read out exactly; its rate, heads, batch, queries, keys, "
            "calls, scale, inference, backward"
        ),
    ]
    for name, r, _ in attention:
        lines += wrap100(f"  {name}: " + ("pass" if r.passed else "FAIL: " + ", ".join(c.name for c in r.failures)))
        lines += _failed_checks(r)
    return "\n".join(lines)


def check_numbers(c) -> str:
    """A failed check in one line with its numbers: what it says, what it observed and expected
    (where its words do not already hold them), its p-value against its level, its draws."""
    text = c.detail or c.observed or "failed"
    more = []
    if c.observed and c.observed not in text:
        more.append(f"observed {c.observed}")
    if c.expected and c.expected not in text:
        more.append(f"expected {c.expected}")
    if c.pvalue is not None:
        more.append(f"p = {c.pvalue:.3g}" + (f" <= level {c.level:.2g}" if c.level is not None else ""))
    if c.samples:
        more.append(f"n = {c.samples:,}")
    return f"{c.name}: {text}" + (f" ({'; '.join(more)})" if more else "")


def _failed_checks(report) -> list[str]:
    """The failed checks of a layer's report, a line each (wrapped) with its numbers."""
    import textwrap

    return [
        line
        for c in report.failures
        for line in textwrap.wrap(
            check_numbers(c),
            100,
            initial_indent="      ",
            subsequent_indent="        ",
            break_on_hyphens=False,
            break_long_words=False,
        )
    ]


def exit_reason(results, layers, recurrent, attention, width: int = 100) -> str:
    """The audit's last line where it exits 1: which parts failed, and which checks ("" when every
    check passed)."""
    parts = []
    groups = (
        ("configurations", [r for _, _, r in results]),
        ("layers", [r for _, r, _ in layers]),
        ("recurrent layers", [r for _, r, _ in recurrent]),
        ("attention layers", [r for _, r, _ in attention]),
    )
    for what, reports in groups:
        failed = [r for r in reports if not r.passed]
        if failed:
            checks = ", ".join(dict.fromkeys(c.name for r in failed for c in r.failures))
            parts.append(f"{len(failed)} of {len(reports)} {what} failed ({checks})")
    if not parts:
        return ""
    line = "exit 1: " + "; ".join(parts)
    return line if len(line) <= width else line[: width - 3].rstrip(" ,;(") + "..."


def _diagnosis(report) -> tuple[str, list[str]]:
    """The most likely defect in words and the other failed checks, in the report's order (whether
    diagnose() splits them into those that follow from the defect and the rest, or not)."""
    from ..diagnosis import diagnose

    words, *explained = diagnose(report)
    named = {n for part in explained for n in part}
    return words, list(dict.fromkeys(c.name for c in report.failures if c.name in named))
