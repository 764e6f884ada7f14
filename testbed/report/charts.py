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


def waterfall_order(result: RunResult) -> str | None:
    """The order a report draws: the accepted one with spans placed nearest the middle
    of the first fault window (of the run when there was none)."""
    if result.spans.empty:
        return None
    requests = result.requests[result.requests["ok"]
                               & result.requests["order_id"].isin(result.spans["order_id"])]
    if requests.empty:
        return None
    windows = fault_windows(result.events) if not result.events.empty else []
    if windows and windows[0].end is not None:
        middle = (windows[0].start + windows[0].end) / 2
    else:
        middle = float(requests["t_scheduled"].median())
    nearest = (requests["t_scheduled"] - middle).abs().idxmin()
    return str(requests.loc[nearest, "order_id"])


def waterfall_chart(result: RunResult, order_id: str, title: str) -> bytes:
    """One order's spans as a waterfall: a bar per span from its start to its end, in
    start order, one colour per trace (an async order without trace propagation falls
    apart into several); the span with the most self time (what the metrics call its
    slowest) outlined in red. Returns PNG bytes."""
    spans = result.spans[result.spans["order_id"] == order_id].sort_values("start_s")
    traces = {trace: index for index, trace in enumerate(dict.fromkeys(spans["trace_id"]))}
    colors = plt.get_cmap("tab10")
    slowest = spans["self_s"].idxmax()
    t0 = float(spans["start_s"].min())
    figure, axes = plt.subplots(figsize=(8, 0.4 * len(spans) + 1.4))
    for row, (index, span) in enumerate(spans.iterrows()):
        axes.barh(row, span["duration_s"] * 1000, left=(span["start_s"] - t0) * 1000,
                  color=colors(traces[span["trace_id"]] % 10),
                  edgecolor="red" if index == slowest else "none", linewidth=2)
    axes.set_yticks(range(len(spans)))
    axes.set_yticklabels([f"{s.service}: {s.operation} ({s.kind})" for s in
                          spans.itertuples()], fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel(f"ms since the order's first span (t = {t0:.2f} s)")
    axes.set_title(f"{title}\n{order_id}: {len(spans)} spans in {len(traces)} trace(s); "
                   "red: most self time", fontsize=10)
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()
