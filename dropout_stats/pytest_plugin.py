"""pytest plugin: fixed seeds, one false-fail budget for the run, and a summary of every dropout
assertion.  Registered through the ``pytest11`` entry point; imports only the standard library
and pytest, since pytest loads it in every project that installs dropout-stats.

* ``--dropout-stats-seed=N|last``: the base seed (default 0; ``last`` reuses the previous run's).
  Each test gets base + crc32(node id); the header prints the base so any failure replays.
  Under pytest-xdist the controller hands the base to the workers (``workerinput``), so
  ``-n auto`` and ``-n 0`` give the same seeds and verdicts.
* ``--dropout-stats-false-fail-rate=A``: the run's total false-fail budget (default 1e-6), split
  evenly across the tests that use the ``dropout_verifier`` fixture.
* fixtures: ``dropout_seed`` (int), ``dropout_verifier`` (verify() with this test's share).
* a terminal summary lists every dropout assertion made through ``dropout_stats.testing``.
"""

from __future__ import annotations

import zlib

import pytest

_KEY = "dropout_stats"
_CACHE_KEY = "dropout_stats/seed"


def pytest_addoption(parser):
    group = parser.getgroup("dropout_stats", "dropout-stats: seeds and error budget of dropout assertions")
    group.addoption(
        "--dropout-stats-seed",
        action="store",
        default="0",
        metavar="N|last",
        help="base seed for dropout assertions (default 0; 'last' reuses the previous run's)",
    )
    group.addoption(
        "--dropout-stats-false-fail-rate",
        action="store",
        default="1e-6",
        metavar="A",
        help="total false-fail rate of this run's dropout assertions (default 1e-6)",
    )


def _parse_seed(config) -> int:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and _KEY + "_seed" in workerinput:
        return int(workerinput[_KEY + "_seed"])
    raw = config.getoption("--dropout-stats-seed")
    if raw == "last":
        cache = getattr(config, "cache", None)
        cached = cache.get(_CACHE_KEY, None) if cache is not None else None
        if cached is None:
            raise pytest.UsageError("--dropout-stats-seed=last: no previous run recorded a seed")
        return int(cached)
    try:
        value = int(raw)
    except ValueError:
        raise pytest.UsageError(f"--dropout-stats-seed ({raw}) must be an integer or 'last'") from None
    if not 0 <= value < 2**31:
        raise pytest.UsageError(f"--dropout-stats-seed ({value}) must be in [0, 2**31)")
    return value


def _parse_budget(config) -> float:
    raw = config.getoption("--dropout-stats-false-fail-rate")
    try:
        value = float(raw)
    except ValueError:
        raise pytest.UsageError(f"--dropout-stats-false-fail-rate ({raw}) must be a number") from None
    if not 0 < value < 1:
        raise pytest.UsageError(f"--dropout-stats-false-fail-rate ({value}) must be in (0, 1)")
    return value


class _State:
    def __init__(self, seed: int, budget: float):
        self.seed = seed
        self.budget = budget
        self.users = 0  # tests that draw on the budget
        self.records = []  # (nodeid, record) gathered for the summary


def pytest_configure(config):
    state = _State(_parse_seed(config), _parse_budget(config))
    config.stash[_STATE] = state
    cache = getattr(config, "cache", None)
    if cache is not None and getattr(config, "workerinput", None) is None:
        cache.set(_CACHE_KEY, state.seed)


_STATE = pytest.StashKey[_State]()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """xdist controller: hand the base seed to each worker."""
    node.workerinput[_KEY + "_seed"] = node.config.stash[_STATE].seed


def pytest_report_header(config):
    s = config.stash[_STATE]
    return (
        f"dropout-stats: base seed {s.seed} (rerun with --dropout-stats-seed={s.seed}), "
        f"false-fail budget {s.budget:g} per run"
    )


def pytest_collection_modifyitems(session, config, items):
    state = config.stash[_STATE]
    state.users = sum(1 for item in items if "dropout_verifier" in getattr(item, "fixturenames", ()))


def seed_for(base: int, nodeid: str) -> int:
    return (base + zlib.crc32(nodeid.encode())) % (2**31 - 1)


@pytest.fixture
def dropout_seed(request) -> int:
    """This test's seed: the run's base seed plus a stable hash of the node id."""
    value = seed_for(request.config.stash[_STATE].seed, request.node.nodeid)
    request.node.user_properties.append((_KEY + "_seed", value))
    return value


@pytest.fixture
def dropout_verifier(request, dropout_seed):
    """verify() bound to this test's seed and its share of the run's false-fail budget."""
    state = request.config.stash[_STATE]
    share = state.budget / max(1, state.users)
    request.node.user_properties.append((_KEY + "_share", share))

    def run(fn, **kwargs):
        __tracebackhide__ = True
        from dropout_stats.testing import assert_dropout

        kwargs.setdefault("seed", dropout_seed)
        kwargs.setdefault("false_fail_rate", share)
        return assert_dropout(fn, **kwargs)

    run.false_fail_rate = share
    run.seed = dropout_seed
    return run


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if call.when != "call":
        return
    import sys

    testing = sys.modules.get("dropout_stats.testing")
    records = testing.drain_records() if testing is not None else []
    for r in records:
        if not r.get("passed") and report.passed:  # the test expected the assertion to fail
            r = dict(r, expected_failure=True)
        report.user_properties.append((_KEY, r))
    if report.failed:
        seeds = [v for k, v in item.user_properties if k == _KEY + "_seed"]
        shares = [v for k, v in item.user_properties if k == _KEY + "_share"]
        if seeds:
            base = item.config.stash[_STATE].seed
            # run alone, the test would get the whole budget: the replay pins its share of this run
            pin = f" --dropout-stats-false-fail-rate={shares[0]!r}" if shares else ""
            report.sections.append(
                (_KEY, f"seed {seeds[0]} (base {base}); replay with --dropout-stats-seed={base}{pin} {item.nodeid}")
            )


def pytest_runtest_logreport(report):
    # runs on the controller under xdist, with user_properties sent from the workers
    if report.when != "call":
        return
    state = _CONFIG_STATE.get("state")
    if state is None:
        return
    for key, value in report.user_properties:
        if key == _KEY:
            state.records.append((report.nodeid, value))


_CONFIG_STATE: dict = {}


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session):
    _CONFIG_STATE["state"] = session.config.stash[_STATE]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    state = config.stash[_STATE]
    if not state.records:
        return
    tr = terminalreporter
    tr.section("dropout-stats assertions")
    tr.line(f"base seed {state.seed}; false-fail budget {state.budget:g} per run")
    expected = sum(1 for _, r in state.records if r.get("expected_failure"))
    if expected:
        tr.line(
            f"FAIL (expected) marks {expected} assertion(s) that failed inside a test that expected it to "
            "(pytest.raises): the test passed"
        )
    for nodeid, r in sorted(state.records, key=lambda x: x[0]):
        status = "PASS" if r.get("passed") else "FAIL (expected)" if r.get("expected_failure") else "FAIL"
        tr.line(
            f"{status} {nodeid} {r.get('what', '')}: "
            f"n={r.get('n')} observed={r.get('observed')} interval={r.get('interval')} "
            f"p={r.get('pvalue')} level={r.get('level')}"
        )
