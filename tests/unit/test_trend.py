"""Trend detection on crafted histories: what must alarm, and what must not."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd

from testbed.report.history import (
    append_history,
    load_history,
    stability,
    stability_markdown,
    trend,
)

TEST = "experiments/test_e02_outage.py::test_async"


def history(measured: list[float], tolerance: str = "upper bound", predicted: float = 100,
            passed: list[bool] | None = None) -> pd.DataFrame:
    rows = [{"run": f"r{i:02d}", "test": TEST, "title": "E2 async", "name": "drain time",
             "predicted": predicted, "measured": m, "tolerance_text": tolerance,
             "passed": True if passed is None else passed[i]}
            for i, m in enumerate(measured)]
    return pd.DataFrame(rows)


def test_a_flipped_verdict_is_a_regression() -> None:
    found = trend(history([50, 52, 51, 120], passed=[True, True, True, False]))
    assert [r.kind for r in found] == ["verdict flip"]
    assert "held in run r02, fails now" in found[0].detail


def test_a_jump_beyond_the_recent_range_is_a_regression() -> None:
    found = trend(history([50, 52, 51, 49, 53, 80]))
    assert [r.kind for r in found] == ["worse than recent range"]
    assert "ranged 49 to 53" in found[0].detail


def test_a_slow_drift_is_caught_though_each_step_is_small() -> None:
    found = trend(history([60 + 2 * i for i in range(10)]))
    assert [r.kind for r in found] == ["slow drift"]


def test_a_noisy_but_stable_number_does_not_alarm() -> None:
    draws = random.Random(7)
    for _ in range(20):  # many noisy histories, none may alarm
        values = [60 + draws.uniform(-8, 8) for _ in range(10)]
        assert trend(history(values)) == []


def test_better_numbers_never_alarm_whatever_the_direction() -> None:
    assert trend(history([50, 52, 51, 49, 10])) == []  # upper bound: lower is better
    assert trend(history([50, 52, 51, 49, 90], tolerance="lower bound")) == []
    assert trend(history([130, 70, 125, 80, 101], tolerance="± 30%")) == []


def test_history_round_trips_through_the_csv(tmp_path: Path) -> None:
    frame = history([50, 52]).drop(columns="run")
    append_history(tmp_path, frame.iloc[[0]], run="a")
    append_history(tmp_path, frame.iloc[[1]], run="b")
    loaded = load_history(tmp_path / "history.csv")
    assert list(loaded["run"]) == ["a", "b"] and loaded["passed"].all()
    assert trend(loaded) == []


def test_stability_reports_flips_and_spread() -> None:
    steady = history([50, 52, 51, 49, 50])
    flipping = history([50, 52, 51, 49, 90], passed=[True, True, True, True, False])
    flipping["name"] = "backlog peak"
    table = stability(pd.concat([steady, flipping], ignore_index=True), runs=5)
    assert list(table["name"]) == ["backlog peak", "drain time"]  # unstable first
    assert list(table["same_verdict"]) == [False, True]
    assert table.loc[1, "min"] == 49 and table.loc[1, "max"] == 52
    assert round(table.loc[1, "rel_spread"], 3) == round(3 / 50, 3)
    text = stability_markdown(table, 5)
    assert "1 changed verdict" in text and "**FLIPPED** (4 of 5 held)" in text
