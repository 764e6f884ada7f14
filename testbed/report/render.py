"""Incident-style reports of one experiment, as Markdown (charts beside it as PNG files)
and as one self-contained HTML file (charts embedded), built only from saved results:
the runs under ``runs/<experiment>/`` and the verdicts under ``verdicts/``. So a report
rebuilt later from the same files is the same report.
"""

from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass
from pathlib import Path

import jinja2
import pandas as pd

from testbed.analysis.hypotheses import MODEL, format_number
from testbed.observe import RunResult
from testbed.report.charts import run_chart, waterfall_chart, waterfall_order
from testbed.report.incident import Incident, incident
from testbed.report.verdicts import load_verdicts

RUNS_DIR = "runs"
REPORT_MD, REPORT_HTML = "report.md", "report.html"
_ENV = jinja2.Environment(loader=jinja2.PackageLoader("testbed.report", "templates"),
                          autoescape=jinja2.select_autoescape(["html"]),
                          keep_trailing_newline=True)


@dataclass(frozen=True)
class VerdictRow:
    title: str
    name: str
    predicted: str
    measured: str
    passed: bool


@dataclass(frozen=True)
class ExperimentReport:
    name: str  # e.g. e05-retry-storm
    title: str
    summary: str
    incidents: list[Incident]
    verdicts: list[VerdictRow]
    follow_ups: list[str]
    charts: dict[str, bytes]
    model_note: str = ""  # the model and its calibration, where simulated runs are shown

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.verdicts)

    @property
    def verdict_line(self) -> str:
        failed = sum(not v.passed for v in self.verdicts)
        total = len(self.verdicts)
        if not total:
            return "no hypotheses recorded"
        return (f"all {total} hypotheses hold" if not failed
                else f"{failed} of {total} hypotheses do NOT hold")

    @property
    def chart_files(self) -> dict[str, str]:
        return {name: f"{name}.png" for name in self.charts}

    @property
    def chart_base64(self) -> dict[str, str]:
        return {name: base64.b64encode(png).decode() for name, png in self.charts.items()}


def title_of(experiment: str) -> str:
    """e05-retry-storm -> "E05 retry storm"; my-check -> "My check"."""
    code, _, words = experiment.partition("-")
    if re.fullmatch(r"[a-z]\d+", code) and words:
        return f"{code.upper()} {words.replace('-', ' ')}"
    return experiment.replace("-", " ").capitalize()


def experiments_in(report_dir: Path) -> list[str]:
    runs = report_dir / RUNS_DIR
    return sorted(p.name for p in runs.iterdir() if p.is_dir()) if runs.exists() else []


def load_runs(report_dir: Path, experiment: str) -> dict[str, RunResult]:
    base = report_dir / RUNS_DIR / experiment
    return {p.name: RunResult.load(p) for p in sorted(base.iterdir())
            if (p / "meta.json").exists()}


def _show(value: object) -> str:
    try:
        number = float(str(value))
    except ValueError:
        return str(value)
    return "n/a" if math.isnan(number) else format_number(number)


def verdict_rows(verdicts: pd.DataFrame, experiment: str) -> list[VerdictRow]:
    mine = verdicts[verdicts["experiment"] == experiment]
    return [VerdictRow(str(r.title), str(r.name),
                       ("model: " if getattr(r, "source", "") == MODEL else "") + _show(r.predicted)
                       + (f" ({r.tolerance_text})" if r.tolerance_text else ""),
                       _show(r.measured), bool(r.passed)) for r in mine.itertuples()]


def follow_ups(incidents: list[Incident], verdicts: list[VerdictRow]) -> list[str]:
    """What an incident review would ask for, from what the numbers show."""
    actions = []
    for i in incidents:
        if i.edge_errors and i.fault_start is not None and not i.backlog_peak:
            actions.append(f"{i.topology}: users saw {i.edge_errors} errors while a "
                           "dependency was impaired; bound the damage with timeouts and a "
                           "circuit breaker with a fallback, or put a queue in between.")
        if i.gave_up and not i.backlog_peak:
            actions.append(f"{i.topology}: on {i.gave_up} orders the user gave up waiting "
                           "while the chain kept working on them; pass the caller's "
                           "deadline down the chain and shed what cannot finish in time "
                           "(knobs deadline, deadline_reserve_ms): fast refusals, and the "
                           "capacity goes to orders that can still make it.")
        if not i.drained:
            actions.append(f"{i.topology}: the queue never drained; park what cannot be "
                           "processed (dead-letter queue, delivery limit) and alert on depth.")
        if i.detected is None and i.fault_start is not None and i.backlog_peak:
            actions.append(f"{i.topology}: nothing would have paged anyone; add a "
                           "queue-depth (or message-age) alert.")
        if i.lost:
            actions.append(f"{i.topology}: {i.lost} accepted orders were lost; publish "
                           "through a transactional outbox.")
        if i.duplicated:
            actions.append(f"{i.topology}: {i.duplicated} orders were processed twice; make "
                           "the consumer idempotent.")
    actions += [f"Hypothesis did not hold, investigate: {v.title}: {v.name} (predicted "
                f"{v.predicted}, measured {v.measured})." for v in verdicts if not v.passed]
    return actions or ["None: every hypothesis held and nothing was lost."]


MODEL_SUFFIX = "_model"  # a trial as the model simulated it, kept beside the measured one


def build_report(report_dir: Path, experiment: str,
                 verdicts: pd.DataFrame | None = None) -> ExperimentReport:
    everything = load_runs(report_dir, experiment)
    models = {k.removesuffix(MODEL_SUFFIX): r for k, r in everything.items()
              if k.endswith(MODEL_SUFFIX) and k.removesuffix(MODEL_SUFFIX) in everything}
    runs = {k: r for k, r in everything.items() if k.removesuffix(MODEL_SUFFIX) not in models
            or not k.endswith(MODEL_SUFFIX)}
    incidents = [incident(result, name) for name, result in runs.items()]
    rows = verdict_rows(load_verdicts(report_dir) if verdicts is None else verdicts,
                        experiment)
    faults = next((i.faults for i in incidents if i.faults), [])
    summary = ("; ".join(faults) + ": " if faults else "") + "; ".join(
        i.summary() for i in incidents) + "."
    if runs and all(r.meta.get("simulated") for r in runs.values()):
        summary = ("SIMULATED by the model (testbed.model), not measured: no trial ran. "
                   + summary)
    title_file = report_dir / RUNS_DIR / experiment / "title.txt"
    title = title_file.read_text().strip() if title_file.exists() else title_of(experiment)
    charts = {name: run_chart(result, f"{title}: {name}"
                              + (" (dashed: the model)" if name in models else ""),
                              models.get(name))
              for name, result in runs.items()}
    for name, result in runs.items():  # a traced run: one order's trace, as a waterfall
        if (order := waterfall_order(result)) is not None:
            charts[f"{name}-waterfall"] = waterfall_chart(result, order,
                                                          f"{title}: {name}, one order")
    return ExperimentReport(experiment, title, summary, incidents, rows,
                            follow_ups(incidents, rows), charts,
                            model_note([*models.values(), *runs.values()]))


def model_note(runs: list[RunResult]) -> str:
    """The model and the calibration behind a report's predictions (one line): the
    simulated runs' own, else what the measured runs kept of it."""
    simulated = [r for r in runs if r.meta.get("simulated") and "model" in r.meta]
    if simulated:
        model = simulated[0].meta["model"]
        made = ("Predicted by testbed.model before the run (SimPy, seed"
                if len(simulated) < len(runs) else "Simulated by testbed.model (SimPy, seed")
        return (f"{made} {model.get('seed')}); calibration: "
                f"{_constants(model.get('calibration', {}))}; "
                f"{model.get('calibration_source', 'defaults')}.")
    kept = next((r.meta["calibration"] for r in runs if "calibration" in r.meta), None)
    if kept is None:
        return ""
    return (f"The model's calibration on this runtime: {_constants(kept['constants'])}; "
            f"{kept['source']}.")


def _constants(constants: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in constants.items())


def _ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value * 1000:.0f} ms"


def _knobs_text(knobs: dict[str, object]) -> str:
    return "(" + ", ".join(f"{k}={v}" for k, v in knobs.items()) + ")"


def render(report: ExperimentReport, template: str) -> str:
    return _ENV.get_template(template).render(report=report, ms=_ms, knobs_text=_knobs_text)


def write_files(report_dir: Path, report: ExperimentReport) -> Path:
    """Write reports/<experiment>/report.md (+ PNGs) and report.html; returns the HTML."""
    out = report_dir / report.name
    out.mkdir(parents=True, exist_ok=True)
    for name, png in report.charts.items():
        (out / f"{name}.png").write_bytes(png)
    (out / REPORT_MD).write_text(render(report, "incident.md.j2"))
    (out / REPORT_HTML).write_text(render(report, "incident.html.j2"))
    return out / REPORT_HTML
