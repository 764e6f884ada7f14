"""The model-vs-measured table: kinds, sources, the worst miss, loose bounds."""

from __future__ import annotations

import math

import pandas as pd

from testbed.report.agreement import agreement, agreement_markdown, summary


def history() -> pd.DataFrame:
    rows = []
    for run, (backlog, errors, drained) in enumerate([(61, 60, 0.5), (60, 59, 0.49),
                                                      (66, 61, 0.6)]):
        base = {"run": f"r{run}", "test": "experiments/test_e02_outage.py::t", "title": "E2"}
        rows += [
            {**base, "name": "backlog peak", "predicted": 65, "measured": backlog,
             "tolerance_text": "± 15%", "passed": True, "source": "model"},
            {**base, "name": "edge errors", "predicted": 60, "measured": errors,
             "tolerance_text": "± max(15%, 2 orders)", "passed": True, "source": "model"},
            {**base, "name": "lost", "predicted": 0, "measured": 0,
             "tolerance_text": "exact", "passed": True, "source": "model"},
            {**base, "name": "drained within", "predicted": 20, "measured": drained,
             "tolerance_text": "upper bound", "passed": True, "source": ""},
            {**base, "name": "alert", "predicted": "", "measured": "",
             "tolerance_text": "must not happen", "passed": True, "source": ""}]
    return pd.DataFrame(rows)


def test_each_hypothesis_over_the_runs() -> None:
    rows = {r.name: r for r in agreement(history(), runs=3)}
    peak = rows["backlog peak"]
    assert (peak.kind, peak.source, peak.runs, peak.held) == ("point", "model", 3, 3)
    assert (peak.measured, peak.low, peak.high) == (61, 60, 66)
    assert math.isclose(peak.worst, 5 / 65) and peak.agrees
    assert rows["lost"].kind == "exact" and rows["lost"].agrees
    bound = rows["drained within"]
    assert bound.kind == "upper bound" and bound.source == "hand"
    assert math.isclose(bound.looseness, 20 / 0.49)
    assert rows["alert"].kind == "never" and not rows["alert"].quantitative


def test_the_catalog_figures_and_the_table() -> None:
    rows = agreement(history(), runs=2)  # the last two runs only
    assert rows[0].runs == 2
    figures = summary(rows)
    assert figures == {"hypotheses": 5, "quantitative": 4, "model_points": 3, "agree": 3,
                       "held_every_run": 3, "bounds": 1, "loose_bounds": 1}
    text = agreement_markdown(rows, 2)
    assert "3 (75%) are point predictions from the model" in text
    assert "| drained within | upper bound | hand | 20 |" in text
    assert "### e02-outage" in text
