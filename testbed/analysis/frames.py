"""The three frames every experiment produces, as documented column names and schemas.

All times are float seconds on ONE monotonic timeline, relative to the run's origin
(``Timeline.origin``), so a fault window can be laid over latency and queue depth
without any clock conversion.

requests  one row per request the open-loop load generator scheduled
    t_scheduled  float  when the request was due (the arrival schedule, not the send)
    t_sent       float  when it actually left (late sends show a saturated generator)
    latency_s    float  response time measured from t_scheduled, so a stalled sender
                        cannot hide latency (no coordinated omission); NaN: no response
    waited_s     float  what the user waited for any outcome (answer, error, giving up),
                        from t_scheduled; NaN only for a request never sent
    status       int    HTTP status; 0 when no HTTP response came back
    error        str    "" when fine; else e.g. "timeout", "connection", "http_503"
    ok           bool   the user got what they asked for
    topology     str    which topology served it ("sync", "async", ...)
    order_id     str    the business key, to audit ledgers against

samples   long format: one row per (time, source, metric) reading of a sampler
    t       float  when the sample was taken
    source  str    what was sampled, "<kind>:<name>", e.g. "queue:payments",
                   "service:gateway"
    metric  str    e.g. "ready", "unacked", "consumers", "in_flight"
    value   float  the reading

events    fault events from ``testbed.faults.Timeline``
    t       float  when it happened
    kind    str    inject | verify | remove | inject_failed | verify_failed | remove_failed
    fault   str    fault kind, e.g. "latency"
    target  str    what it was aimed at, e.g. a link name
    detail  str    free text (what was injected, what the check observed, the error)

Functions in ``testbed.analysis.metrics`` check only the columns they read, so a test
or a caller may pass a frame holding just those.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import pandas as pd
from pandas.api import types as ptypes

from testbed.errors import TestbedError

ColumnKind = Literal["float", "int", "str", "bool"]

# requests
T_SCHEDULED = "t_scheduled"
T_SENT = "t_sent"
LATENCY_S = "latency_s"
STATUS = "status"
ERROR = "error"
OK = "ok"
TOPOLOGY = "topology"
ORDER_ID = "order_id"
# samples (T is shared with events)
T = "t"
SOURCE = "source"
METRIC = "metric"
VALUE = "value"
# events
KIND = "kind"
FAULT = "fault"
TARGET = "target"
DETAIL = "detail"

EVENT_KINDS = ("inject", "verify", "remove", "inject_failed", "verify_failed",
               "remove_failed")

_DTYPES: dict[ColumnKind, object] = {"float": "float64", "int": "int64", "bool": "bool",
                                      "str": str}


class AnalysisError(TestbedError, ValueError):
    """The analysis was asked something the data cannot answer (says what and why)."""


class FrameError(AnalysisError):
    """A frame handed to the analysis lacks a column or holds the wrong kind of data."""


@dataclass(frozen=True)
class Column:
    """One documented column: its name, the kind of values and what they mean."""

    name: str
    kind: ColumnKind
    doc: str


@dataclass(frozen=True)
class Schema:
    """The columns a frame must have; extra columns are allowed and left alone."""

    name: str
    columns: tuple[Column, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} frames have no column {name!r}; they have {self.names}")

    def empty(self) -> pd.DataFrame:
        """A frame with no rows but every column at its proper dtype."""
        return pd.DataFrame({c.name: pd.Series([], dtype=_DTYPES[c.kind])
                             for c in self.columns})

    def frame(self, rows: Iterable[Mapping[str, object]]) -> pd.DataFrame:
        """Build a validated frame from row mappings (extra keys are kept)."""
        rows = list(rows)
        if not rows:
            return self.empty()
        return self.validate(pd.DataFrame(rows))

    def validate(self, frame: pd.DataFrame,
                 only: Sequence[str] | None = None) -> pd.DataFrame:
        """Return ``frame`` unchanged if it has the columns (all, or ``only``) with
        the right kind of values; raise FrameError naming the column and the fix."""
        wanted = [self.column(n) for n in (only if only is not None else self.names)]
        missing = [c.name for c in wanted if c.name not in frame.columns]
        if missing:
            raise FrameError(
                f"{self.name} frame lacks column(s) {missing}; it has {list(frame.columns)}. "
                f"Fix: give it these columns: "
                + "; ".join(f"{c.name} ({c.kind}: {c.doc})" for c in wanted
                            if c.name in missing))
        for c in wanted:
            dtype = frame[c.name].dtype
            if not _is_kind(dtype, c.kind):
                raise FrameError(
                    f"{self.name} frame column {c.name!r} has dtype {dtype}, expected "
                    f"{c.kind} ({c.doc}). Fix: convert it, e.g. "
                    f"frame[{c.name!r}].astype({_DTYPES[c.kind]!r})")
        return frame


def _is_kind(dtype: object, kind: ColumnKind) -> bool:
    if kind == "bool":
        return ptypes.is_bool_dtype(dtype)
    if kind == "str":
        return ptypes.is_string_dtype(dtype) or ptypes.is_object_dtype(dtype)
    if ptypes.is_bool_dtype(dtype):
        return False
    if kind == "int":
        return ptypes.is_integer_dtype(dtype)
    return ptypes.is_numeric_dtype(dtype)


REQUESTS = Schema("requests", (
    Column(T_SCHEDULED, "float", "seconds since the run's origin the request was due"),
    Column(T_SENT, "float", "seconds since the run's origin it actually left"),
    Column(LATENCY_S, "float", "seconds from t_scheduled to the response; NaN if none"),
    Column(STATUS, "int", "HTTP status, 0 when no HTTP response"),
    Column(ERROR, "str", '"" when fine, else e.g. "timeout", "connection", "http_503"'),
    Column(OK, "bool", "the request succeeded"),
    Column(TOPOLOGY, "str", "the topology that served it"),
    Column(ORDER_ID, "str", "the business key"),
))

SAMPLES = Schema("samples", (
    Column(T, "float", "seconds since the run's origin the sample was taken"),
    Column(SOURCE, "str", 'what was sampled, e.g. "queue:payments"'),
    Column(METRIC, "str", 'what was read, e.g. "ready", "in_flight"'),
    Column(VALUE, "float", "the reading"),
))

EVENTS = Schema("events", (
    Column(T, "float", "seconds since the run's origin it happened"),
    Column(KIND, "str", " | ".join(EVENT_KINDS)),
    Column(FAULT, "str", 'the fault kind, e.g. "latency"'),
    Column(TARGET, "str", "what the fault was aimed at"),
    Column(DETAIL, "str", "free text"),
))


class EventLike(Protocol):
    """What ``testbed.faults.Event`` offers (kept structural: analysis imports no faults)."""

    @property
    def t(self) -> float: ...
    @property
    def kind(self) -> str: ...
    @property
    def fault(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def detail(self) -> str: ...


def events_frame(events: Iterable[EventLike], origin: float = 0.0) -> pd.DataFrame:
    """The events frame of a timeline, times made relative: ``events_frame(tl.events,
    tl.origin)``."""
    return EVENTS.frame({T: e.t - origin, KIND: e.kind, FAULT: e.fault, TARGET: e.target,
                         DETAIL: e.detail} for e in events)
