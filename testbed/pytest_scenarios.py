"""Scenario files as pytest tests: ``scenarios/**/*.toml`` collected beside the Python
experiments, with the same reports, JUnit cases and history rows.

A file is one experiment (named after the file, or its ``[scenario] name``): its trials
run once, on the first of its tests, and each topology's hypotheses are one test, each
negative control another. A file that is wrong fails its collection with the
ScenarioError that names the field, before anything starts.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.runtime import Runtime
from testbed.scenario import Experiment, Results
from testbed.scenario.spec import ControlSpec, Scenario, load_scenario

SCENARIOS_DIR = "scenarios"


def is_scenario_file(path: Path, named: bool = False) -> bool:
    """A .toml file under a scenarios/ folder, or ``named`` on the command line, that is
    not a topology file (a file that does not parse is collected, so its error shows)."""
    if path.suffix != ".toml" or not (named or SCENARIOS_DIR in path.parts):
        return False
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return True
    return "services" not in data or "hypotheses" in data or "scenario" in data


class ScenarioFile(pytest.File):
    """One scenario file: its trials, run once, and its tests."""

    runtime: Callable[[], Runtime]
    report_dir: Path

    def setup_runtime(self, runtime: Callable[[], Runtime], report_dir: Path) -> None:
        self.runtime, self.report_dir = runtime, report_dir
        self._results: Results | None = None
        self._error: BaseException | None = None

    def collect(self) -> Iterator[pytest.Item]:
        self.scenario = load_scenario(self.path)
        for topology in self.scenario.topologies:
            if any(h.topology == topology.name for h in self.scenario.hypotheses):
                yield ScenarioItem.from_parent(self, name=topology.name,
                                               topology=topology.name, control=None)
        for index, control in enumerate(self.scenario.controls):
            yield ScenarioItem.from_parent(self, name=f"negative_control_{index}_on_"
                                           f"{control.on}", topology=control.on,
                                           control=control)

    @property
    def experiment(self) -> Experiment:
        return Experiment(self.scenario.name, self.runtime(), self.report_dir,
                          self.scenario.title)

    def results(self) -> Results:
        """The trials, run on first use; a failure is every test's failure."""
        if self._error is not None:
            raise self._error
        if self._results is None:
            scenario: Scenario = self.scenario
            try:
                self._results = self.experiment.paired(
                    scenario.topologies, scenario.profile, scenario.faults,
                    concurrent=scenario.concurrent, model=scenario.model,
                    **scenario.trial_options)
            except BaseException as exc:
                self._error = exc
                raise
        return self._results


class ScenarioItem(pytest.Item):
    def __init__(self, *, topology: str, control: ControlSpec | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.topology, self.control = topology, control
        self.add_marker(pytest.mark.experiment)
        self.add_marker(pytest.mark.scenario)

    @property
    def file(self) -> ScenarioFile:
        assert isinstance(self.parent, ScenarioFile)
        return self.parent

    def runtest(self) -> None:
        results = self.file.results()
        scenario, experiment = self.file.scenario, self.file.experiment
        if self.control is None:
            experiment.check(scenario.judge(results, self.topology, results.model))
            return
        on_model = (scenario.control(results.model, self.control, results.model)
                    if self.control.on in results.model else None)
        experiment.negative_control(scenario.control(results, self.control, results.model),
                                    *self.control.hypotheses, model=on_model)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"scenario {self.file.scenario.name}: {self.name}"
