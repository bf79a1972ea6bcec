"""Suite-wide rules: a false-fail budget for statistical tests, fixed seeds, quiet TensorFlow.

Every test whose verdict is random carries ``@pytest.mark.statistical(false_fail_rate=a)``;
collection fails if the rates of the collected tests add up to more than SUITE_FALSE_FAIL_BUDGET
(union bound: the whole run falsely fails with probability below it).  Seeds are fixed per test
(the plugin's base seed + crc32 of the node id), so any failure replays exactly; the plugin prints
the seed with the failure.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

pytest_plugins = ["pytester"]

SUITE_FALSE_FAIL_BUDGET = 1e-6

# Deterministic examples: a property test runs the same cases on every run and worker.
settings.register_profile(
    "dropout_stats",
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("mutation", parent=settings.get_profile("dropout_stats"), max_examples=25)
settings.load_profile(os.environ.get("DROPOUT_STATS_HYPOTHESIS", "dropout_stats"))


def _designed_rate(item) -> float:
    mark = item.get_closest_marker("statistical")
    if mark is None:
        return 0.0
    rate = mark.kwargs.get("false_fail_rate")
    if rate is None or not (0 < rate < 1):
        raise pytest.UsageError(f"{item.nodeid}: statistical mark needs false_fail_rate in (0, 1)")
    return float(rate)


def pytest_collection_modifyitems(session, config, items):
    total = sum(_designed_rate(item) for item in items)
    config._dropout_stats_suite_rate = (total, sum(1 for i in items if _designed_rate(i)))
    if total > SUITE_FALSE_FAIL_BUDGET:
        raise pytest.UsageError(
            f"statistical tests add up to a false-fail rate of {total:.3g} per run, over the "
            f"suite's budget of {SUITE_FALSE_FAIL_BUDGET:g}"
        )


def pytest_report_header(config):
    return (
        f"dropout_stats: statistical tests share a false-fail budget of {SUITE_FALSE_FAIL_BUDGET:g} per run "
        "(summed at collection; exceeding it is a usage error)"
    )


def _suite_rate_line(total, count) -> str:
    return (
        f"dropout_stats: {count} statistical tests, designed false-fail rate "
        f"{total:.3g} per run (budget {SUITE_FALSE_FAIL_BUDGET:g})"
    )


def pytest_report_collectionfinish(config, start_path, items):
    return _suite_rate_line(*getattr(config, "_dropout_stats_suite_rate", (0.0, 0)))


def pytest_sessionfinish(session):
    # under xdist the workers collect: each hands its sum to the controller
    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["dropout_stats_suite_rate"] = getattr(
            session.config, "_dropout_stats_suite_rate", (0.0, 0)
        )


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    rate = getattr(node, "workeroutput", {}).get("dropout_stats_suite_rate")
    if rate is not None:
        node.config._dropout_stats_suite_rate = tuple(rate)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if hasattr(config, "workerinput") or not hasattr(config, "_dropout_stats_suite_rate"):
        return
    if config.pluginmanager.hasplugin("xsession") or getattr(config.option, "numprocesses", None):
        terminalreporter.write_line(_suite_rate_line(*config._dropout_stats_suite_rate))


@pytest.fixture
def seed(dropout_seed) -> int:
    """This test's fixed seed: the project's own pytest plugin (base seed + crc32 of the node id),
    which also prints it, with the replay command, on any failure."""
    return dropout_seed


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    rate = _designed_rate(item)
    if report.failed and rate:
        report.sections.append(("dropout_stats", f"designed false-fail rate of this test: {rate:g}"))
