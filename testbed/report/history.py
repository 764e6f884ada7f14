"""The history of suite runs (one CSV under reports/, appended per run) and trend checks.

A regression is a verdict that held in the previous run and fails now, a key number (a
hypothesis' measured value) worse than its recent range, or one sliding steadily worse
(a fitted trend over the recent runs that beats the noise around it three times over).
"Worse" follows the hypothesis: above an upper bound's history, below a lower bound's,
further from the prediction for "close to". The recent range is widened by a margin
(half its width, and at least 10% of the prediction), so a number that is noisy but
stable does not alarm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

HISTORY_FILE = "history.csv"
RECENT_RUNS = 10
COLUMNS = ["run", "test", "title", "name", "predicted", "measured", "tolerance_text",
           "passed", "source"]


@dataclass(frozen=True)
class Regression:
    test: str
    hypothesis: str
    kind: str  # "verdict flip" | "worse than recent range"
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.test}: {self.hypothesis}: {self.detail}"


def append_history(report_dir: Path, verdicts: pd.DataFrame,
                   run: str | None = None) -> Path:
    """Add this run's verdicts to reports/history.csv; returns its path."""
    path = report_dir / HISTORY_FILE
    if verdicts.empty:
        return path
    frame = verdicts.assign(run=run or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"))
    frame = frame.reindex(columns=COLUMNS, fill_value="")  # "source": "" if not said
    if path.exists() and list(pd.read_csv(path, nrows=0).columns) != COLUMNS:
        # an older history (fewer columns): rewritten once in today's columns
        pd.concat([load_history(path), frame[COLUMNS]])[COLUMNS].to_csv(path, index=False)
        return path
    frame[COLUMNS].to_csv(path, mode="a", header=not path.exists(), index=False)
    return path


def load_history(path: Path) -> pd.DataFrame:
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS)
    frame = pd.read_csv(path, keep_default_na=False, dtype={"run": str})
    frame["passed"] = frame["passed"].astype(str).str.lower() == "true"
    if "source" not in frame:  # written before predictions named their source
        frame["source"] = ""
    return frame


def _number(value: object) -> float:
    try:
        return float(str(value))
    except ValueError:
        return math.nan


def _badness(tolerance: str, predicted: float, measured: float) -> float:
    """Larger is worse, on the hypothesis' own terms; NaN where it has no direction."""
    if tolerance == "upper bound":
        return measured
    if tolerance == "lower bound":
        return -measured
    if tolerance.startswith("±") or tolerance == "exact":
        return abs(measured - predicted)
    return math.nan


def trend(history: pd.DataFrame, recent: int = RECENT_RUNS) -> list[Regression]:
    """Compare the newest run in ``history`` with the runs before it."""
    runs = list(dict.fromkeys(history["run"]))
    if len(runs) < 2:
        return []
    latest = history[history["run"] == runs[-1]]
    before = history[history["run"].isin(runs[-1 - recent:-1])]
    previous = history[history["run"] == runs[-2]]
    found = []
    for row in latest.itertuples():
        key = (history["test"] == row.test) & (history["title"] == row.title) \
            & (history["name"] == row.name)
        last = previous[key.loc[previous.index]]
        if len(last) and bool(last["passed"].iloc[-1]) and not row.passed:
            found.append(Regression(row.test, f"{row.title}: {row.name}", "verdict flip",
                                    f"held in run {runs[-2]}, fails now "
                                    f"(measured {row.measured})"))
            continue
        past = before[key.loc[before.index]]
        predicted, measured = _number(row.predicted), _number(row.measured)
        now = _badness(str(row.tolerance_text), predicted, measured)
        scores = [_badness(str(t), _number(p), _number(m)) for t, p, m in
                  zip(past["tolerance_text"], past["predicted"], past["measured"], strict=True)]
        scores = [s for s in scores if not math.isnan(s)]
        if math.isnan(now) or len(scores) < 3:
            continue
        low, high = min(scores), max(scores)
        floor = 0.1 * abs(predicted) if not math.isnan(predicted) else 0.0
        if now > high + max(0.5 * (high - low), floor, 1e-9):
            seen = _range(str(row.tolerance_text), low, high, predicted)
            found.append(Regression(row.test, f"{row.title}: {row.name}",
                                    "worse than recent range",
                                    f"measured {row.measured}; the last {len(scores)} runs "
                                    f"ranged {seen}"))
        elif (drift := _drift([*scores, now], floor)) is not None:
            found.append(Regression(row.test, f"{row.title}: {row.name}", "slow drift",
                                    f"worse by {drift:g} over the last {len(scores) + 1} "
                                    f"runs, steadily (measured now {row.measured})"))
    return found


def _drift(scores: list[float], floor: float) -> float | None:
    """How much worse the fitted line got across the runs, if that is four standard
    errors or more (a t-test on the slope) and beats the floor, and the newest run is
    worse than every run of the older half; else None: a steady slide, not a wobble."""
    n = len(scores)
    x = np.arange(n, dtype=float)
    y = np.asarray(scores, dtype=float)
    slope, intercept = np.polyfit(x, y, 1)
    total = float(slope * (n - 1))
    residual = y - (slope * x + intercept)
    spread = math.sqrt(float((residual ** 2).sum()) / max(n - 2, 1))
    standard_error = spread / math.sqrt(float(((x - x.mean()) ** 2).sum())) * (n - 1)
    if total > max(4 * standard_error, floor, 1e-9) and y[-1] > y[: n // 2].max():
        return total
    return None


def _range(tolerance: str, low: float, high: float, predicted: float) -> str:
    if tolerance == "lower bound":
        return f"{-high:g} to {-low:g}"
    if tolerance == "upper bound":
        return f"{low:g} to {high:g}"
    return f"{low:g} to {high:g} away from {predicted:g}"


def stability(history: pd.DataFrame, runs: int = 5) -> pd.DataFrame:
    """Over the last ``runs`` runs: for every hypothesis, whether its verdict was the same
    every time, and the spread of its measured value (min, median, max, relative spread).
    One row per hypothesis, the unstable ones first."""
    names = list(dict.fromkeys(history["run"]))[-runs:]
    recent = history[history["run"].isin(names)].copy()
    recent["value"] = [_number(v) for v in recent["measured"]]
    rows = []
    for (test, title, name), group in recent.groupby(["test", "title", "name"], sort=True):
        values = group["value"].dropna()
        middle = float(values.median()) if len(values) else math.nan
        spread = (float(values.max() - values.min()) / abs(middle)
                  if len(values) and middle else math.nan)
        rows.append({"test": test, "title": title, "name": name, "runs": len(group),
                     "same_verdict": group["passed"].nunique() == 1 and len(group) == len(names),
                     "held": int(group["passed"].sum()),
                     "min": float(values.min()) if len(values) else math.nan,
                     "median": middle,
                     "max": float(values.max()) if len(values) else math.nan,
                     "rel_spread": spread})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.sort_values(["same_verdict", "test"], kind="stable").reset_index(drop=True)


def stability_markdown(frame: pd.DataFrame, runs: int) -> str:
    if frame.empty:
        return "No history to judge stability from.\n"
    flips = int((~frame["same_verdict"]).sum())
    lines = [f"# Verdict stability over the last {runs} runs", "",
             f"{len(frame)} hypotheses; {flips} changed verdict (or were missing) across "
             "the runs." if flips else f"{len(frame)} hypotheses; every verdict was the "
             f"same in all {runs} runs.", "",
             "| experiment | hypothesis | verdict | min | median | max | spread |",
             "|---|---|---|---|---|---|---|"]
    for row in frame.itertuples():
        verdict = (("held" if row.held else "failed") + f" {row.runs}/{runs}"
                   if row.same_verdict else f"**FLIPPED** ({row.held} of {row.runs} held)")
        spread = "" if math.isnan(row.rel_spread) else f"{row.rel_spread:.0%}"
        lines.append(f"| {str(row.test).split('::')[0].split('/')[-1]} | {row.title}: "
                     f"{row.name} | {verdict} | {row.min:g} | {row.median:g} | {row.max:g} "
                     f"| {spread} |")
    return "\n".join(lines) + "\n"
