"""Everything a finished suite run leaves for people and CI, from the saved results: an
incident report per experiment, the suite page (Markdown and HTML) linking to them,
JUnit XML, and (for a live run) an entry in the history with the trend against it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from testbed.errors import TestbedError
from testbed.report.history import (
    HISTORY_FILE,
    Regression,
    append_history,
    load_history,
    trend,
)
from testbed.report.junit import write_junit
from testbed.report.render import (
    ExperimentReport,
    build_report,
    experiments_in,
    write_files,
)
from testbed.report.verdicts import SUMMARY_FILE, load_verdicts, suite_summary

OUTCOMES_FILE = "outcomes.json"
INDEX_HTML = "index.html"
_ENV = jinja2.Environment(loader=jinja2.PackageLoader("testbed.report", "templates"),
                          autoescape=jinja2.select_autoescape(["html"]))


class ReportError(TestbedError):
    """The reports cannot be written from what was saved (verdicts without runs)."""


@dataclass
class SuiteReport:
    index: Path
    summary: Path
    junit: Path
    experiments: list[ExperimentReport] = field(default_factory=list)
    regressions: list[Regression] = field(default_factory=list)


def save_outcomes(report_dir: Path, outcomes: dict[str, str]) -> None:
    (report_dir / OUTCOMES_FILE).write_text(json.dumps(outcomes, indent=1, sort_keys=True))


def load_outcomes(report_dir: Path) -> dict[str, str]:
    path = report_dir / OUTCOMES_FILE
    return dict(json.loads(path.read_text())) if path.exists() else {}


def write_reports(report_dir: Path, record_history: bool = False) -> SuiteReport:
    """Write every report from what is saved under ``report_dir``. With
    ``record_history`` (a live run) the verdicts are appended to the history first, and
    the trend is checked against it either way when a history exists."""
    verdicts = load_verdicts(report_dir)
    outcomes = load_outcomes(report_dir)
    reports = []
    recorded = set(verdicts["experiment"])
    saved = set(experiments_in(report_dir))
    unsaved = sorted(recorded - saved)
    if unsaved:  # a report that cannot be written is an error, not silence
        raise ReportError(f"experiment(s) {unsaved} recorded verdicts but saved no runs "
                          f"under {report_dir / 'runs'}; keep each trial with "
                          "Experiment.keep / trial / paired (they save under the "
                          "experiment's name)")
    for experiment in sorted(saved & recorded):  # runs without verdicts: another session's
        report = build_report(report_dir, experiment, verdicts)
        write_files(report_dir, report)
        reports.append(report)
    if record_history:
        append_history(report_dir, verdicts)
    regressions = trend(load_history(report_dir / HISTORY_FILE))
    links = {r.name: f"{r.name}/report.md" for r in reports}
    summary = report_dir / SUMMARY_FILE
    summary.write_text(suite_summary(verdicts, outcomes, links))
    held = int(verdicts["passed"].sum()) if len(verdicts) else 0
    aborted = sum(1 for outcome in outcomes.values() if outcome.startswith("aborted"))
    index = report_dir / INDEX_HTML
    index.write_text(_ENV.get_template("suite.html.j2").render(
        headline=f"{held} of {len(verdicts)} hypotheses hold across {len(reports)} "
                 "experiments." + (f" {aborted} test(s) ABORTED (the testbed failed; no "
                                   "verdict, see summary.md)." if aborted else ""),
        reports=reports, regressions=regressions))
    junit = write_junit(report_dir, verdicts, outcomes)
    return SuiteReport(index, summary, junit, reports, regressions)
