"""The suite summary is built from verdict files, so it can be rebuilt without a rerun."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from testbed.analysis import Hypotheses, at_most, close_to
from testbed.errors import TestbedError
from testbed.report import load_verdicts, save_verdicts, suite_summary
from testbed.suite import SuiteRun, find_experiments, pytest_argv


def sample(title: str, measured: float) -> Hypotheses:
    hypotheses = Hypotheses(title)
    hypotheses.check(close_to("backlog peak", 100, measured, rel=0.2, unit="messages"))
    hypotheses.check(at_most("edge errors", 0, 0, unit="orders"))
    return hypotheses


def test_summary_lists_every_verdict_with_predicted_and_measured(tmp_path: Path) -> None:
    save_verdicts(tmp_path, "experiments/test_e02.py::test_async", sample("E2 async", 95))
    save_verdicts(tmp_path, "experiments/test_e01.py::test_sync", sample("E1 sync", 300))
    frame = load_verdicts(tmp_path)
    assert list(frame["test"].unique()) == ["experiments/test_e01.py::test_sync",
                                            "experiments/test_e02.py::test_async"]
    text = suite_summary(frame, {"a": "passed", "b": "failed"})
    assert "3 of 4 hypotheses hold across 2 tests" in text
    assert "| backlog peak | 100 (± 20%) | 300 | **does NOT hold** |" in text
    assert "| backlog peak | 100 (± 20%) | 95 | holds |" in text
    assert text.index("## e01") < text.index("## e02")
    assert "1 of 2 passed. Failed: b" in text


def test_summary_is_rebuilt_identically_from_the_files(tmp_path: Path) -> None:
    save_verdicts(tmp_path, "experiments/test_e03.py::test_dlq", sample("E3", 110))
    first = suite_summary(load_verdicts(tmp_path))
    assert "| backlog peak | 100 (± 20%) | 110 | holds |" in first
    assert suite_summary(load_verdicts(tmp_path)) == first
    assert suite_summary(load_verdicts(tmp_path / "nothing-here")).endswith(
        "No verdicts were recorded.\n")


def pairs(argv: list[str]) -> set[tuple[str, str]]:
    return set(itertools.pairwise(argv))


def test_suite_runs_flagship_by_default_and_everything_on_request(tmp_path: Path) -> None:
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    (experiments / "conftest.py").write_text("")
    (tmp_path / "deep").mkdir()
    assert find_experiments(tmp_path / "deep") == experiments
    flagship = pairs(pytest_argv(SuiteRun(), experiments))
    assert ("-m", "flagship") in flagship
    assert not any(a == "-n" for a, _ in flagship)  # one experiment at a time by default
    everything = pairs(pytest_argv(SuiteRun(everything=True, workers=2, select="e05"),
                                   experiments))
    assert ("-k", "e05") in everything and ("-n", "2") in everything
    assert ("-m", "flagship") not in everything


def test_suite_outside_a_checkout_says_where_to_run_it(tmp_path: Path) -> None:
    with pytest.raises(TestbedError, match="run `testbed run` from the project checkout"):
        find_experiments(tmp_path)
