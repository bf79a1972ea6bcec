"""The command line against bad output paths, malformed inputs, missing frameworks, signals and
faults while it runs (issue 30): each bad input is refused in one line, exit 2, before any work;
each fault ends in one line with the previous report intact and no temporary file left.

Every run is a real `python -m dropout_stats` subprocess in tmp_path (the fast ones verify a
numpy dropout, so no framework loads); nothing is written outside tmp_path.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time

import pytest

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
HEAVY = ("tensorflow", "jax", "torch", "keras", "scipy", "matplotlib")
ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False

NPDROP = textwrap.dedent("""
    import os
    import shutil
    import time

    import numpy as np


    def good(x, rate, seed, noise_shape=None):
        shape = x.shape if noise_shape is None else tuple(noise_shape)
        keep = np.random.default_rng(list(seed)).random(shape) >= rate
        return np.where(keep, x / x.dtype.type(1 - rate), x.dtype.type(0)).astype(x.dtype)


    def _first_call():
        marker = os.environ.get("NPDROP_CALLED")
        if marker and not os.path.exists(marker):
            open(marker, "w").close()
            return True
        return False


    def slow(x, rate, seed, noise_shape=None):
        _first_call()
        time.sleep(0.2)
        return good(x, rate, seed, noise_shape)


    def vanish(x, rate, seed, noise_shape=None):  # removes the report's folder on its first call
        if _first_call():
            shutil.rmtree(os.environ["NPDROP_RMTREE"])
        return good(x, rate, seed, noise_shape)


    def to_folder(x, rate, seed, noise_shape=None):  # the report's path becomes a folder
        if _first_call():
            os.mkdir(os.environ["NPDROP_MKDIR"])
        return good(x, rate, seed, noise_shape)
""")
FAST = ["--shape", "64,64", "--no-backward"]


def run(*args, cwd, env=None, timeout=300):
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "dropout_stats", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env or ENV,
        timeout=timeout,
    )
    r.seconds = time.perf_counter() - t0
    return r


def run_main(args, cwd, blocked=()):
    """main(args) in a fresh interpreter with the ``blocked`` modules made unimportable (as if
    not installed); stdout ends with the heavy modules that were loaded, as JSON."""
    code = (
        "import json, sys\n"
        f"for m in {list(blocked)!r}:\n"
        "    sys.modules[m] = None\n"
        "from dropout_stats.cli import main\n"
        f"rc = main({list(args)!r})\n"
        f"print('LOADED', json.dumps([m for m in {list(HEAVY)!r} if sys.modules.get(m) is not None]))\n"
        "sys.exit(rc)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=ENV, timeout=300)
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("LOADED "), r.stdout + r.stderr
    r.loaded = json.loads(last[len("LOADED ") :])
    return r


def one_error_line(r, *fragments):
    """Exit 2, nothing on stdout, one line on stderr naming what is wrong, no traceback."""
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dropout-stats: error: "), r.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in r.stderr


def listing(folder) -> dict:
    """Every entry under ``folder`` with its kind, size and mode (symlinks not followed)."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = os.path.join(root, name)
            st = os.lstat(p)
            out[os.path.relpath(p, folder)] = (stat.S_IFMT(st.st_mode), st.st_size, stat.S_IMODE(st.st_mode))
    return out


def temporaries(folder) -> list[str]:
    return [n for n in os.listdir(folder) if n.startswith(".dropout-stats-")]


@pytest.fixture
def work(tmp_path):
    """A working folder with the numpy dropout module, a file, a folder, a FIFO, links."""
    (tmp_path / "npdrop.py").write_text(NPDROP)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "folder").mkdir()
    os.mkfifo(tmp_path / "fifo")
    os.symlink("loop_b", tmp_path / "loop_a")
    os.symlink("loop_a", tmp_path / "loop_b")
    os.symlink("folder", tmp_path / "to_folder")
    os.symlink(os.devnull, tmp_path / "to_devnull")
    return tmp_path


# -- output paths: refused before any work --------------------------------------------------
BAD_OUTPUTS = [
    ("", "('') is an empty path"),
    ("   ", "('   ') is blank"),
    ("folder", "(folder) is a folder"),
    ("folder/", "(folder/) is a folder"),
    (".", "(.) is a folder"),
    ("nowhere/", "(nowhere/) names a folder (it ends in /)"),
    ("missing/sub/out", "(missing/sub/out) is in a folder that does not exist"),
    ("afile/out", "(afile/out) is under"),
    ("fifo", "(fifo) is a FIFO (named pipe), not a regular file"),
    (os.devnull, f"({os.devnull}) is a character device, not a regular file"),
    ("to_devnull", "(to_devnull) is a character device"),
    ("to_folder", "(to_folder) is a folder"),
    ("loop_a", "(loop_a) is a symlink loop"),
    ("n" * 300, "is too long a name"),
    ("/proc/dropout-stats-report", "is in a folder where no file can be created"),
    ("new\nline/x", "(new\\nline/x) is in a folder that does not exist"),  # still one line
]


COMMANDS = {
    "audit-json": (["audit", "--framework", "tensorflow", "--quick"], "--json"),
    "audit-plot": (["audit", "--framework", "tensorflow", "--quick"], "--plot"),
    "verify-json": (["verify", "npdrop:good", *FAST], "--json"),
    "explain-plot": (["explain", "--units", "32", "--rate", "0.2"], "--plot"),
    "matrix-o": (["matrix", "in.json"], "-o"),
}
# every bad path with audit --json; a few with every command's output option
CASES = [("audit-json", value, fragment) for value, fragment in BAD_OUTPUTS] + [
    (command, value, fragment)
    for command in COMMANDS
    if command != "audit-json"
    for value, fragment in (BAD_OUTPUTS[0], BAD_OUTPUTS[2], BAD_OUTPUTS[6], BAD_OUTPUTS[9])
]


@pytest.mark.parametrize("command, value, fragment", CASES, ids=[f"{c}: {f[:36]}" for c, _, f in CASES])
def test_a_bad_output_path_is_refused_up_front(work, command, value, fragment):
    if value.startswith("/proc/") and not os.path.isdir("/proc"):
        pytest.skip("no /proc here")
    args, option = COMMANDS[command]
    before = listing(work)
    r = run(*args, option, value, cwd=work)
    shown = "--output" if option == "-o" else option
    one_error_line(r, f"{shown} {fragment}" if fragment.startswith("(") else fragment)
    assert listing(work) == before, "wrote something on bad input"
    assert r.seconds < 20, r.seconds  # under a second unloaded: no framework loads (next test)


@pytest.mark.parametrize(
    "args",
    [
        ["audit", "--json", "folder"],
        ["audit", "--framework", "tensorflow", "--plot", "fifo"],
        ["verify", "npdrop:good", "--json", ""],
        ["explain", "--units", "32", "--rate", "0.2", "--plot", "missing/p.png"],
        ["matrix", "in.json", "-o", "afile/x.md"],
        ["audit", "--json", "a.json", "--plot", "a.json"],
    ],
)
def test_refusals_load_no_framework(work, args):
    """A bad output path is found before anything heavy loads: no TensorFlow, JAX, torch, Keras,
    scipy or matplotlib (under a second on an idle machine)."""
    r = run_main(args, work)
    assert r.returncode == 2 and r.stderr.startswith("dropout-stats: error: "), r.stderr
    assert r.loaded == [], r.loaded


def test_refusal_timings(work):
    """Each refusal, timed as a user runs it (the seconds are in the assertion's message)."""
    cases = [
        ["audit", "--json", "folder"],
        ["audit", "--json", "missing/x.json"],
        ["audit", "--json", ""],
        ["audit", "--json", "/proc/x.json"],
        ["verify", "npdrop:good", "--json", "folder"],
        ["explain", "--units", "32", "--rate", "0.2", "--plot", "folder"],
        ["explain", "--units", "1e19", "--rate", "0.2"],
        ["matrix", "in.json", "-o", "folder"],
    ]
    seconds = {}
    for args in cases:
        r = run(*args, cwd=work)
        assert r.returncode == 2, r.stderr
        seconds[" ".join(args)] = round(r.seconds, 2)
    # a second each on an idle machine; generous here, where the suite runs on 2 busy cores
    assert max(seconds.values()) < 20, seconds


def test_same_file_twice_and_matrix_onto_its_input(work):
    one_error_line(
        run("audit", "--json", "r.out", "--plot", "./r.out", cwd=work), "--plot (./r.out) is the same file as --json"
    )
    audit = work / "in.json"
    audit.write_text(json.dumps(_audit()))
    before = audit.read_bytes()
    one_error_line(run("matrix", "in.json", "-o", "in.json", cwd=work), "--output (in.json) is one of the input files")
    assert audit.read_bytes() == before


@pytest.mark.skipif(ROOT, reason="root writes anywhere: permissions cannot refuse it")
def test_unwritable_folder_and_read_only_file(work):
    locked = work / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        one_error_line(run("audit", "--json", "locked/a.json", cwd=work), "is in a folder where no file can be created")
    finally:
        locked.chmod(0o755)
    ro = work / "ro.json"
    ro.write_text("{}")
    ro.chmod(0o444)
    one_error_line(run("audit", "--json", "ro.json", cwd=work), "--json (ro.json) is a read-only file")
    assert ro.read_text() == "{}"


def test_socket_is_refused(work):
    path = str(work / "s.sock")
    if len(path) > 100:
        pytest.skip("socket paths are limited to about 100 characters")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(path)
    try:
        one_error_line(run("audit", "--json", path, cwd=work), "is a socket, not a regular file")
    finally:
        sock.close()


# -- writing: atomic, the mode kept, symlinks followed and said so ----------------------------
def test_a_report_replaces_the_old_one_whole_and_keeps_its_mode(work):
    old = work / "report.json"
    old.write_text('{"old": true}')
    old.chmod(0o640)
    r = run("verify", "npdrop:good", *FAST, "--json", "report.json", cwd=work)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    assert r.stdout.rstrip().endswith("wrote report.json")
    assert json.loads(old.read_text())["passed"] is True
    assert stat.S_IMODE(old.stat().st_mode) == 0o640
    assert temporaries(work) == []


def test_a_symlink_is_followed_and_the_line_says_so(work):
    os.symlink("real.json", work / "link.json")  # dangling: the target is created
    r = run("verify", "npdrop:good", *FAST, "--json", "link.json", cwd=work)
    assert r.returncode == 0, r.stderr
    assert f"wrote link.json (a symlink: wrote its target {work / 'real.json'})" in r.stdout
    assert os.path.islink(work / "link.json") and json.loads((work / "real.json").read_text())["passed"]


def test_write_atomically_in_process(tmp_path):
    from dropout_stats.cli._common import UsageError
    from dropout_stats.cli.files import check_output, remove_stale_temporaries, write_atomically

    target = tmp_path / "a.json"
    write_atomically(str(target), "one")
    mask = os.umask(0)
    os.umask(mask)
    assert target.read_text() == "one" and stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    target.chmod(0o600)
    write_atomically(str(target), "two\u00e9")  # UTF-8, whatever the locale
    assert target.read_text(encoding="utf-8") == "two\u00e9" and stat.S_IMODE(target.stat().st_mode) == 0o600

    class Boom(Exception):
        pass

    from dropout_stats.cli.files import replace_atomically

    def fails(f):
        f.write(b"half")
        raise Boom

    with pytest.raises(Boom):
        replace_atomically(str(target), "--json", ".tmp", fails)
    assert target.read_text(encoding="utf-8") == "two\u00e9" and temporaries(tmp_path) == []
    with pytest.raises(UsageError, match=r"--json \(.*\) is a folder"):
        check_output(str(tmp_path), "--json")
    assert remove_stale_temporaries(str(tmp_path / "missing")) == []


# -- faults while running -------------------------------------------------------------------
def _start(work, function, report, *extra, env=None):
    called = work / "called"
    env = dict(ENV, NPDROP_CALLED=str(called), **(env or {}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "dropout_stats", "verify", f"npdrop:{function}", *FAST, "--json", report, *extra],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not called.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "fn never called"
        time.sleep(0.05)
    time.sleep(0.3)  # mid-run: calls under way
    return proc


def _old_report(work):
    old = work / "report.json"
    old.write_text('{"previous": "report"}')
    old.chmod(0o640)
    return old


@pytest.mark.parametrize(
    "signum, code, words",
    [
        (signal.SIGTERM, 143, "dropout-stats: terminated (SIGTERM)"),
        (signal.SIGINT, 130, "dropout-stats: interrupted"),
        (signal.SIGHUP, 129, "dropout-stats: terminated (SIGHUP)"),
    ],
    ids=["SIGTERM", "SIGINT", "SIGHUP"],
)
def test_a_signal_mid_run_keeps_the_previous_report(work, signum, code, words):
    old = _old_report(work)
    proc = _start(work, "slow", "report.json")
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, (proc.returncode, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(words), err
    assert "verifying npdrop:slow" in lines[0] and "--json report.json not written" in lines[0]
    assert "the previous file is unchanged" in lines[0] and "Traceback" not in err
    assert old.read_text() == '{"previous": "report"}' and stat.S_IMODE(old.stat().st_mode) == 0o640
    assert temporaries(work) == []


def test_sigkill_keeps_the_previous_report_and_the_next_run_cleans_up(work):
    old = _old_report(work)
    proc = _start(work, "slow", "report.json")
    proc.kill()
    proc.communicate(timeout=60)
    assert old.read_text() == '{"previous": "report"}'
    # a run killed mid-write leaves its temporary file: its process (this one) is gone
    stale = work / f".dropout-stats-{proc.pid}-k1lled_x.tmp"
    stale.write_text('{"half": ')
    live = work / f".dropout-stats-{os.getpid()}-running.tmp"  # a live process's: left alone
    live.write_text("in progress")
    r = run("verify", "npdrop:good", *FAST, "--json", "report.json", cwd=work)
    assert r.returncode == 0, r.stderr
    assert not stale.exists() and live.exists()
    assert json.loads(old.read_text())["passed"] is True and stat.S_IMODE(old.stat().st_mode) == 0o640
    assert temporaries(work) == [live.name]


def test_the_report_folder_removed_mid_run(work):
    out = work / "out"
    out.mkdir()
    r = subprocess.run(
        [sys.executable, "-m", "dropout_stats", "verify", "npdrop:vanish", *FAST, "--json", "out/r.json"],
        cwd=work,
        env=dict(ENV, NPDROP_CALLED=str(work / "called"), NPDROP_RMTREE=str(out)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    one_error_line_after_report = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr  # not 1: no check failed
    assert "PASSED" in r.stdout  # what was measured is printed before the write
    assert len(one_error_line_after_report) == 1, r.stderr
    assert "--json (out/r.json) is in a folder that does not exist" in r.stderr and "Traceback" not in r.stderr


def test_the_report_path_turned_into_a_folder_mid_run(work):
    r = subprocess.run(
        [sys.executable, "-m", "dropout_stats", "verify", "npdrop:to_folder", *FAST, "--json", "r.json"],
        cwd=work,
        env=dict(ENV, NPDROP_CALLED=str(work / "called"), NPDROP_MKDIR=str(work / "r.json")),
        capture_output=True,
        text=True,
        timeout=300,
    )
    one_error_line_after_report = r.stderr.strip().splitlines()
    assert r.returncode == 2 and "PASSED" in r.stdout, r.stderr
    assert one_error_line_after_report == ["dropout-stats: error: --json (r.json) is a folder: name a file in it"]
    assert (work / "r.json").is_dir() and temporaries(work) == []


def test_a_closed_stdout_is_not_a_traceback(work):
    proc = subprocess.Popen(
        [sys.executable, "-m", "dropout_stats", "explain", "--units", "32", "--rate", "0.2"],
        cwd=work,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader went away (| head -0)
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in err and proc.returncode == 0, err


# -- matrix: a malformed audit JSON names the key ----------------------------------------------
def _audit() -> dict:
    import copy

    return copy.deepcopy(_AUDIT)


def _make_audit() -> dict:
    report = {
        "passed": True,
        "checks": [{"name": "keep_fraction", "passed": True}, {"name": "mechanism", "passed": True}],
        "findings": [{"name": "scale_formula", "value": "multiply", "detail": "x * 1.25"}],
    }
    return {
        "schema": "dropout-stats/audit/1",
        "frameworks": {"tensorflow": "2.21.0"},
        "tensorflow": "2.21.0",
        "keras": "3.15.1",
        "facts": {"xla": {"float16": {"default": 0}}},
        "layers": [{"layer": "keras.layers.Dropout", "report": json.loads(json.dumps(report))}],
        "recurrent": [],
        "attention": [],
        "results": [
            {
                "framework": "tensorflow",
                "entry_point": "tf.nn.dropout",
                "mode": "eager",
                "dtype": "float32",
                "report": report,
            }
        ],
    }


_AUDIT = _make_audit()


def _without(path):
    def edit(p):
        *parents, last = path
        for key in parents:
            p = p[key]
        del p[last]

    return edit


def _setting(path, value):
    def edit(p):
        *parents, last = path
        for key in parents:
            p = p[key]
        p[last] = value

    return edit


MALFORMED = [
    (_without(["results"]), "the top level has no key 'results'"),
    (_without(["results", 0, "report"]), "results[0] has no key 'report'"),
    (_without(["results", 0, "entry_point"]), "results[0] has no key 'entry_point'"),
    (_without(["results", 0, "report", "checks"]), "results[0].report has no key 'checks'"),
    (_without(["results", 0, "report", "checks", 1, "name"]), "results[0].report.checks[1] has no key 'name'"),
    (_without(["results", 0, "report", "passed"]), "results[0].report has no key 'passed'"),
    (_without(["layers", 0, "layer"]), "layers[0] has no key 'layer'"),
    (_without(["layers", 0, "report", "findings", 0, "name"]), "layers[0].report.findings[0] has no key 'name'"),
    (_setting(["results"], {"a": 1}), "results is dict, not list"),
    (_setting(["results", 0], "row"), "results[0] is str, not dict"),
    (_setting(["tensorflow"], 2.15), "tensorflow is float, not a version string"),
    (_setting(["frameworks"], ["tensorflow"]), "frameworks is list, not dict"),
    (_setting(["facts"], [1, 2]), "facts is list, not dict"),
    (
        _setting(["layers", 0, "report", "findings"], [{"name": "replicas", "value": "one"}]),
        "value is str, not a number",
    ),
]


@pytest.mark.parametrize("edit, fragment", MALFORMED, ids=[m[1] for m in MALFORMED])
def test_matrix_names_the_missing_key(tmp_path, edit, fragment):
    payload = _audit()
    edit(payload)
    (tmp_path / "bad.json").write_text(json.dumps(payload))
    r = run("matrix", "bad.json", "-o", "m.md", cwd=tmp_path)
    one_error_line(r, "bad.json: ", fragment)
    assert not (tmp_path / "m.md").exists()


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"", "not a readable audit JSON"),
        (b"\xff\xfe\x00 not text", "not a readable audit JSON ('utf-8' codec can't decode"),
        (b"[" * 100_000 + b"]" * 100_000, "not a readable audit JSON (nested too deeply)"),
        (b'{"schema": "dropout-stats/audit/1", "n": ' + b"9" * 5000 + b"}", "not a readable audit JSON"),
        (b"[1, 2]", "not a dropout-stats audit JSON"),
        (b'{"schema": "dropout-stats/audit/1"}', "an audit of no framework"),
    ],
    ids=["empty", "binary", "deep", "digits", "list", "no-framework"],
)
def test_matrix_refuses_unreadable_files(tmp_path, content, fragment):
    (tmp_path / "x.json").write_bytes(content)
    one_error_line(run("matrix", "x.json", cwd=tmp_path), "x.json: ", fragment)


def test_matrix_never_hangs_on_a_fifo_nor_reads_a_device(tmp_path):
    os.mkfifo(tmp_path / "pipe.json")  # no writer: read as empty, not waited on
    one_error_line(run("matrix", "pipe.json", cwd=tmp_path, timeout=60), "pipe.json: not a readable audit JSON (empty)")
    if os.path.exists("/dev/zero"):  # endless: refused, not read into memory
        one_error_line(run("matrix", "/dev/zero", cwd=tmp_path, timeout=60), "(a device node, not a file)")


def test_verify_never_writes_its_report_over_the_module(work):
    before = (work / "npdrop.py").read_bytes()
    one_error_line(run("verify", "npdrop:good", "--json", "npdrop.py", cwd=work), "is the module being verified")
    assert (work / "npdrop.py").read_bytes() == before


def test_matrix_accepts_the_minimal_audit_and_a_folder_is_refused(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(_audit()))
    r = run("matrix", "a.json", "-o", "m.md", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "wrote m.md", r.stderr
    assert "| verify | tf.nn.dropout [eager] | 1/1 dtypes pass |" in (tmp_path / "m.md").read_text()
    (tmp_path / "sub").mkdir()
    one_error_line(run("matrix", "sub", cwd=tmp_path), "sub: not a readable audit JSON (Is a directory)")


# -- frameworks that are not installed ----------------------------------------------------------
@pytest.mark.parametrize("framework", ["torch", "jax", "tensorflow", "keras-jax"])
def test_audit_of_a_framework_not_installed_names_the_extra(tmp_path, framework):
    blocked = {"keras-jax": ["keras", "jax"]}.get(framework, [framework])
    r = run_main(["audit", "--framework", framework, "--json", "a.json"], tmp_path, blocked=blocked)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f'pip install "dropout_stats[{framework}]"' in r.stderr and f"--framework ({framework})" in r.stderr
    assert r.loaded == [] and not (tmp_path / "a.json").exists()


def test_a_broken_framework_install_names_the_extra(tmp_path):
    fake = tmp_path / "fake"
    (fake / "torch").mkdir(parents=True)
    (fake / "torch" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'torch._C'\", name='torch._C')\n"
    )
    env = dict(ENV, PYTHONPATH=f"{fake}{os.pathsep}{ENV.get('PYTHONPATH', '')}")
    r = run("audit", "--framework", "torch", "--quick", cwd=tmp_path, env=env)
    one_error_line(r, "--framework (torch)", 'pip install "dropout_stats[torch]"', "torch._C")


@pytest.mark.parametrize("backend", ["jax", "torch", "tensorflow"])
def test_verify_backend_not_installed_names_the_extra(work, backend):
    r = run_main(["verify", "npdrop:good", "--backend", backend], work, blocked=[backend])
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f'--backend ({backend}) is not installed here: pip install "dropout_stats[{backend}]"' in r.stderr


def test_the_api_names_the_extra_too(tmp_path):
    code = textwrap.dedent("""
        import sys
        sys.modules["jax"] = None
        import numpy as np
        import dropout_stats as ds
        from dropout_stats.adapters import adapters
        from dropout_stats.backends import get_backend
        for call in (lambda: get_backend("jax"), lambda: adapters(framework="jax"),
                     lambda: ds.verify(lambda x, r, s, noise_shape=None: x, rate=0.2, backend="jax")):
            try:
                call()
            except ValueError as exc:
                print(exc)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=ENV, timeout=300)
    lines = r.stdout.strip().splitlines()
    assert r.returncode == 0 and len(lines) == 3, r.stdout + r.stderr
    assert all('pip install "dropout_stats[jax]"' in line for line in lines), lines


# -- explain: huge --units, fast, no array of --units elements ---------------------------------
def _limited(max_bytes):
    def limit():
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (max_bytes, max_bytes))

    return limit


@pytest.mark.parametrize(
    "units, words",
    [
        ("1e9", "Binomial(1000000000, 0.2)"),
        ("1_000_000_000_000", "Binomial(1000000000000, 0.2)"),
        ("1e16", "normal approximation"),
        ("1e18", "mean 200000047683715820.312 zeros"),
        (str(2**63 - 1), "Binomial(9223372036854775807, 0.2)"),
    ],
)
def test_explain_huge_units_is_fast_and_small(tmp_path, units, words):
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "dropout_stats", "explain", "--units", units, "--rate", "0.2"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=ENV,
        timeout=120,
        preexec_fn=_limited(3 << 30),  # an array of 1e9 float64 alone is 8 GB
    )
    assert r.returncode == 0, r.stderr
    assert words in r.stdout and "zeros  probability" not in r.stdout  # no per-count table
    assert "MemoryError" not in r.stderr and time.perf_counter() - t0 < 60
    assert max(len(line) for line in r.stdout.splitlines()) <= 100


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--units", "1e19"], "units (10000000000000000000) must be <= 2**63 - 1"),
        (["--units", "1e999999999"], "units (1e999999999) must be below 1e300"),
        (["--units", "1.5"], "units (1.5) must be an integer"),
        (["--units", "inf"], "units (inf) must be an integer"),
        (["--units", "1e9", "--observed", "2e9"], "observed (2000000000) must be <= units (1000000000)"),
        (["--units", "32", "--observed", "nan"], "observed (nan) must be an integer"),
    ],
)
def test_explain_refuses_units_it_cannot_count(tmp_path, args, fragment):
    r = run("explain", *args, "--rate", "0.2", cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and fragment in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert r.seconds < 30


def test_explain_huge_units_with_observed_and_plot(tmp_path):
    png = tmp_path / "e.png"
    r = subprocess.run(
        [sys.executable, "-m", "dropout_stats", "explain", "--units", "1e9", "--rate", "0.2"]
        + ["--observed", "200010000", "--plot", str(png)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=ENV,
        timeout=300,
        preexec_fn=_limited(3 << 30),
    )
    assert r.returncode == 0, r.stderr
    assert "200010000 zeros out of 1000000000 is consistent with rate 0.2" in r.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_zeros_matches_the_exact_distribution():
    """The counts explain prints without an array: the mode by formula equals the argmax of the
    pmf, and past scipy's range the approximation stays within a few counts of it."""
    import numpy as np
    import scipy
    from scipy import stats

    if tuple(int(v) for v in scipy.__version__.split(".")[:2]) < (1, 16):
        pytest.skip(
            f"scipy {scipy.__version__}: binom.ppf near 1e15 trials differs from the normal limit by 1e5 counts "
            "at p = 0.5 (measured with 1.15.3 in tox tf212); which is off is not settled"
        )

    from dropout_stats.cli.explain import Zeros

    for n in (1, 2, 4, 5, 9, 32, 100, 1001, 12345):
        for p in (0.0, 0.2, 0.2000000477, 0.25, 0.5, 0.75, 0.999, 1.0, 1 / 3):
            z = Zeros(n, p)
            assert z.mode() == int(np.argmax(stats.binom(n, p).pmf(np.arange(n + 1)))), (n, p)
            assert z.ppf(0.025) == stats.binom(n, p).ppf(0.025) and z.isf(0.025) == stats.binom(n, p).isf(0.025)
    n = 10**15  # the last n scipy does: compare with the approximation beyond it
    for p in (0.2, 0.5, 0.9, 2e-12):
        exact, approx = Zeros(n, p), Zeros(n, p)
        approx.exact = False
        approx.method, approx._dist = (
            ("Poisson", stats.poisson(n * min(p, 1 - p))) if min(p, 1 - p) * n < 1e4 else ("normal", None)
        )
        for q in (0.0005, 0.025, 0.5):
            # "within a few counts", as explain says
            assert abs(exact.ppf(q) - approx.ppf(q)) <= 2 and abs(exact.isf(q) - approx.isf(q)) <= 2, (p, q)


# -- the audit says where it is, and why it exits non-zero -------------------------------------
@pytest.mark.statistical(false_fail_rate=23 * 1e-9)  # 11 configurations, 6 layers, 3 recurrent, 3 attention
def test_audit_progress_through_every_section_and_the_exit_reason(tmp_path):
    old = tmp_path / "audit.json"
    old.write_text("{}")
    old.chmod(0o640)
    r = run(
        "audit",
        "--framework",
        "tensorflow",
        "--quick",
        "--dtypes",
        "float32",
        "--false-fail-rate",
        "1e-9",
        "--json",
        "audit.json",
        cwd=tmp_path,
        timeout=600,
    )
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    progress = [line for line in r.stderr.splitlines() if line.startswith("[")]
    for head in ("[setup 1/1]", "[1/11]", "[11/11]", "[recompute 1/1]", "[layers 1/", "[facts 1/1]"):
        assert any(line.startswith(head) for line in progress), (head, progress)
    import keras

    if keras.backend.backend() == "tensorflow":
        for head in ("[recurrent 3/3]", "[attention 3/3]"):
            assert any(line.startswith(head) for line in progress), (head, progress)
    seconds = [float(line.split("]")[1].split("s ")[0]) for line in progress]
    assert seconds == sorted(seconds)  # one clock through every section
    data = json.loads(old.read_text())
    assert data["facts"] and stat.S_IMODE(old.stat().st_mode) == 0o640
    last = r.stdout.rstrip().splitlines()[-1]
    if r.returncode == 1:  # Keras 3 draws the same masks on every replica: the replicas check fails
        assert last.startswith("exit 1: ") and len(last) <= 100, last
        assert "layers failed (replicas" in last, last
        assert "replicas:" in r.stdout and "p = " in r.stdout  # each failed check with its numbers
    else:
        assert r.returncode == 0 and last == "wrote audit.json", (r.returncode, last)


def test_sigterm_mid_audit(tmp_path):
    old = tmp_path / "audit.json"
    old.write_text('{"previous": "audit"}')
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dropout_stats",
            "audit",
            "--framework",
            "tensorflow",
            "--quick",
            "--json",
            "audit.json",
        ],
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    seen = []
    for line in proc.stderr:  # wait for the first configuration to finish
        seen.append(line)
        if line.startswith("[1/"):
            break
        assert time.monotonic() < deadline, seen
    proc.send_signal(signal.SIGTERM)
    out, rest = proc.communicate(timeout=120)
    err = "".join(seen) + rest
    assert proc.returncode == 143, (proc.returncode, err[-3000:])
    said = [line for line in err.splitlines() if line.startswith("dropout-stats")]
    assert len(said) == 1 and said[0].startswith("dropout-stats: terminated (SIGTERM); in the configurations"), err
    assert "--json audit.json not written (the previous file is unchanged)" in said[0]
    assert err.rstrip().splitlines()[-1] == said[0] and "Traceback" not in err
    assert old.read_text() == '{"previous": "audit"}' and temporaries(tmp_path) == []


@pytest.mark.parametrize("command", ["audit", "verify"])
def test_a_rate_no_sample_size_can_test_is_refused_before_any_framework(tmp_path, command):
    args = [command, "--rate", "1e-12"] + (["userdrop:good"] if command == "verify" else [])
    r = run_main(args, cwd=tmp_path)
    assert r.returncode == 2 and "--rate (1e-12): testing keep 0.999999999999" in r.stderr, r.stderr
    assert "tensorflow" not in r.loaded
