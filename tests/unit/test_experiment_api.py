"""The experiment API's bookkeeping: names, verdicts under the experiment, negative
controls, and the report refusing verdicts it cannot pair with runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from testbed.analysis import Hypotheses, HypothesisFailed, equals
from testbed.report.suite_report import ReportError, write_reports
from testbed.report.verdicts import load_verdicts
from testbed.scenario import Experiment, ExperimentError, name_of_module

NO_RUNTIME: Any = None  # none of these calls deploys anything


def test_the_name_comes_from_the_module() -> None:
    assert name_of_module("experiments.test_e02_outage") == "e02-outage"
    assert name_of_module("test_my_first_check") == "my-first-check"
    with pytest.raises(ExperimentError, match="lower-case letters, digits and dashes"):
        Experiment("E2 Outage!", NO_RUNTIME, Path("reports"))


def test_verdicts_are_kept_under_the_experiment(tmp_path: Path) -> None:
    experiment = Experiment("my-check", NO_RUNTIME, tmp_path)
    claims = Hypotheses("a claim")
    claims.check(equals("orders lost", 0, 0))
    experiment.check(claims)
    verdicts = load_verdicts(tmp_path)
    assert list(verdicts["experiment"]) == ["my-check"]
    assert bool(verdicts["passed"].iloc[0])


def test_a_report_that_cannot_be_written_is_an_error(tmp_path: Path) -> None:
    """Verdicts recorded, no trial kept: no silent missing report."""
    experiment = Experiment("lonely", NO_RUNTIME, tmp_path)
    claims = Hypotheses("a claim")
    claims.check(equals("orders lost", 0, 0))
    experiment.record(claims)
    with pytest.raises(ReportError, match=r"\['lonely'\] recorded verdicts but saved no runs"):
        write_reports(tmp_path)


def test_a_negative_control_must_fail() -> None:
    experiment = Experiment("control", NO_RUNTIME, Path("unused"))
    failing = Hypotheses("mechanism off")
    failing.check(equals("edge errors", 0, 12))
    experiment.negative_control(failing, "edge errors")  # fails as it must: no error
    holding = Hypotheses("mechanism off, but the claim still holds")
    holding.check(equals("edge errors", 0, 0))
    with pytest.raises(HypothesisFailed, match="held on the control run"):
        experiment.negative_control(holding, "edge errors")
    with pytest.raises(ExperimentError, match="no hypothesis named"):
        experiment.negative_control(failing, "edge error")
    with pytest.raises(ExperimentError, match="name the hypotheses"):
        experiment.negative_control(failing)
