"""dropout-stats matrix: audit JSON files (TensorFlow releases, JAX, Keras on JAX, PyTorch) merged
into one markdown table."""

from __future__ import annotations

import json

from ._common import EXIT_OK, FRAMEWORK_NAMES, UsageError
from .files import write_atomically


def matrix_markdown(payloads: list[dict]) -> str:
    """One row per measured fact, one column per audit: TensorFlow releases first (oldest first),
    then the audits of the other frameworks (JAX and Flax, Keras on JAX, PyTorch)."""

    def legacy(p):
        return bool(p.get("tf_keras")) or any(r["entry_point"].startswith("tf_keras") for r in p.get("results", []))

    def order(p):
        if p.get("tensorflow"):
            return (0, [int(v) for v in p["tensorflow"].split(".")[:3] if v.isdigit()], legacy(p), "")
        return (1, [], False, " ".join(p.get("frameworks", {})))

    def label(p):
        if p.get("tensorflow"):
            return f"TF {p['tensorflow']} (Keras {p.get('keras')}" + (" + tf_keras" if legacy(p) else "") + ")"
        return " + ".join(f"{FRAMEWORK_NAMES.get(fw, fw)} {v}" for fw, v in p.get("frameworks", {}).items())

    payloads = sorted(payloads, key=order)
    versions = [label(p) for p in payloads]
    rows: dict[tuple, dict] = {}

    def put(section, fact, column, value):
        rows.setdefault((section, fact), {})[column] = value

    for col, p in enumerate(payloads):
        facts = p.get("facts", {})
        for section, content in facts.items():
            if not isinstance(content, dict):
                if section != "tensorflow":
                    put(section, "", col, str(content))
                continue
            for fact, value in content.items():
                if isinstance(value, dict):
                    value = ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
                put(section, fact, col, _fmt(value))
        for layer in p.get("layers", []):
            rep = layer["report"]
            replica = next((f for f in rep.get("findings", []) if f["name"] == "replicas"), None)
            failed = [c["name"] for c in rep["checks"] if c["passed"] is False]
            put(
                "layers (verify_layer, float32; Keras on TF: 2 replicas)",
                layer["layer"],
                col,
                ("pass" if rep["passed"] else f"FAIL {', '.join(failed)}")
                + (f"; replica agreement {replica['value']:.4g}" if replica else ""),
            )
        for layer in p.get("recurrent", []):
            rep = layer["report"]
            failed = [c["name"] for c in rep["checks"] if c["passed"] is False]
            times = "; ".join(
                f["detail"].split(" read")[0] for f in rep.get("findings", []) if f["name"] == "time_semantics"
            )
            put(
                "recurrent layers (verify_recurrent, float32)",
                layer["layer"],
                col,
                ("pass" if rep["passed"] else f"FAIL {', '.join(failed)}") + (f"; {times}" if times else ""),
            )
        for layer in p.get("attention", []):
            rep = layer["report"]
            failed = [c["name"] for c in rep["checks"] if c["passed"] is False]
            put(
                "attention layers (verify_attention, float32)",
                layer["layer"],
                col,
                "pass" if rep["passed"] else f"FAIL {', '.join(failed)}",
            )
        by_entry: dict[str, list] = {}
        for res in p.get("results", []):
            rep = res["report"]
            name = f"{res['entry_point']} [{res['mode']}]"
            by_entry.setdefault(name, []).append((res["dtype"], rep))
        for name, items in by_entry.items():
            ok = sum(1 for _, r in items if r["passed"])
            failed = [
                f"{d}: {', '.join(c['name'] for c in r['checks'] if c['passed'] is False)}"
                for d, r in items
                if not r["passed"]
            ]
            put(
                "verify",
                name,
                col,
                f"{ok}/{len(items)} dtypes pass" + (f" (FAIL {'; '.join(failed)})" if failed else ""),
            )
            mech = [(d, next((c for c in r["checks"] if c["name"] == "mechanism"), None)) for d, r in items]
            if any(c is not None and c["passed"] is not None for _, c in mech):  # stateless entry points
                exact = [d for d, c in mech if c is not None and c["passed"] is True]
                put(
                    "mechanism (kept == uniform >= rate, bit for bit)",
                    name,
                    col,
                    f"exact in {len(exact)}/{len(items)} dtypes",
                )
            for d, r in items:
                for f in r.get("findings", []):
                    if f["name"] == "scale_formula" and d == "float32":
                        put("scale formula (float32)", name, col, f["value"])
                    if f["name"] == "affine_formula":
                        put("alpha dropout a*x+b", f"{name} {d}", col, f["value"])
    lines = [
        "# How dropout behaves, release by release and framework by framework",
        "",
        "Generated by `dropout-stats matrix` from each tox environment's `dropout-stats audit --json`; "
        "do not edit by hand.  Columns: TensorFlow releases (with their Keras), then JAX and Flax, "
        "Keras 3 on JAX and PyTorch where audited.",
        "",
        "| section | fact | " + " | ".join(versions) + " |",
        "|---|---|" + "---|" * len(versions),
    ]
    for (section, fact), cols in sorted(rows.items()):
        cells = [str(cols.get(i, "")).replace("|", "/") for i in range(len(payloads))]
        lines.append(f"| {section} | {fact} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def cmd_matrix(args) -> int:
    payloads = []
    for path in args.files:
        try:
            with open(path) as f:
                payloads.append(json.load(f))
        except (OSError, json.JSONDecodeError) as exc:
            raise UsageError(f"{path}: not a readable audit JSON ({exc})") from None
        if not isinstance(payloads[-1], dict) or not str(payloads[-1].get("schema", "")).startswith(
            "dropout-stats/audit/"
        ):
            raise UsageError(f"{path}: not a dropout-stats audit JSON (no 'schema': 'dropout-stats/audit/...')")
        if not payloads[-1].get("tensorflow") and not payloads[-1].get("frameworks"):
            raise UsageError(f"{path}: an audit of no framework")
    text = matrix_markdown(payloads)
    if args.output:
        write_atomically(args.output, text)
        print(f"wrote {args.output}")
    else:
        print(text)
    return EXIT_OK
