"""The model against the measurements, over several runs: how many of the hypotheses'
numbers come from the model, and how close each lands (experiments/MODEL.md).

Read off the history (reports/history.csv, one row per hypothesis per run), so it is the
same numbers the verdicts judged: per hypothesis, its kind (a point prediction, a bound,
an exact count, "never"), where the prediction is from (the model or by hand), the
predicted and measured medians over the runs, the worst |measured / predicted - 1| of any
run, and in how many runs it held. A bound is flagged when it is looser than 3x the
measured value (it would hold were the mechanism several times off).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from testbed.analysis.hypotheses import MODEL, format_number
from testbed.report.verdicts import experiment_of

LOOSE = 3.0  # a bound looser than this many times the measured value says little
ZERO = 1e-9  # a prediction this small is zero (floating-point remains of a difference)
REL, SMALL = 0.15, 2.0  # a point prediction agrees within 15%, or 2 for small counts


@dataclass(frozen=True)
class Agreement:
    """One hypothesis over the runs."""

    experiment: str
    title: str
    name: str
    kind: str  # point | exact | upper bound | lower bound | never | text
    source: str  # model | hand
    runs: int
    held: int
    predicted: float  # median over the runs (a model's prediction can move with its draws)
    measured: float  # median
    low: float
    high: float
    worst: float  # the largest |measured / predicted - 1| (NaN where predicted is 0)
    worst_abs: float  # the largest |measured - predicted|
    looseness: float  # bounds: limit / measured (upper) or measured / limit (lower)
    counts: bool = False  # every predicted and measured value a whole number

    @property
    def quantitative(self) -> bool:
        return self.kind in ("point", "exact", "upper bound", "lower bound")

    @property
    def model_point(self) -> bool:
        return self.source == MODEL and self.kind in ("point", "exact")

    @property
    def agrees(self) -> bool:
        """Within 15% in every run, or 2 units for small counts (whole numbers); a flag or
        a text, equal in every run."""
        if math.isnan(self.predicted):
            return self.kind == "exact" and self.held == self.runs
        return (not math.isnan(self.worst) and self.worst <= REL) or (
            self.counts and self.worst_abs <= SMALL)


def _kind(tolerance: str, predicted: object) -> str:
    if tolerance in ("upper bound", "lower bound", "exact"):
        return tolerance
    if tolerance == "must not happen":
        return "never"
    return "point" if not math.isnan(_number(predicted)) else "text"


def _number(value: object) -> float:
    try:
        return float(str(value))
    except ValueError:
        return math.nan


def agreement(history: pd.DataFrame, runs: int = 5) -> list[Agreement]:
    """Every hypothesis of the last ``runs`` runs of the history."""
    names = list(dict.fromkeys(history["run"]))[-runs:]
    recent = history[history["run"].isin(names)].copy()
    recent["p"] = [_number(v) for v in recent["predicted"]]
    recent["m"] = [_number(v) for v in recent["measured"]]
    if "source" not in recent:
        recent["source"] = ""
    found = []
    for (test, title, name), group in recent.groupby(["test", "title", "name"], sort=False):
        kind = _kind(str(group["tolerance_text"].iloc[-1]), group["predicted"].iloc[-1])
        p, m = group["p"], group["m"]
        p = p.where(~(p.abs() <= ZERO), 0.0)  # a difference the model has at 0 (1e-16)
        ratio = [abs(b / a - 1) for a, b in zip(p, m, strict=True) if a and not math.isnan(a)]
        loose = ([a / b for a, b in zip(p, m, strict=True) if b > 0] if kind == "upper bound"
                 else [b / a for a, b in zip(p, m, strict=True) if a > 0]
                 if kind == "lower bound" else [])
        found.append(Agreement(
            experiment_of(str(test)), str(title), str(name), kind,
            MODEL if (group["source"] == MODEL).all() else "hand", len(group),
            int(group["passed"].sum()), float(p.median()), float(m.median()),
            float(m.min()), float(m.max()), max(ratio) if ratio else math.nan,
            float((m - p).abs().max()), max(loose) if loose else math.nan,
            bool(((p % 1 == 0) & (m % 1 == 0)).all())))
    return found


def summary(rows: list[Agreement]) -> dict[str, int]:
    """The issue's figures: quantitative hypotheses, how many are the model's point
    predictions, how many of those agree in every run, loose bounds."""
    quantitative = [r for r in rows if r.quantitative]
    points = [r for r in quantitative if r.model_point]
    return {"hypotheses": len(rows), "quantitative": len(quantitative),
            "model_points": len(points), "agree": sum(r.agrees for r in points),
            "held_every_run": sum(r.held == r.runs for r in points),
            "bounds": sum(r.kind.endswith("bound") for r in quantitative),
            "loose_bounds": sum(r.looseness > LOOSE for r in quantitative
                                if not math.isnan(r.looseness))}


def _show(value: float) -> str:
    return "" if math.isnan(value) else format_number(value)


def agreement_markdown(rows: list[Agreement], runs: int) -> str:
    """The table per experiment, after the catalog's figures."""
    figures = summary(rows)
    share = figures["model_points"] / figures["quantitative"] if figures["quantitative"] else 0
    lines = [f"{figures['hypotheses']} hypotheses over the last {runs} runs; "
             f"{figures['quantitative']} quantitative, of which {figures['model_points']} "
             f"({share:.0%}) are point predictions from the model and {figures['bounds']} "
             f"bounds ({figures['loose_bounds']} looser than {LOOSE:g}x the measured value). "
             f"{figures['agree']} of the {figures['model_points']} model predictions land "
             f"within {REL:.0%} (or {SMALL:g} for counts) of the measured value in every run; "
             f"{figures['held_every_run']} held within their own tolerance in every run.", ""]
    for experiment in dict.fromkeys(r.experiment for r in rows):
        lines += [f"### {experiment}", "",
                  "| hypothesis | kind | from | predicted | measured (median) | range | "
                  "worst \\|m/p - 1\\| | held |", "|---|---|---|---|---|---|---|---|"]
        for r in (r for r in rows if r.experiment == experiment):
            worst = (f"{r.worst:.1%}" if not math.isnan(r.worst)
                     else f"off by {format_number(r.worst_abs)}" if r.worst_abs else "exact")
            if r.kind.endswith("bound"):
                worst = f"{r.looseness:.1f}x loose" if not math.isnan(r.looseness) else "n/a"
            lines.append(f"| {r.name} | {r.kind} | {r.source} | {_show(r.predicted)} | "
                         f"{_show(r.measured)} | {_show(r.low)}-{_show(r.high)} | {worst} | "
                         f"{r.held}/{r.runs} |")
        lines.append("")
    return "\n".join(lines)
