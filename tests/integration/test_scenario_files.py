"""A scenario file end to end, as a user runs it: `testbed run FILE.toml` runs its
trials, judges predictions made by the model before the run, and leaves the same
report, JUnit cases and history rows as a Python experiment."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.local_only

SCENARIO = """
[scenario]
title = "Payments unreachable, predicted by the model"
[topology]
shape = "paired"
depth = 2
[knobs]
timeout_s = 1.0
[load]
rate = 20
duration = 6
[[faults]]
kind = "unreachable"
service = "payments"
at = 1.5
duration = 2.0
[[hypotheses]]
name = "sync edge errors"
topology = "sync"
metric = "edge_errors"
predicted = "model"
rel = 0.2
unit = "orders"
[[hypotheses]]
name = "async backlog peak"
topology = "async"
metric = "backlog_peak"
queue = "payments"
predicted = "model"
rel = 0.25
[[hypotheses]]
name = "async orders lost"
topology = "async"
metric = "lost"
predicted = "model"
check = "exact"
[[controls]]
hypotheses = ["sync edge errors"]
on = "async"
"""


def test_a_scenario_file_with_model_predictions_runs_and_reports(tmp_path: Path) -> None:
    path = tmp_path / "model-outage.toml"
    path.write_text(SCENARIO)
    reports = tmp_path / "reports"
    done = subprocess.run([sys.executable, "-m", "testbed.cli", "run", str(path), "-n", "1",
                           "--report-dir", str(reports)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = (reports / "model-outage" / "report.md").read_text()
    assert report.startswith("# Payments unreachable, predicted by the model")
    runs = reports / "runs" / "model-outage"
    assert (runs / "sync_model" / "meta.json").exists()  # the model's runs, kept beside
    assert "sync_model" not in report  # drawn over the measured charts, not on their own
    summary = (reports / "summary.md").read_text()
    row = r"\| sync edge errors \| model: 4\d \(± 20%\) \| \d+ \| holds \|"
    assert re.search(row, summary), summary
    junit = (reports / "junit.xml").read_text()
    assert 'name="sync"' in junit and 'name="negative_control_0_on_async"' in junit
    history = pd.read_csv(reports / "history.csv")
    assert set(history["name"]) == {"sync edge errors", "async backlog peak",
                                    "async orders lost"}
    assert "3 passed" in done.stdout
