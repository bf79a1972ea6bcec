"""Every example in README.md and docs/**/*.md runs, so none can rot.

One test per page: its fenced blocks run in order, in one namespace and one temporary working
folder (a page reads like a session: a later block may use what an earlier one defined).

* ```python            executed; what it prints is not compared (a block that checks something
                       says so with an assert, or shows its output as ```pycon instead);
* ```python title="mod.py"
                       not executed: written to mod.py in the page's working folder, which is on
                       sys.path and on the commands' PYTHONPATH (``dropout-stats verify mod:fn``);
* ```pycon             a Python session: ``>>> `` and ``... `` lines are the source, the lines
                       after them up to the next ``>>> `` the output, compared with what the
                       statement printed (an expression echoes its repr, as in the REPL); an output
                       starting with ``Traceback (most recent call last):`` expects an exception
                       and compares only its last line (``ValueError: ...``), as doctest does;
* ```console           ``$ dropout-stats ...`` and ``$ python ...`` lines are run (``python`` is
                       this interpreter, ``dropout-stats`` is ``python -m dropout_stats``) and the
                       lines after each, up to the next ``$ ``, compared with its stdout followed
                       by its stderr; the exit code must be 0 unless the block says ``exit N``.

Other blocks are not run: ```bash (install commands), ```text (output of runs too long for a
test, such as the full audit), ```json, ```yaml, ```toml.

The only normalisations: trailing whitespace on each line and trailing blank lines are ignored;
stderr lines from TensorFlow's logging (C++: ``I0000 00:00:... port.cc:153] ...``, "WARNING: All
log messages before absl::..."; Python: ``WARNING:tensorflow:...``) are dropped: they depend on
the machine's CPU and the framework's release, not on this package; commands run with
COLUMNS=100 (argparse wraps ``--help`` to the terminal's width) and TF_CPP_MIN_LOG_LEVEL=3, and
without the PYTEST_* variables of the run that tests them.  A block marked ``ellipsis`` lets
``...`` in its expected output match any text (doctest's ELLIPSIS): only for output that truly
varies from run to run, like timings.

Markers: an HTML comment on the last non-blank line before the fence (invisible on GitHub and in
the site), ``<!-- docs-test: ... -->``, several separated by ``;``:

* ``skip (reason)``      the block is not run (rare: say why);
* ``needs REQ [REQ...]`` the block needs an optional framework (tensorflow, keras, jax, flax,
                         torch, matplotlib), each ``MOD`` or ``MOD>=X.Y`` (``keras>=3``: output
                         that Keras 2 prints differently): when one is not met, a console block is
                         left out (its commands run in a process of their own) and the page's
                         other blocks still run; a python or pycon block ends the page's run there
                         (later blocks may depend on it); either way the test reports a skip;
* ``exit N``             a console block's commands exit with N;
* ``ellipsis``           see above.

The examples use fixed seeds (verify()'s default seed 0, explicit ones elsewhere), so their
outputs replay on every run: these tests have no designed false-fail rate and carry no
``statistical`` mark.

When the output of the package changes on purpose (a new report column, a reworded detail),
``python tests/test_docs.py --update [PAGE ...]`` runs the pages and writes what each example
printed into the page; review the diff (``git diff README.md docs``), since the prose around an
example may need the same change.
"""

from __future__ import annotations

import contextlib
import doctest
import importlib
import io
import os
import re
import shlex
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
RUN = ("python", "pycon", "console")

FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})\s*(?P<info>.*)$")
MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<what>.*?)\s*-->\s*$")
TITLE = re.compile(r"""title=["']([^"']+)["']""")
# TensorFlow's C++ logging on stderr (glog-style lines, absl's notice, the CPU-feature guard)
FRAMEWORK_LOG = re.compile(
    r"^([IWEF]\d{4} [\d:.]+\s+\d+ \S+:\d+\]|WARNING: All log messages before absl::|"
    r"To enable the following instructions:|(WARNING|INFO):(tensorflow|absl):)"
)
TIMEOUT_S = 300


@dataclass
class Block:
    page: Path
    start: int  # 0-based index of the opening fence's line
    end: int  # 0-based index of the closing fence's line
    indent: int
    lang: str
    title: str | None
    text: str
    marks: dict = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{rel(self.page)}:{self.start + 1}"


def rel(page: Path) -> str:
    return str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else str(page)


def parse_marks(comment: str, where: str) -> dict:
    marks = {}
    for part in filter(None, (p.strip() for p in comment.split(";"))):
        word, _, rest = part.partition(" ")
        rest = rest.strip()
        if word == "skip":
            if not rest:
                raise ValueError(f"{where}: 'skip' needs a reason: <!-- docs-test: skip (why) -->")
            marks["skip"] = rest
        elif word == "needs" and rest:
            marks["needs"] = rest.split()
        elif word == "exit" and rest.isdigit():
            marks["exit"] = int(rest)
        elif word == "ellipsis" and not rest:
            marks["ellipsis"] = True
        else:
            raise ValueError(f"{where}: unknown docs-test marker {part!r}")
    return marks


def blocks_of(page: Path) -> list[Block]:
    """The fenced blocks of a page with the marker before each (indented fences too)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    out, i, last = [], 0, ""
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            if lines[i].strip():
                last = lines[i]
            i += 1
            continue
        indent, fence, info = len(m["indent"]), m["fence"], m["info"]
        start, body = i, []
        i += 1
        while i < len(lines) and not (lines[i].strip().startswith(fence) and not lines[i].strip().strip(fence[0])):
            body.append(lines[i][indent:] if not lines[i][:indent].strip() else lines[i])
            i += 1
        lang = info.split()[0].lstrip(".{") if info.split() else ""
        title = TITLE.search(info)
        mark = MARKER.match(last)
        marks = parse_marks(mark["what"], f"{rel(page)}:{start + 1}") if mark else {}
        out.append(Block(page, start, i, indent, lang, title[1] if title else None, "\n".join(body), marks))
        i += 1  # past the closing fence
        last = ""
    return out


def runnable(page: Path) -> bool:
    return any(b.lang in RUN for b in blocks_of(page))


def normalise(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.rstrip().splitlines()).strip("\n")


def same(want: str, got: str, ellipsis: bool) -> bool:
    want, got = normalise(want), normalise(got)
    if ellipsis and "..." in want:
        return doctest._ellipsis_match(want, got)  # doctest's own ELLIPSIS rule
    return want == got


def mismatch(where: str, what: str, want: str, got: str) -> str:
    return (
        f"{where}: {what}\n--- expected (the page) ---\n{normalise(want)}\n--- got ---\n{normalise(got)}\n--- end ---"
    )


def _version(text: str) -> tuple:
    return tuple(int(part) for part in re.findall(r"\d+", text.split("+")[0])[:3])


def missing(requirements) -> str | None:
    """The first requirement (``MOD`` or ``MOD>=X.Y``) this environment does not meet."""
    for req in requirements:
        name, _, least = req.partition(">=")
        try:
            module = importlib.import_module(name)
        except ImportError:
            return req
        if least and _version(getattr(module, "__version__", "0")) < _version(least):
            return f"{req} (installed: {module.__version__})"
    return None


class Mismatch(AssertionError):
    pass


# ---- pycon: a session ---------------------------------------------------------------------


def pycon_steps(block: Block):
    """(line number, prompt lines, source, expected output) for each ``>>>`` statement."""
    steps = []
    for k, text in enumerate(block.text.splitlines()):
        line = block.start + 2 + k
        if text.startswith(">>>"):
            steps.append([line, [text], [text[4:]], []])
        elif text.startswith("...") and steps and not steps[-1][3]:
            steps[-1][1].append(text)
            steps[-1][2].append(text[4:])
        elif steps:
            steps[-1][3].append(text)
        elif text.strip():
            raise ValueError(f"{block.where}: a pycon block starts with '>>> '")
    return [(line, prompts, "\n".join(source), "\n".join(want)) for line, prompts, source, want in steps]


def run_pycon(block: Block, ns: dict, update: bool = False) -> str | None:
    """Run the session; on a difference raise Mismatch, or with ``update`` return the block's
    text with what each statement printed."""
    ellipsis = block.marks.get("ellipsis", False)
    new = []
    for line, prompts, source, want in pycon_steps(block):
        where = f"{rel(block.page)}:{line}"
        buf, error = io.StringIO(), None
        with contextlib.redirect_stdout(buf):
            try:
                exec(compile(source + "\n", where, "single"), ns)
            except Exception as e:  # compared below with the expected traceback, if any
                error = e
        expects_error = want.lstrip().startswith("Traceback (most recent call last):")
        if error is not None:
            last = traceback.format_exception_only(type(error), error)[-1].strip()
            got = f"Traceback (most recent call last):\n  ...\n{last}"
            ok = expects_error and same(normalise(want).splitlines()[-1], last, ellipsis)
            if not ok and not update:
                if expects_error:
                    raise Mismatch(mismatch(where, source, normalise(want).splitlines()[-1], last))
                raise Mismatch(f"{where}: {source!r} raised\n" + "".join(traceback.format_exception(error)))
        else:
            got = buf.getvalue()
            ok = not expects_error and same(want, got, ellipsis)
            if not ok and not update:
                if expects_error:
                    raise Mismatch(f"{where}: {source!r} was expected to raise; it printed\n{got}")
                raise Mismatch(mismatch(where, source, want, got))
        shown = want if ok else normalise(got)
        new += prompts + ([shown] if shown.strip() else [])
    return "\n".join(new) if update else None


# ---- console: commands --------------------------------------------------------------------


def console_steps(block: Block):
    """(line number, command, expected output) for each ``$ `` line."""
    steps = []
    for k, text in enumerate(block.text.splitlines()):
        if text.startswith("$ "):
            steps.append([block.start + 2 + k, text[2:], []])
        elif steps:
            steps[-1][2].append(text)
        elif text.strip():
            raise ValueError(f"{block.where}: a console block starts with '$ '")
    return [(line, command, "\n".join(want)) for line, command, want in steps]


def command_args(command: str, where: str) -> list[str]:
    args = shlex.split(command)
    if args[0] == "dropout-stats":
        return [sys.executable, "-m", "dropout_stats", *args[1:]]
    if args[0] == "python":
        return [sys.executable, *args[1:]]
    raise ValueError(f"{where}: only dropout-stats and python commands run, not {args[0]!r}")


def run_console(block: Block, cwd: Path, update: bool = False) -> str | None:
    # as a user's shell runs it: without the variables of the pytest run (xdist's worker id, ...)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(COLUMNS="100", TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(cwd), str(ROOT), env.get("PYTHONPATH")]))
    ellipsis, code = block.marks.get("ellipsis", False), block.marks.get("exit", 0)
    new = []
    for line, command, want in console_steps(block):
        where = f"{rel(block.page)}:{line}"
        r = subprocess.run(
            command_args(command, where), cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
        )
        stderr = "\n".join(s for s in r.stderr.splitlines() if not FRAMEWORK_LOG.match(s))
        got = r.stdout + ("\n" + stderr if stderr.strip() else "")
        if r.returncode != code:
            raise Mismatch(f"{where}: {command!r} exited {r.returncode}, not {code}\n{r.stdout}\n{r.stderr}")
        ok = same(want, got, ellipsis)
        if not ok and not update:
            raise Mismatch(mismatch(where, f"$ {command}", want, got))
        new += [f"$ {command}", want if ok else normalise(got)]
    return "\n".join(s for s in new if s) if update else None


# ---- a page -------------------------------------------------------------------------------


def run_page(page: Path, cwd: Path, update: bool = False) -> dict:
    """Run a page's blocks in order; with ``update``, {block: its new text} for the blocks whose
    output differs."""
    ns = {"__name__": f"docs_{page.stem}"}
    before = set(sys.modules)
    sys.path.insert(0, str(cwd))
    changed, skipped = {}, []
    try:
        for block in blocks_of(page):
            if "skip" in block.marks or (block.lang not in RUN and block.title is None):
                continue
            absent = missing(block.marks.get("needs", ()))
            if absent and block.lang == "console":  # its own process: later blocks cannot depend on it
                skipped.append(f"{block.where}: needs {absent}")
                continue
            if absent:
                pytest.skip(f"{block.where}: needs {absent}, not met here (the blocks before it passed)")
            if block.title is not None:
                (cwd / block.title).write_text(block.text + "\n", encoding="utf-8")
                importlib.invalidate_caches()
            elif block.lang == "python":
                with contextlib.redirect_stdout(io.StringIO()):
                    exec(compile(block.text + "\n", block.where, "exec"), ns)
            else:
                new = run_pycon(block, ns, update) if block.lang == "pycon" else run_console(block, cwd, update)
                if update and normalise(new) != normalise(block.text):
                    changed[block.start] = (block, new)
        if skipped:
            pytest.skip("; ".join(skipped) + ", not met here (every other block passed)")
    finally:
        sys.path.remove(str(cwd))
        for name in set(sys.modules) - before:  # the page's own modules: another page may reuse a name
            if str(cwd) in str(getattr(sys.modules[name], "__file__", "") or ""):
                del sys.modules[name]
    return changed


@pytest.mark.parametrize("page", [p for p in PAGES if runnable(p)], ids=rel)
def test_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        run_page(page, tmp_path)
    finally:
        if "dropout_stats.testing" in sys.modules:  # the examples' own assertions are not this suite's:
            sys.modules["dropout_stats.testing"].drain_records()  # keep them out of the plugin's summary


def update_pages(pages) -> None:
    """Write what each example printed into its page (python tests/test_docs.py --update)."""
    import tempfile

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for page in pages:
        with tempfile.TemporaryDirectory() as tmp:
            here = os.getcwd()
            os.chdir(tmp)
            try:
                changed = run_page(page, Path(tmp), update=True)
            except pytest.skip.Exception as e:
                print(f"{rel(page)}: not updated: {e}")
                continue
            finally:
                os.chdir(here)
        if not changed:
            continue
        for block, _ in changed.values():
            if block.marks.get("ellipsis"):
                print(f"{block.where}: an ellipsis block got this run's output: put its '...' back")
        lines = page.read_text(encoding="utf-8").splitlines()
        for start in sorted(changed, reverse=True):
            block, new = changed[start]
            pad = " " * block.indent
            lines[block.start + 1 : block.end] = [pad + s if s else s for s in new.splitlines()]
        page.write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"{rel(page)}: {len(changed)} block(s) updated")


# ---- the collector itself -----------------------------------------------------------------


def _run_text(tmp_path, monkeypatch, name: str, text: str, update: bool = False) -> dict:
    """Run a page made of ``text`` as test_examples_run runs a real one."""
    page = tmp_path / f"{name}.md"
    page.write_text(text, encoding="utf-8")
    work = tmp_path / name
    work.mkdir()
    monkeypatch.chdir(work)
    return run_page(page, work, update)


WRONG = [
    "```pycon\n>>> 1 + 1\n3\n```\n",  # a wrong value
    "```pycon\n>>> print('a\\nb')\na\n```\n",  # a missing line
    "```pycon\n>>> int('x')\n```\n",  # an exception nobody expected
    "```pycon\n>>> int('x')\nTraceback (most recent call last):\nValueError: no\n```\n",  # another message
    "```pycon\n>>> 1\nTraceback (most recent call last):\nValueError: no\n```\n",  # no exception
    "```python\nassert 1 + 1 == 3\n```\n",  # a python block's own check
    "```console\n$ python -c \"print('yes')\"\nno\n```\n",  # a command's output
    "<!-- docs-test: exit 1 -->\n```console\n$ python -c \"print('yes')\"\nyes\n```\n",  # its exit code
]


@pytest.mark.parametrize("text", WRONG, ids=range(len(WRONG)))
def test_a_wrong_example_fails(tmp_path, monkeypatch, text):
    with pytest.raises(AssertionError):
        _run_text(tmp_path, monkeypatch, "wrong", text)


def test_the_collector_reads_markers_files_and_sessions(tmp_path, monkeypatch):
    text = (
        '```python title="probe_mod.py"\ndef f():\n    return 41\n```\n\n'
        "```python\nimport probe_mod\nx = probe_mod.f() + 1\n```\n\n"
        "```pycon\n>>> x\n42\n>>> for i in range(2):\n...     print(i, '  ')\n0\n1\n\n"
        ">>> int('x')\nTraceback (most recent call last):\n  ...\n"
        "ValueError: invalid literal for int() with base 10: 'x'\n```\n\n"
        "<!-- docs-test: exit 3 -->\n"
        '```console\n$ python -c "import probe_mod, sys; print(probe_mod.f()); sys.exit(3)"\n41\n```\n\n'
        "<!-- docs-test: ellipsis -->\n"
        "```console\n$ python -c \"import time; print('took', time.time(), 's')\"\ntook ... s\n```\n\n"
        "<!-- docs-test: skip (shown, not run) -->\n```pycon\n>>> 1\n2\n```\n\n"
        "<!-- docs-test: needs pytest>=1.0 -->\n```pycon\n>>> 1\n1\n```\n\n"
        "<!-- docs-test: needs pytest>=999 -->\n```pycon\n>>> 1\n2\n```\n"
    )
    with pytest.raises(pytest.skip.Exception, match="needs pytest>=999"):
        _run_text(tmp_path, monkeypatch, "markers", text)
    assert "probe_mod" not in sys.modules


def test_an_unmet_console_block_leaves_the_rest_running(tmp_path, monkeypatch):
    text = (
        '<!-- docs-test: needs pytest>=999 -->\n```console\n$ python -c "print(1)"\n2\n```\n\n'
        "```pycon\n>>> 1 + 1\n3\n```\n"
    )
    with pytest.raises(AssertionError):  # the pycon block after the left-out console block still ran
        _run_text(tmp_path, monkeypatch, "console_skip", text)
    with pytest.raises(pytest.skip.Exception, match="needs pytest>=999"):
        _run_text(tmp_path, monkeypatch, "console_skip_ok", text.replace("3\n```", "2\n```"))


def test_update_writes_what_was_printed(tmp_path, monkeypatch):
    text = (
        "```pycon\n>>> x = 1\n>>> print(x + 1)\n3\n>>> 2\n2\n```\n\n```console\n$ python -c \"print('yes')\"\nno\n```\n"
    )
    changed = _run_text(tmp_path, monkeypatch, "update", text, update=True)
    assert [new for _, new in changed.values()] == [
        ">>> x = 1\n>>> print(x + 1)\n2\n>>> 2\n2",
        "$ python -c \"print('yes')\"\nyes",
    ]


def test_the_readme_is_a_landing_page():
    """At most 250 lines, and its first code block is the two commands (the main job, the tests)."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move detail into docs/"
    first = blocks_of(ROOT / "README.md")[0]
    commands = [line.split("#")[0].strip() for line in first.text.splitlines()]
    assert commands == [
        'pip install -e ".[tensorflow]" && dropout-stats audit',
        'pip install -e ".[test]" && pytest -n auto',
    ]


def test_the_site_builds_strict(tmp_path):
    """mkdocs build --strict: every page in the nav, every link and anchor resolves, the API
    reference renders from the docstrings (the [docs] extra; [test] includes it)."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    r = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],  # no --quiet:
        # it hides the warnings that --strict counts
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_page_parses():
    for page in PAGES:
        for block in blocks_of(page):
            if block.lang == "pycon":
                pycon_steps(block)
            elif block.lang == "console":
                for line, command, _ in console_steps(block):
                    command_args(command, f"{rel(page)}:{line}")


if __name__ == "__main__":
    if sys.argv[1:2] != ["--update"]:
        sys.exit("usage: python tests/test_docs.py --update [PAGE ...]")
    update_pages([Path(p).resolve() for p in sys.argv[2:]] or [p for p in PAGES if runnable(p)])
