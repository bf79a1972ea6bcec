"""dropout-stats calibrate on Dask and through a store: a real LocalCluster of two worker processes
gives the serial result byte for byte, and a run killed with SIGKILL resumes to the same result.

The target is a correct numpy dropout (no framework to load: each worker starts in about a
second), at 64x1024 so a run is short.  Everything is seeded: the records are a function of the
seeds, so these tests have no random verdict.
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

pytest.importorskip("distributed")

from dropout_stats.cli import main  # noqa: E402

MODULE = textwrap.dedent(
    """
    import numpy as np


    def dropout(x, rate, seed, noise_shape=None):
        keep = np.random.default_rng(seed).random(noise_shape or x.shape) >= rate
        return np.where(keep, x / (1 - rate), 0).astype(x.dtype)
    """
)
ARGS = ["calibrate", "--fn", "npdrop:dropout", "--no-backward", "--seed", "1000"]


@pytest.fixture
def folder(tmp_path, monkeypatch):
    (tmp_path / "npdrop.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _result(path) -> dict:
    """The JSON result without its timing: the part that must be identical."""
    d = json.loads(path.read_text())
    d.pop("timing")
    return d


def _bytes(path) -> str:
    return json.dumps(_result(path), indent=1)


def test_two_worker_processes_give_the_serial_result(folder, capsys):
    assert main([*ARGS, "--runs", "16", "--workers", "0", "--json", "serial.json"]) == 0
    t0 = time.perf_counter()
    code = main([*ARGS, "--runs", "16", "--workers", "2", "--chunk", "3", "--json", "dask.json", "--store", "d.db"])
    seconds = time.perf_counter() - t0
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    assert "on a local cluster (2 workers, 2 threads)" in out.out, out.out
    assert _bytes(folder / "serial.json") == _bytes(folder / "dask.json")
    d = _result(folder / "dask.json")
    assert d["runs"] == 16 and d["seeds"] == [1000, 1016] and d["checks"]
    with sqlite3.connect(folder / "d.db") as db:  # one row per run, seeds 1000..1015
        assert [s for (s,) in db.execute("SELECT seed FROM runs ORDER BY seed")] == list(range(1000, 1016))
    assert seconds < 60, seconds


def test_a_running_scheduler_gives_the_serial_result(folder, capsys):
    """--scheduler ADDRESS: a scheduler and two worker processes started apart from the command,
    as `dask scheduler` and `dask worker` would be."""
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        code = main([*ARGS, "--runs", "8", "--scheduler", cluster.scheduler_address, "--json", "remote.json"])
        assert code == 0, capsys.readouterr().err
    assert main([*ARGS, "--runs", "8", "--workers", "0", "--json", "serial.json"]) == 0
    assert f"on the scheduler at {cluster.scheduler_address} (2 workers, 2 threads)" in capsys.readouterr().out
    assert _bytes(folder / "remote.json") == _bytes(folder / "serial.json")


def test_more_runs_extend_a_store_and_any_split_gives_the_same_bytes(folder, capsys):
    """10 runs on one worker, then 16 on the same store (6 new) on two: the result is the
    serial result of 16."""
    assert main([*ARGS, "--runs", "10", "--workers", "1", "--store", "s.db"]) == 0
    assert main([*ARGS, "--runs", "16", "--workers", "2", "--store", "s.db", "--json", "grown.json"]) == 0
    assert "resuming: 10 of 16 runs already in s.db" in capsys.readouterr().err
    assert main([*ARGS, "--runs", "16", "--workers", "0", "--json", "serial.json"]) == 0
    assert _bytes(folder / "grown.json") == _bytes(folder / "serial.json")


def _stored(path) -> int:
    try:
        with sqlite3.connect(path, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_a_killed_run_resumes_without_losing_or_repeating_a_run(folder):
    """SIGKILL (no handler runs, nothing is flushed) after some runs are stored: the same command
    finishes the rest, and its result is the uninterrupted run's."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join(sys.path))
    command = [sys.executable, "-m", "dropout_stats", *ARGS, "--runs", "24", "--workers", "0", "--store", "k.db"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while _stored(folder / "k.db") < 4 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed: " + proc.stderr.read()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    before = _stored(folder / "k.db")
    assert 4 <= before < 24
    done = subprocess.run([*command, "--json", "resumed.json"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"resuming: {before} of 24 runs already in k.db" in done.stderr
    assert _stored(folder / "k.db") == 24
    assert json.loads((folder / "resumed.json").read_text())["timing"]["runs_now"] == 24 - before
    assert main([*ARGS, "--runs", "24", "--workers", "0", "--json", "whole.json"]) == 0
    assert _bytes(folder / "resumed.json") == _bytes(folder / "whole.json")


def test_a_store_of_other_settings_is_refused(folder, capsys):
    assert main([*ARGS, "--runs", "2", "--workers", "0", "--store", "o.db"]) == 0
    capsys.readouterr()
    assert main([*ARGS, "--runs", "2", "--workers", "0", "--store", "o.db", "--rate", "0.3"]) == 2
    err = capsys.readouterr().err
    assert "--store (o.db) holds runs of other settings (rate: 0.2 there, 0.3 here)" in err, err


@pytest.mark.parametrize("workers", ["0", "1"])
def test_no_tensorflow_start_up_lines_on_the_terminal(tmp_path, workers):
    """TensorFlow loads in this process (serial) or in a worker process (Dask) without
    TF_CPP_MIN_LOG_LEVEL set: stderr holds the progress lines and nothing else."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    done = subprocess.run(
        [sys.executable, "-m", "dropout_stats", "calibrate", "--runs", "2", "--workers", workers, "--no-backward"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "0 of 2: rate <=" in done.stdout
    noise = [line for line in done.stderr.splitlines() if not line.startswith("calibrate ")]
    assert noise == [], done.stderr
