"""Executing a calibration's runs: serially in this process, or as Dask tasks on a cluster (a
``LocalCluster`` of worker processes, or the scheduler at ``--scheduler ADDRESS``).

Dask distributed rather than a pool of our own: it starts and watches worker processes, moves
tasks off a worker that died (a re-run task gives the same records: ``store.Store.add`` checks),
and the same code drives a laptop and a cluster of machines (``dask scheduler`` and ``dask worker
ADDRESS`` started by hand, by SSH, or by dask-jobqueue/dask-kubernetes).  Ray would do the same;
Dask is chosen because it is pure Python, installs from PyPI in seconds, and its ``as_completed``
is all this needs.

The seeds still to run are cut into chunks; a bounded window of chunks is in flight (a few per
worker thread), and each chunk's records are written to the store as it finishes, so memory does
not grow with the run count and a killed run loses at most the chunks in flight.  Which worker
ran a chunk, and in what order chunks finished, enters no record.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from .target import probe, run_seeds

# One single-threaded worker per core: TensorFlow's own thread pools (a core each by default)
# would have every worker's threads compete for every core.  Dask already sets OMP_NUM_THREADS=1
# (torch).  Thread counts change no record: the masks come from counter-based streams and the
# statistics are computed in numpy.
WORKER_ENV = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}


@dataclass
class Execution:
    """How the runs were executed (timing, not part of the result)."""

    engine: str  # "serial", "local cluster", "scheduler ADDRESS"
    workers: int
    threads: int


def dask_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("distributed") is not None


def machine_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def chunks(seeds: list, size: int):
    for i in range(0, len(seeds), size):
        yield seeds[i : i + size]


def run_serial(spec_json: str, seeds: list, store, progress, path_hint: str) -> Execution:
    """Every seed in this process, each stored as it finishes."""
    for seed in seeds:
        progress(store.add(run_seeds(spec_json, [seed], path_hint)))
    return Execution("serial", 1, 1)


def _client(workers: int | None, scheduler: str | None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # worker processes inherit it
    from dask.distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout="30s")
        except OSError as exc:
            raise ValueError(f"--scheduler ({scheduler}) could not be reached: {exc}") from None
        return client, None, f"the scheduler at {scheduler}"
    cluster = LocalCluster(
        n_workers=workers or machine_cores(),
        threads_per_worker=1,
        processes=True,
        env=WORKER_ENV,
        dashboard_address=":0",  # a free port: None still binds 8787 for the HTTP routes
        # a task's error reaches the client through its future; what the workers log besides is
        # noise, such as a heartbeat racing the scheduler's shutdown (an ERROR line on a loaded machine)
        silence_logs=logging.CRITICAL,
    )
    return Client(cluster), cluster, "a local cluster"


def run_dask(
    spec_json: str,
    seeds: list,
    store,
    progress,
    path_hint: str,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    chunk: int | None = None,
) -> Execution:
    """The seeds as Dask tasks; every worker first loads the target (an error there is a
    ValueError before any run)."""
    from dask.distributed import as_completed

    client, cluster, engine = _client(workers, scheduler)
    live: set = set()
    try:
        try:
            client.wait_for_workers(1, timeout=120)
        except OSError:  # TimeoutError
            raise ValueError(f"no worker joined {engine} within 120 s") from None
        nthreads = client.nthreads()
        probes = [client.submit(probe, spec_json, path_hint, workers=[w], pure=False) for w in nthreads]
        for error in client.gather(probes):
            if error:
                raise ValueError(f"loading the target on a worker: {error}")
        if cluster is not None:  # our own worker processes (never a shared cluster's)
            client.run(_exit_without_teardown)
        threads = sum(nthreads.values())
        size = chunk or max(1, min(50, -(-len(seeds) // (8 * threads))))
        todo = chunks(seeds, size)
        flow = as_completed()

        def submit(n: int) -> None:
            for part in _take(todo, n):
                fut = client.submit(run_seeds, spec_json, part, path_hint, pure=False)
                live.add(fut)
                flow.add(fut)

        submit(2 * threads + 2)
        for fut in flow:
            progress(store.add(fut.result()))
            live.discard(fut)
            fut.release()
            submit(1)
        return Execution(engine, len(nthreads), threads)
    finally:
        if live:
            client.cancel(list(live))
        client.close()
        if cluster is not None:
            cluster.close()


def _exit_without_teardown() -> None:
    """In a worker process of our LocalCluster: once the worker has closed (its results are the
    client's by then) and the interpreter exits, skip the interpreter's teardown of the loaded
    framework, which took 1.8 s of the 2 s the cluster took to close with TensorFlow loaded
    (measured on 2 cores).  An atexit handler registered last runs first."""
    import atexit

    atexit.register(os._exit, 0)


def _take(it, n: int) -> list:
    out = []
    for _ in range(n):
        try:
            out.append(next(it))
        except StopIteration:
            break
    return out
