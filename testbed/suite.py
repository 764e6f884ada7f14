"""Running the experiment suite from the command line (``testbed run``).

The experiments are pytest modules and scenario files, so the suite is a pytest session:
the flagship set (``-m flagship``) by default, the whole catalog (experiments/ and
scenarios/) with ``--all``, or the scenario files named, in parallel workers
(pytest-xdist, one experiment's tests on one worker), with the suite summary written by
the pytest plugin at the end.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from testbed.errors import TestbedError
from testbed.report.verdicts import SUMMARY_FILE
from testbed.scenario.spec import load_scenario

EXPERIMENTS_DIR = "experiments"
SCENARIOS_DIR = "scenarios"


@dataclass(frozen=True)
class SuiteRun:
    """What ``testbed run`` was asked to do."""

    everything: bool = False  # the whole catalog, not only the flagship experiments
    workers: int = 1
    report_dir: Path = Path("reports")
    runtime: str = "local"
    select: str | None = None  # a pytest -k expression
    files: tuple[Path, ...] = ()  # scenario files to run instead of the catalog


def find_experiments(start: Path) -> Path:
    """The experiments/ folder of the project checkout at or above ``start``."""
    for folder in (start, *start.parents):
        candidate = folder / EXPERIMENTS_DIR
        if (candidate / "conftest.py").exists():
            return candidate
    raise TestbedError(f"no {EXPERIMENTS_DIR}/ folder at or above {start}: run `testbed run` "
                       "from the project checkout (where the README is)")


def pytest_argv(run: SuiteRun, experiments: Path) -> list[str]:
    if run.files:
        targets = [str(f.resolve()) for f in run.files]
    else:
        scenarios = experiments.parent / SCENARIOS_DIR
        targets = [str(experiments)] + ([str(scenarios)] if run.everything
                                        and scenarios.is_dir() else [])
    # testbed.suite_progress shows each experiment as it runs (pytest's letters blanked,
    # and the classic style: no [ 40%] column filled in beside them).
    argv = [sys.executable, "-m", "pytest", *targets, "-p", "no:cacheprovider",
            "-p", "testbed.suite_progress", "-o", "console_output_style=classic",
            "-q", "--report-dir", str(run.report_dir.resolve()), "--runtime", run.runtime]
    if run.workers > 1:  # one experiment's trials run once: all its tests on one worker
        argv += ["-n", str(run.workers), "--dist", "loadscope"]
    if not run.everything and not run.files:
        argv += ["-m", "flagship"]
    if run.select:
        argv += ["-k", run.select]
    return argv


def run_suite(run: SuiteRun) -> int:
    """Run the suite; print the summary; pytest's exit status (0: every verdict held)."""
    for path in run.files:  # every mistake in a file is found before anything starts
        load_scenario(path)
    experiments = find_experiments(Path.cwd())
    status = subprocess.call(pytest_argv(run, experiments), cwd=experiments.parent)
    summary = run.report_dir / SUMMARY_FILE
    if summary.exists():
        print("\n" + summary.read_text())
        print(f"summary: {summary}; results: {run.report_dir / 'runs'}")
    return status
