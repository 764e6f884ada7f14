"""The pytest plugin `testbed run` loads (``-p testbed.suite_progress``): each experiment
shown as running, passed or failed with its seconds as the suite goes, then a table.

An experiment is a test module or scenario file (its tests share one set of trials). In
the controlling process only: pytest-xdist forwards its workers' reports here. Pytest's
own progress letters are blanked (they would scribble over the live table); its failure
details and summary still print at the end. The display is testbed.progress's.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import pytest

from testbed.progress import Row, SuiteDisplay
from testbed.pytest_plugin import ABORTED

_OUT = pytest.StashKey[TextIO]()


@dataclass
class ExperimentProgress:
    """One experiment's tests as their reports come in."""

    name: str
    started: float
    expected: int | None = None  # from the collection; None: not known (ends at finish)
    outcomes: dict[str, str] = field(default_factory=dict)  # nodeid -> outcome
    ended: float | None = None

    def done(self) -> bool:
        return self.ended is not None

    def verdict(self) -> str:
        values = set(self.outcomes.values())
        if not self.done():
            return "running"
        for worst in ("aborted", "failed"):
            if worst in values:
                return worst
        return "skipped" if values == {"skipped"} else "passed"

    def tests(self) -> str:
        if not self.done():
            of = f" of {self.expected}" if self.expected else ""
            return f"{len(self.outcomes)}{of} done"
        counts: dict[str, int] = {}
        for outcome in self.outcomes.values():
            counts[outcome] = counts.get(outcome, 0) + 1
        return ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))

    def row(self) -> Row:
        seconds = (self.ended or time.monotonic()) - self.started
        return Row(self.name, self.verdict(), seconds, self.tests())


def experiment_of(nodeid: str) -> str:
    """``experiments/test_e02_outage.py::test_x`` -> ``e02_outage``; a scenario file keeps
    its file name."""
    name = Path(nodeid.split("::")[0]).name
    return name.removeprefix("test_").removesuffix(".py")


def outcome_of(report: pytest.TestReport) -> str | None:
    """A test's outcome from one phase's report; None while it is still undecided."""
    if dict(report.user_properties).get(ABORTED):
        return "aborted"
    if report.failed:
        return "failed"
    if report.skipped:
        return "skipped"
    return "passed" if report.when == "call" else None


class SuiteProgress:
    """Tracks experiments from pytest's report hooks and drives the display."""

    def __init__(self, out: TextIO) -> None:
        self.experiments: dict[str, ExperimentProgress] = {}
        self.expected: dict[str, int] = {}
        self.display = SuiteDisplay(out, self.rows)

    def rows(self) -> list[Row]:
        return [e.row() for e in list(self.experiments.values())]

    def collected(self, nodeids: Sequence[str]) -> None:
        if self.expected:
            return  # every xdist worker collects the same tests
        for nodeid in nodeids:
            name = experiment_of(nodeid)
            self.expected[name] = self.expected.get(name, 0) + 1

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: Sequence[str]) -> None:
        self.collected(ids)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.collected([item.nodeid for item in session.items])

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        name = experiment_of(nodeid)
        if name not in self.experiments:
            sys.stdout.flush()  # pytest's lines before ours
            self.experiments[name] = ExperimentProgress(name, time.monotonic(),
                                                        self.expected.get(name))
            self.display.event(f"{name}: running")
            self.display.start()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        experiment = self.experiments.get(experiment_of(report.nodeid))
        outcome = outcome_of(report)
        if experiment is None or outcome is None:
            return
        previous = experiment.outcomes.get(report.nodeid)
        if previous in ("aborted", "failed"):
            return  # a failed test's teardown does not make it pass
        experiment.outcomes[report.nodeid] = outcome
        if outcome != "passed" or report.when == "call":
            seconds = report.duration
            self.display.event(f"  {outcome:<8} {report.nodeid.split('::', 1)[-1]} "
                               f"({report.when}, {seconds:.1f} s)",
                               always=outcome in ("failed", "aborted"))

    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        experiment = self.experiments.get(experiment_of(nodeid))
        if experiment is None or experiment.expected is None:
            return
        if len(experiment.outcomes) >= experiment.expected and not experiment.done():
            self._end(experiment)

    def _end(self, experiment: ExperimentProgress) -> None:
        experiment.ended = time.monotonic()
        row = experiment.row()
        self.display.event(f"{row.name}: {row.verdict} in {row.seconds:.1f} s ({row.tests})")

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self) -> None:
        for experiment in self.experiments.values():
            if not experiment.done():
                self._end(experiment)
        self.display.close()

    @pytest.hookimpl(wrapper=True)
    def pytest_report_teststatus(self, report: pytest.TestReport
                                 ) -> Generator[None, Any, Any]:
        """Keep pytest's category (its closing counts) and blank its progress letter."""
        result = yield
        if result and report.when in ("setup", "call", "teardown"):
            category, _letter, word = result
            return category, "", word
        return result


def pytest_configure(config: pytest.Config) -> None:
    """Only in the process that runs the session, and writing to a copy of the real
    stdout: a refresh during a test would otherwise land in pytest's capture."""
    if hasattr(config, "workerinput"):
        return
    try:
        out: TextIO = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    except (AttributeError, OSError, ValueError):  # no real stdout (an in-process pytester)
        out = sys.stdout
    config.stash[_OUT] = out
    config.pluginmanager.register(SuiteProgress(out), "testbed-suite-progress")


def pytest_unconfigure(config: pytest.Config) -> None:
    out = config.stash.get(_OUT, None)
    if out is not None and out is not sys.stdout:
        out.close()
