"""The testbed's pytest plugin (registered through the pytest11 entry point).

Thin over the library: ``testbed_runtime`` is one opened runtime per test session
(per xdist worker: each worker has its own run id, broker, Toxiproxy and ports), and
``deploy`` brings topologies up for one test and tears them down after it, also when
the test fails; ``experiment`` is the test module's experiment (testbed.scenario), and
scenario files under scenarios/ are collected as tests (testbed.pytest_scenarios). At
the end of the session the reports are written from what the experiments saved.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from testbed.errors import ExperimentAborted
from testbed.pytest_scenarios import ScenarioFile, is_scenario_file
from testbed.report.suite_report import save_outcomes, write_reports
from testbed.report.verdicts import VERDICTS_DIR
from testbed.runtime import RUNTIMES, Deployment, Runtime, get_runtime
from testbed.scenario import Experiment
from testbed.topology import Topology

_OUTCOMES = pytest.StashKey[dict[str, str]]()
ABORTED = "testbed_aborted"  # user property carrying an aborted test's reason to the controller


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("testbed", "chaos testbed")
    group.addoption("--runtime", default="local", choices=list(RUNTIMES),
                    help="runtime backend for deployments (default: local)")
    group.addoption("--report-dir", default="reports",
                    help="where experiment reports are written (default: reports/)")
    group.addoption("--tracing", action="store_true", default=False,
                    help="trace every deployment with OpenTelemetry to the run's own "
                         "Jaeger; traced runs keep their spans (spans.csv) and the reports "
                         "draw one order's trace (local runtime only)")


_CONFIG: list[pytest.Config] = []  # the session's config, for the report hooks


def _controller(config: pytest.Config) -> bool:
    """True in the process that runs the session (not in a pytest-xdist worker)."""
    return not hasattr(config, "workerinput")


def _report_dir(config: pytest.Config) -> Path:
    return Path(config.getoption("--report-dir"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "experiment: a chaos experiment with hypotheses")
    config.addinivalue_line("markers", "scenario: a test collected from a scenario file")
    _CONFIG[:] = [config]
    config.stash[_OUTCOMES] = {}
    if _controller(config):  # verdicts of an earlier session would mix into the summary
        shutil.rmtree(_report_dir(config) / VERDICTS_DIR, ignore_errors=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Mark a test whose testbed failed under it (ExperimentAborted) as aborted, so the
    summary and junit say "no verdict" instead of counting it as a failed hypothesis."""
    report: pytest.TestReport = yield
    if call.excinfo is not None and call.excinfo.errisinstance(ExperimentAborted):
        report.user_properties.append((ABORTED, str(call.excinfo.value)))
    return report


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if _CONFIG and (report.when == "call" or report.outcome != "passed"):
        aborted = dict(report.user_properties).get(ABORTED)
        _CONFIG[0].stash[_OUTCOMES][report.nodeid] = (f"aborted: {aborted}" if aborted
                                                      else report.outcome)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Close the runtime if a scenario file opened it, then write the reports (and a
    history entry) when any test recorded verdicts."""
    config = session.config
    close_shared_runtime(config)
    report_dir = _report_dir(config)
    aborted = any(o.startswith("aborted") for o in config.stash[_OUTCOMES].values())
    if not _controller(config) or not ((report_dir / VERDICTS_DIR).exists() or aborted):
        return
    report_dir.mkdir(parents=True, exist_ok=True)
    save_outcomes(report_dir, config.stash[_OUTCOMES])
    written = write_reports(report_dir, record_history=True)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"testbed: reports written: {written.index} "
                            f"({len(written.experiments)} experiments), {written.summary}, "
                            f"{written.junit}")
        for regression in written.regressions:
            reporter.write_line(f"testbed: REGRESSION: {regression}")


_RUNTIME = pytest.StashKey[list[Runtime]]()


def shared_runtime(config: pytest.Config) -> Runtime:
    """The session's one runtime (run id, broker, Toxiproxy), opened on first use by a
    test or a scenario file; closed when the session's fixtures end, or at its finish."""
    opened = config.stash.setdefault(_RUNTIME, [])
    if not opened:
        runtime = get_runtime(config.getoption("--runtime"))
        if config.getoption("--tracing"):
            if not hasattr(runtime, "tracing"):
                raise pytest.UsageError(f"--tracing: the {runtime.name} runtime cannot "
                                        "trace; use --runtime local")
            runtime.tracing = True
        runtime.open()
        opened.append(runtime)
    return opened[0]


def close_shared_runtime(config: pytest.Config) -> None:
    opened = config.stash.get(_RUNTIME, [])
    while opened:
        opened.pop().close()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if not is_scenario_file(file_path, named=parent.session.isinitpath(file_path)):
        return None
    collector = ScenarioFile.from_parent(parent, path=file_path)
    collector.setup_runtime(lambda: shared_runtime(parent.config), _report_dir(parent.config))
    return collector


@pytest.fixture(scope="session")
def testbed_runtime(request: pytest.FixtureRequest) -> Iterator[Runtime]:
    """One runtime (run id, broker, Toxiproxy) shared by the session's deployments."""
    try:
        yield shared_runtime(request.config)
    finally:
        close_shared_runtime(request.config)


@pytest.fixture(scope="module")
def experiment(request: pytest.FixtureRequest, testbed_runtime: Runtime) -> Experiment:
    """The test module's experiment: its trials and verdicts saved under its name
    (``test_e02_outage.py`` -> ``e02-outage``), where the report finds them."""
    return Experiment.for_module(request.module.__name__, testbed_runtime,
                                 _report_dir(request.config))


@pytest.fixture
def deploy(testbed_runtime: Runtime) -> Iterator[Callable[[Topology], Deployment]]:
    """Factory: ``deploy(topology)`` -> Deployment, torn down when the test ends."""
    deployments: list[Deployment] = []

    def _deploy(topology: Topology) -> Deployment:
        deployment = testbed_runtime.deploy(topology)
        deployments.append(deployment)
        return deployment

    yield _deploy
    errors = []
    for deployment in reversed(deployments):
        try:
            deployment.close()
        except Exception as exc:
            errors.append(f"{deployment.id}: {exc}")
    if errors:
        pytest.fail("teardown failed: " + "; ".join(errors))
