"""Charts of one run (matplotlib, PNG): what the user saw and what piled up, on the run's
timeline with the fault windows shaded, so cause and effect line up by eye."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a CI machine

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from testbed.analysis import error_rate, fault_windows
from testbed.observe import RunResult
from testbed.scenario import metrics as m

FAULT_COLOR = "#f4b6b6"
WINDOW_S = 0.5  # percentiles and error rate per half second of scheduled send time


def run_chart(result: RunResult, title: str, model: RunResult | None = None) -> bytes:
    """Three stacked panels, one time axis: edge latency p50/p95/p99 (what users waited,
    failures included, as the hypotheses read it), edge error rate, queue and DLQ depth;
    with ``model`` (the same trial simulated) its p99, error rate and backlog drawn
    over the measured ones in grey. Returns PNG bytes."""
    latency = m.windowed_waits(result.requests, window_s=WINDOW_S)
    errors = error_rate(result.requests, window_s=WINDOW_S)
    backlog, dead = m.backlog(result), m.dead_letter_depth(result)
    figure, (top, middle, bottom) = plt.subplots(3, 1, figsize=(8, 6.4), sharex=True)
    figure.suptitle(title, fontsize=11)
    for column, style in (("p50", "-"), ("p95", "--"), ("p99", ":")):
        if column in latency:  # a window's value holds over the whole window
            top.step(latency.index, latency[column] * 1000, style, where="post", label=column)
    top.set_ylabel("edge wait (ms)")
    top.legend(loc="upper right", fontsize=8)
    middle.step(errors.index, errors * 100, where="post", color="tab:red")
    middle.set_ylabel("edge errors (%)")
    middle.set_ylim(-2, 102)
    if len(backlog):
        bottom.plot(backlog.index, backlog.to_numpy(), color="tab:blue", label="queued")
    if len(dead):
        bottom.plot(dead.index, dead.to_numpy(), color="tab:purple", label="dead-lettered")
    if model is not None:
        _overlay(model, top, middle, bottom)
    if len(backlog) or len(dead):
        bottom.legend(loc="upper right", fontsize=8)
    else:
        bottom.text(0.5, 0.5, "no queues (synchronous)", ha="center", va="center",
                    transform=bottom.transAxes, color="gray")
    bottom.set_ylabel("messages")
    bottom.set_xlabel("seconds since the load started")
    windows = fault_windows(result.events) if not result.events.empty else []
    end_of_data = float(result.samples["t"].max()) if len(result.samples) else 0.0
    for axes in (top, middle, bottom):
        axes.grid(alpha=0.3)
        for window in windows:
            axes.axvspan(window.start, window.end if window.end is not None else end_of_data,
                         color=FAULT_COLOR, alpha=0.5, lw=0)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()


def _overlay(model: RunResult, top: Axes, middle: Axes, bottom: Axes) -> None:
    """The model's curves over the measured ones: what was predicted before the run."""
    style: dict[str, Any] = {"color": "0.45", "linestyle": (0, (4, 2)), "linewidth": 1.2}
    latency = m.windowed_waits(model.requests, window_s=WINDOW_S)
    if "p99" in latency:
        top.step(latency.index, latency["p99"] * 1000, where="post", label="p99, model",
                 **style)
        top.legend(loc="upper right", fontsize=8)
    errors = error_rate(model.requests, window_s=WINDOW_S)
    middle.step(errors.index, errors * 100, where="post", label="model", **style)
    middle.legend(loc="upper right", fontsize=8)
    backlog = m.backlog(model)
    if len(backlog):
        bottom.plot(backlog.index, backlog.to_numpy(), label="queued, model", **style)
