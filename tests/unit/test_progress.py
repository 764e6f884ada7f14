"""Progress as a CI log sees it (no terminal): plain lines, one per event, no control
codes; and the suite's display fed by a real pytest session."""

from __future__ import annotations

import io

import pytest

from testbed import progress
from testbed.progress import Row, SuiteDisplay
from testbed.steps import logged, quiet
from testbed.suite_progress import experiment_of

pytest_plugins = ["pytester"]


def test_a_step_off_a_terminal_is_two_plain_lines(capsys: pytest.CaptureFixture[str]) -> None:
    with progress.step("RabbitMQ: apt-get install rabbitmq-server [Debian]"):
        pass
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "RabbitMQ: apt-get install rabbitmq-server [Debian] ..."
    assert lines[1].startswith("RabbitMQ: apt-get install rabbitmq-server [Debian]: done in ")
    assert lines[1].endswith(" s") and len(lines) == 2


def test_a_failed_step_says_so_and_raises(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(RuntimeError), progress.step("waiting for it", stderr=True):
        raise RuntimeError("no")
    said = capsys.readouterr()
    assert said.out == "" and said.err.splitlines()[-1].startswith("waiting for it: failed after")


def test_library_steps_are_quiet_or_plain_lines() -> None:
    with quiet("anything"):
        pass
    lines: list[str] = []
    with logged(lines.append)("build   testbed/service:abc"):
        pass
    assert lines[0] == "build   testbed/service:abc ..."
    assert lines[1].startswith("build   testbed/service:abc: done in ")


def test_the_suite_display_off_a_terminal_prints_events_and_a_table() -> None:
    out = io.StringIO()
    rows = [Row("e02_outage", "failed", 41.25, "1 failed, 2 passed")]
    display = SuiteDisplay(out, lambda: rows)
    display.start()  # no live display off a terminal
    display.event("e02_outage: running")
    display.close()
    text = out.getvalue()
    assert "\x1b" not in text
    assert text.splitlines()[0] == "e02_outage: running"
    assert any("e02_outage" in line and "failed" in line and "41.2" in line
               for line in text.splitlines()[1:])


def test_experiments_are_named_by_module_or_scenario_file() -> None:
    assert experiment_of("experiments/test_e02_outage.py::test_x[a]") == "e02_outage"
    assert experiment_of("scenarios/outage.toml::sync") == "outage.toml"


def test_the_suite_plugin_shows_each_experiment_and_a_closing_table(
        pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_e01_alpha="""
        def test_a(): pass
        def test_b(): pass
    """, test_e02_beta="""
        import pytest
        def test_c(): assert 1 == 2
        @pytest.mark.skip(reason="not here")
        def test_d(): pass
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p",
                                           "testbed.suite_progress", "-o",
                                           "console_output_style=classic", "-q")
    result.assert_outcomes(passed=2, failed=1, skipped=1)
    out = result.stdout.str()
    assert "\x1b" not in out
    lines = result.stdout.lines
    assert "e01_alpha: running" in lines and "e02_beta: running" in lines
    assert any(line.startswith("e01_alpha: passed in ") and line.endswith("(2 passed)")
               for line in lines)
    assert any(line.startswith("e02_beta: failed in ") for line in lines)
    result.stdout.fnmatch_lines(["*failed*test_c (call, *", "experiments",
                                 "*e01_alpha*passed*2 passed*", "*e02_beta*failed*"])
    assert not any(set(line) <= set(".sF") and line for line in lines), "pytest's letters"
