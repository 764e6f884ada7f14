"""Reading traces back from Jaeger's own query API, and the questions E16 asks of them.

The source is Jaeger's HTTP JSON API (``/api/services``, ``/api/traces``, the one its UI
uses), parsed into typed, frozen dataclasses: a Trace of Spans, each with its service,
operation, parent, start and duration (microseconds, as Jaeger keeps them). Orders are
told apart by the ``order_id`` attribute the services put on their spans, deployments by
the ``testbed.deployment`` resource attribute (one Jaeger serves a whole run).

The two questions: is an order's whole path one trace (``whole_path_in_one_trace``: a
sync chain yes; an async pipeline only when the context travels in the message headers),
and which span of a trace is the slowest (``slowest_span``: by self time, the time a
span spent not waiting on its children, so it names the hop that was slow, not the root
that waited for it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import requests

from testbed.errors import ComponentError
from testbed.services.tracing import DEPLOYMENT, ORDER_ID

AttrValue = str | bool | int | float
SEARCH_LIMIT = 10_000  # traces per search; Jaeger's default (100) would cut a trial short


@dataclass(frozen=True)
class Span:
    """One span as Jaeger stores it; times in microseconds since the epoch."""

    trace_id: str
    span_id: str
    parent_id: str | None
    service: str
    operation: str
    start_us: int
    duration_us: int
    kind: str = ""  # server | client | producer | consumer | internal | "" (unknown)
    error: bool = False
    attributes: Mapping[str, AttrValue] = field(default_factory=dict)
    resource: Mapping[str, AttrValue] = field(default_factory=dict)

    @property
    def end_us(self) -> int:
        return self.start_us + self.duration_us

    @property
    def duration_s(self) -> float:
        return self.duration_us / 1e6

    @property
    def order_id(self) -> str | None:
        value = self.attributes.get(ORDER_ID)
        return value if isinstance(value, str) else None

    @property
    def deployment(self) -> str | None:
        value = self.resource.get(DEPLOYMENT)
        return value if isinstance(value, str) else None

    def __str__(self) -> str:
        return f"{self.service}: {self.operation} ({self.kind or 'span'}, {self.duration_s:.3f} s)"


@dataclass(frozen=True)
class Trace:
    """All spans of one trace id."""

    trace_id: str
    spans: tuple[Span, ...]

    @property
    def services(self) -> frozenset[str]:
        return frozenset(span.service for span in self.spans)

    @property
    def order_ids(self) -> frozenset[str]:
        return frozenset(span.order_id for span in self.spans if span.order_id is not None)

    @property
    def roots(self) -> tuple[Span, ...]:
        """Spans without a parent in this trace (one, when the trace is whole)."""
        ids = {span.span_id for span in self.spans}
        return tuple(s for s in self.spans if s.parent_id is None or s.parent_id not in ids)

    @property
    def start_us(self) -> int:
        return min(span.start_us for span in self.spans)

    @property
    def duration_us(self) -> int:
        return max(span.end_us for span in self.spans) - self.start_us

    def children(self, span: Span) -> tuple[Span, ...]:
        return tuple(s for s in self.spans if s.parent_id == span.span_id)

    def span(self, span_id: str) -> Span:
        for candidate in self.spans:
            if candidate.span_id == span_id:
                return candidate
        raise KeyError(f"no span {span_id} in trace {self.trace_id}")


# -- parsing Jaeger's JSON ---------------------------------------------------------------

def _tags(items: Iterable[Mapping[str, Any]] | None) -> dict[str, AttrValue]:
    found: dict[str, AttrValue] = {}
    for tag in items or ():
        value = tag.get("value")
        if isinstance(value, str | bool | int | float):
            found[str(tag["key"])] = value
    return found


def _parent(span: Mapping[str, Any]) -> str | None:
    references = span.get("references") or []
    for kind in ("CHILD_OF", "FOLLOWS_FROM"):
        for ref in references:
            if ref.get("refType") == kind and ref.get("traceID") == span["traceID"]:
                return str(ref["spanID"])
    return None


def parse_trace(data: Mapping[str, Any]) -> Trace:
    """One trace of the JSON API's ``data`` list (spans plus their processes)."""
    processes = data.get("processes") or {}
    spans = []
    for raw in data.get("spans") or []:
        process = processes.get(raw.get("processID"), {})
        tags = _tags(raw.get("tags"))
        kind = str(tags.pop("span.kind", ""))
        error = tags.get("error") is True or tags.get("otel.status_code") == "ERROR"
        spans.append(Span(
            trace_id=str(raw["traceID"]), span_id=str(raw["spanID"]), parent_id=_parent(raw),
            service=str(process.get("serviceName", "")), operation=str(raw["operationName"]),
            start_us=int(raw["startTime"]), duration_us=int(raw["duration"]), kind=kind,
            error=error, attributes=tags, resource=_tags(process.get("tags"))))
    spans.sort(key=lambda s: (s.start_us, -s.duration_us))
    return Trace(str(data["traceID"]), tuple(spans))


def parse_traces(payload: Mapping[str, Any]) -> list[Trace]:
    """The ``data`` of an ``/api/traces`` answer as Traces."""
    return [parse_trace(item) for item in payload.get("data") or []]


# -- the query API -----------------------------------------------------------------------

class JaegerQuery:
    """A client of one Jaeger's HTTP JSON API (e.g. ``JaegerServer.query_url``)."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._http = requests.Session()

    def _get(self, path: str, params: Mapping[str, str | int] | None = None) -> Any:
        try:
            response = self._http.get(f"{self.url}{path}", params=params,
                                      timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise ComponentError(f"Jaeger's query API at {self.url} did not answer {path}: "
                                 f"{exc}. Fix: is the run's Jaeger up (runtime.jaeger())?"
                                 ) from exc
        if response.status_code == 404:
            return None
        if not response.ok:
            raise ComponentError(f"Jaeger's query API refused {path} ({response.status_code}"
                                 f"): {response.text[:300]}")
        return response.json()

    def services(self) -> list[str]:
        """Services Jaeger has spans of (Jaeger's own, if any, included)."""
        answer = self._get("/api/services") or {}
        return sorted(answer.get("data") or [])

    def traces(self, service: str, tags: Mapping[str, str] | None = None,
               limit: int = SEARCH_LIMIT, start_us: int | None = None) -> list[Trace]:
        """Whole traces that have a span of ``service`` (matching every tag in ``tags``;
        span attributes and resource attributes both count), newest first."""
        params: dict[str, str | int] = {"service": service, "limit": limit}
        if tags:
            params["tags"] = json.dumps(dict(tags))
        if start_us is not None:
            params["start"] = start_us
        return parse_traces(self._get("/api/traces", params) or {})

    def trace(self, trace_id: str) -> Trace | None:
        answer = self._get(f"/api/traces/{trace_id}")
        found = parse_traces(answer or {})
        return found[0] if found else None

    def deployment_traces(self, deployment_id: str,
                          services: Iterable[str] | None = None) -> list[Trace]:
        """Every trace of one deployment, each once, oldest first: a search per service
        (the API wants one), merged by trace id."""
        merged: dict[str, Trace] = {}
        for service in services if services is not None else self.services():
            for found in self.traces(service, tags={DEPLOYMENT: deployment_id}):
                known = merged.get(found.trace_id)
                if known is None or len(found.spans) > len(known.spans):
                    merged[found.trace_id] = found  # the later read may hold more spans
        return sorted(merged.values(), key=lambda t: t.start_us)

    def wait_for(self, deployment_id: str, ready: Callable[[list[Trace]], bool],
                 timeout_s: float = 20.0, services: Sequence[str] | None = None,
                 interval_s: float = 0.25) -> list[Trace]:
        """Poll the deployment's traces until ``ready`` holds (spans arrive in batches,
        some time after the request); returns the last read, ready or not."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.deployment_traces(deployment_id, services)
            if ready(found) or time.monotonic() >= deadline:
                return found
            time.sleep(interval_s)

    def close(self) -> None:
        self._http.close()


# -- what E16 asks -----------------------------------------------------------------------

def traces_by_order(traces: Iterable[Trace]) -> dict[str, list[Trace]]:
    """Order id -> the traces holding any span of it."""
    found: dict[str, list[Trace]] = {}
    for trace in traces:
        for order_id in sorted(trace.order_ids):
            found.setdefault(order_id, []).append(trace)
    return found


def whole_path_in_one_trace(traces: Iterable[Trace],
                            services: Iterable[str]) -> dict[str, bool]:
    """For every order seen: is its whole path one trace? True when exactly one trace
    holds its spans and that trace reaches every one of ``services`` (the path's hops)."""
    path = frozenset(services)
    return {order_id: len(held) == 1 and path <= held[0].services
            for order_id, held in traces_by_order(traces).items()}


def self_time_us(trace: Trace, span: Span) -> int:
    """The part of ``span`` not covered by its children (overlaps counted once; a child
    running past its parent, like a consumer after the publish, covers only its overlap)."""
    covered = 0
    cursor = span.start_us
    for child in sorted(trace.children(span), key=lambda c: c.start_us):
        start, end = max(child.start_us, cursor), min(child.end_us, span.end_us)
        if end > start:
            covered += end - start
            cursor = end
    return span.duration_us - covered


def slowest_span(trace: Trace, by: Literal["self", "total"] = "self") -> Span:
    """The span that took longest: by self time (default: it names the slow hop), or by
    total duration (the root, mostly, which only waited)."""
    if not trace.spans:
        raise ValueError(f"trace {trace.trace_id} has no spans")
    if by == "total":
        return max(trace.spans, key=lambda s: s.duration_us)
    return max(trace.spans, key=lambda s: self_time_us(trace, s))
