"""dropout-stats matrix: audit JSON files (TensorFlow releases, JAX, Keras on JAX, PyTorch) merged
into one markdown table."""

from __future__ import annotations

import json
import os

from ._common import EXIT_OK, FRAMEWORK_NAMES, UsageError
from .files import save_text


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


def _check_payload(path: str, p) -> None:
    """Every key ``matrix_markdown`` reads, with its type: a UsageError naming the first that is
    missing or wrong (where it is, as results[3].report.checks), not a KeyError later."""

    def need(obj, key, kind, where, optional=False):
        if key not in obj:
            if optional:
                return kind()
            raise UsageError(f"{path}: {where or 'the top level'} has no key {key!r} (not a whole audit JSON)")
        value = obj[key]
        if kind is not None and not isinstance(value, kind):
            wanted = "a number" if isinstance(kind, tuple) else kind.__name__
            raise UsageError(f"{path}: {f'{where}.' if where else ''}{key} is {type(value).__name__}, not {wanted}")
        return value

    def report(rep, where):
        need(rep, "passed", None, where)
        for i, c in enumerate(need(rep, "checks", list, where)):
            if not isinstance(c, dict):
                raise UsageError(f"{path}: {where}.checks[{i}] is {type(c).__name__}, not dict")
            need(c, "name", str, f"{where}.checks[{i}]")
            need(c, "passed", None, f"{where}.checks[{i}]")
        for i, f in enumerate(need(rep, "findings", list, where, optional=True)):
            at = f"{where}.findings[{i}]"
            if not isinstance(f, dict):
                raise UsageError(f"{path}: {at} is {type(f).__name__}, not dict")
            name = need(f, "name", str, at)
            if name == "replicas":
                need(f, "value", (int, float), at)
            if name in ("scale_formula", "affine_formula"):
                need(f, "value", None, at)
            if name == "time_semantics":
                need(f, "detail", str, at)

    if p.get("tensorflow") is not None and not isinstance(p["tensorflow"], str):
        raise UsageError(f"{path}: tensorflow is {type(p['tensorflow']).__name__}, not a version string")
    need(p, "frameworks", dict, "", optional=True)
    need(p, "facts", dict, "", optional=True)
    for key, name in (("layers", "layer"), ("recurrent", "layer"), ("attention", "layer"), ("results", None)):
        rows = need(p, key, list, "", optional=key != "results")
        for i, row in enumerate(rows):
            where = f"{key}[{i}]"
            if not isinstance(row, dict):
                raise UsageError(f"{path}: {where} is {type(row).__name__}, not dict")
            if name:
                need(row, name, str, where)
            else:
                for field in ("entry_point", "mode", "dtype"):
                    need(row, field, str, where)
            report(need(row, "report", dict, where), f"{where}.report")


MAX_BYTES = 256 << 20  # an audit JSON is well under a megabyte: more is not one


def _read(path: str) -> str:
    """The text of ``path``, never hanging or filling memory: a FIFO without a writer reads as
    empty (opened non-blocking, then read blocking), a device node or a huge file is refused."""
    import fcntl
    import stat

    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        st = os.fstat(fd)
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            raise UsageError(f"{path}: not a readable audit JSON (a device node, not a file)")
        if st.st_size > MAX_BYTES:
            raise UsageError(f"{path}: not a readable audit JSON ({st.st_size:,} bytes: no audit is that large)")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, encoding="utf-8") as f:
            fd = None
            text = f.read(MAX_BYTES + 1)
    finally:
        if fd is not None:
            os.close(fd)
    if not text.strip():
        raise UsageError(f"{path}: not a readable audit JSON (empty)")
    if len(text) > MAX_BYTES:
        raise UsageError(f"{path}: not a readable audit JSON (more than {MAX_BYTES:,} characters)")
    return text


def cmd_matrix(args) -> int:
    payloads = []
    for path in args.files:
        try:
            payloads.append(json.loads(_read(path)))
        except (OSError, ValueError) as exc:  # JSONDecodeError, UnicodeDecodeError, too many digits
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise UsageError(f"{path}: not a readable audit JSON ({why})") from None
        except RecursionError:
            raise UsageError(f"{path}: not a readable audit JSON (nested too deeply)") from None
        if not isinstance(payloads[-1], dict) or not str(payloads[-1].get("schema", "")).startswith(
            "dropout-stats/audit/"
        ):
            raise UsageError(f"{path}: not a dropout-stats audit JSON (no 'schema': 'dropout-stats/audit/...')")
        if not payloads[-1].get("tensorflow") and not payloads[-1].get("frameworks"):
            raise UsageError(f"{path}: an audit of no framework")
        _check_payload(path, payloads[-1])
    text = matrix_markdown(payloads)
    if args.output:
        save_text(args.output, text, "--output")
    else:
        print(text)
    return EXIT_OK
