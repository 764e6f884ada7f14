"""The facts of an incident, read off one run: impact, timeline, detection, recovery.

Detection uses the alerts an operator would have: an edge error rate of 5% or more in a
1 s window (what a sync system shows), or a queue holding 2 s worth of arrivals or more
(the only signal an async system gives, since its edge stays healthy). A first symptom
is anything visibly off: any edge error, the edge p99 at twice its baseline (and 50 ms
more), or a backlog above a handful of messages.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from testbed.analysis import error_rate, time_to_detect
from testbed.observe import RunResult
from testbed.scenario import metrics as m

DEPLOYMENT_PREFIX = re.compile(r"\b(?:[a-z_]+\d+|model)/")  # "async2/payments" -> "payments"
ERROR_ALERT = 0.05  # edge error rate that pages someone
BACKLOG_ALERT_S = 2.0  # queue depth alert: this many seconds of arrivals
BACKLOG_SYMPTOM = 5  # messages ready that are already "something is off"


@dataclass(frozen=True)
class TimelineEntry:
    t: float
    what: str


@dataclass(frozen=True)
class Incident:
    """What one topology went through in one run."""

    topology: str
    faults: list[str]
    fault_start: float | None
    fault_end: float | None
    orders: int
    edge_errors: int
    gave_up: int  # edge errors that were the user timing out, not an answer
    error_peak: float  # worst 1 s edge error rate (0..1)
    p99_baseline: float  # edge p99 before the fault (s)
    p99_peak: float  # worst 1 s edge p99 (s)
    backlog_peak: float  # most messages ready in any consumer queue
    dlq_peak: float
    drained: bool
    lost: int | None  # accepted orders the last stage never processed (nor dead-lettered)
    duplicated: int | None  # accepted orders the last stage processed more than once
    first_symptom: float | None
    detected: float | None
    detected_by: str
    drain_time: float | None  # seconds after the removal until the backlog drained
    recovered: float | None  # after the fault's end: edge healthy and queues drained
    knobs: dict[str, dict[str, object]] = field(default_factory=dict)
    own: list[str] = field(default_factory=list)  # the user's own services in it
    unaudited: list[str] = field(default_factory=list)  # own services without a ledger

    @property
    def timeline(self) -> list[TimelineEntry]:
        entries = []
        if self.fault_start is not None:
            entries.append(TimelineEntry(self.fault_start, "fault injected: "
                                         + "; ".join(self.faults)))
        if self.first_symptom is not None:
            entries.append(TimelineEntry(self.first_symptom, "first symptom"))
        if self.detected is not None:
            entries.append(TimelineEntry(self.detected, f"detected ({self.detected_by})"))
        if self.fault_end is not None:
            entries.append(TimelineEntry(self.fault_end, "fault removed"))
        if self.recovered is not None:
            entries.append(TimelineEntry(self.recovered, "recovered"))
        return sorted(entries, key=lambda e: e.t)

    def summary(self) -> str:
        """One clause in the language of an incident."""
        parts = []
        if self.edge_errors:
            parts.append(f"edge error rate peaked at {self.error_peak:.0%} "
                         f"({self.edge_errors} of {self.orders} orders failed)")
        else:
            parts.append("no edge errors")
        if self.p99_peak > max(2 * self.p99_baseline, self.p99_baseline + 0.05):
            parts.append(f"edge p99 peaked at {_seconds(self.p99_peak)}")
        if self.backlog_peak >= BACKLOG_SYMPTOM:
            drained = (f"drained {_seconds(self.drain_time)} after removal"
                       if self.drain_time is not None and self.fault_end is not None
                       else "drained" if self.drained else "never drained")
            parts.append(f"backlog peaked at {self.backlog_peak:,.0f} and {drained}")
        if self.dlq_peak:
            parts.append(f"{self.dlq_peak:,.0f} dead-lettered")
        if self.lost is None:  # an own last stage without a ledger
            parts.append("no per-order audit (only edge metrics are available)")
        else:
            parts.append("nothing lost" if not self.lost else f"{self.lost} orders LOST")
        if self.duplicated:
            parts.append(f"{self.duplicated} processed twice")
        return f"{self.topology}: " + ", ".join(parts)


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def _first(*times: float | None) -> float | None:
    found = [t for t in times if t is not None and not math.isnan(t)]
    return min(found) if found else None


def incident(result: RunResult, topology: str | None = None) -> Incident:
    """The incident facts of one run; ``topology`` names it in the report. Every number
    comes from the metric vocabulary, as the hypotheses read it."""
    requests = result.requests
    start, end = m.fault_span(result)
    errors = error_rate(requests)
    latency = m.windowed_waits(requests, window_s=1.0)
    before = latency[latency.index < start] if start is not None else latency
    baseline = float(before["p99"].median()) if len(before) else float("nan")
    backlog = m.backlog(result)
    stage = m.last_stage(result)
    audited = stage is not None and stage not in result.meta.get("unaudited", ())
    audit = m.audit(result) if audited else None
    rate = len(requests) / max(float(requests["t_scheduled"].max()), 1.0) if len(requests) \
        else 0.0
    after = start if start is not None else 0.0
    symptom = _first(time_to_detect(errors, 1e-9, after),
                     time_to_detect(latency["p99"], max(2 * baseline, baseline + 0.05), after)
                     if not math.isnan(baseline) else None,
                     time_to_detect(backlog, BACKLOG_SYMPTOM, after) if len(backlog) else None)
    by_errors = time_to_detect(errors, ERROR_ALERT, after)
    by_backlog = (time_to_detect(backlog, max(BACKLOG_SYMPTOM, rate * BACKLOG_ALERT_S), after)
                  if len(backlog) else None)
    detected = _first(by_errors, by_backlog)
    detected_by = ("" if detected is None else "edge error rate >= 5%"
                   if detected == by_errors else
                   f"queue depth >= {max(BACKLOG_SYMPTOM, rate * BACKLOG_ALERT_S):.0f}")
    drain = m.drain_time(result) if len(backlog) else 0.0
    edge = m.time_to_recover_edge(result) if (~requests["ok"].astype(bool)).any() else 0.0
    return Incident(
        topology=topology or result.name,
        faults=[DEPLOYMENT_PREFIX.sub("", f) for f in result.meta.get("faults", [])],
        fault_start=start, fault_end=end, orders=len(requests),
        edge_errors=m.edge_errors(result),
        gave_up=int((requests["error"] == "timeout").sum()),
        error_peak=float(errors.max()) if len(errors) else 0.0,
        p99_baseline=baseline,
        p99_peak=float(latency["p99"].max()) if len(latency) else float("nan"),
        backlog_peak=m.backlog_peak(result), dlq_peak=m.dlq_peak(result),
        drained=m.drained(result),
        lost=audit.lost if audit else None if stage else 0,
        duplicated=audit.duplicated if audit else None if stage else 0,
        first_symptom=None if symptom is None else after + symptom,
        detected=None if detected is None else after + detected, detected_by=detected_by,
        drain_time=drain if len(backlog) else None,
        recovered=(None if end is None or drain is None or edge is None
                   else end + max(drain, edge)),
        knobs=dict(result.meta.get("knobs", {})),
        own=list(result.meta.get("own", [])), unaudited=list(result.meta.get("unaudited", [])))
