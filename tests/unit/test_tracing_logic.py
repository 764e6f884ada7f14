"""Tracing's pure logic: the services' span facade (parents and propagation, against the
SDK's in-memory exporter), and the readers of Jaeger's JSON (parsing, one trace per
order, the slowest span by self time). The real Jaeger is in tests/integration."""

from __future__ import annotations

from typing import Any

import pika
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from testbed.errors import TopologyError
from testbed.observe.traces import (
    Span,
    Trace,
    parse_traces,
    self_time_us,
    slowest_span,
    traces_by_order,
    whole_path_in_one_trace,
)
from testbed.services.amqp import PERSISTENT, with_headers
from testbed.services.config import ServiceConfig
from testbed.services.otel import OtelTracing
from testbed.services.tracing import NO_SPAN, OFF, order_of, tracing_for
from testbed.topology import Knobs


def recording() -> tuple[OtelTracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return OtelTracing("svc", "http://127.0.0.1:1", provider=provider), exporter


def test_off_is_a_no_op_that_leaves_headers_alone() -> None:
    headers: dict[str, Any] = {}
    with OFF.client("POST", "http://x/orders", headers) as span:
        assert span is NO_SPAN
    with OFF.publish("ex", "order.placed", headers, propagate=True):
        pass
    assert headers == {}
    assert not OFF.enabled
    config = ServiceConfig("gateway", "http_stage", "127.0.0.1", 1, Knobs(), "/dev/null")
    assert tracing_for(config) is OFF


def test_http_hops_chain_through_traceparent() -> None:
    tracing, exporter = recording()
    headers: dict[str, str] = {}
    with tracing.server({}, "POST", "/orders"):
        tracing.tag_order("o-1")
        with tracing.client("POST", "http://127.0.0.1:2/orders", headers):
            pass
    assert headers["traceparent"].startswith("00-")
    environ = {"HTTP_TRACEPARENT": headers["traceparent"]}
    with tracing.server(environ, "POST", "/orders"):
        pass
    first, client, downstream = sorted(exporter.get_finished_spans(),
                                       key=lambda s: s.start_time or 0)
    assert first.parent is None and first.attributes is not None
    assert first.attributes["order_id"] == "o-1"
    assert client.parent is not None and client.parent.span_id == first.context.span_id
    assert downstream.parent is not None and downstream.parent.span_id == client.context.span_id
    assert len({s.context.trace_id for s in (first, client, downstream)}) == 1


@pytest.mark.parametrize("propagate", [False, True])
def test_a_consumer_joins_the_publishers_trace_only_with_propagation(propagate: bool) -> None:
    tracing, exporter = recording()
    headers: dict[str, Any] = {"x-attempt": 1}
    with tracing.publish("orders", "order.placed", headers, propagate, order_id="o-2"):
        pass
    assert ("traceparent" in headers) is propagate
    assert headers["x-attempt"] == 1
    # pika may hand header values back as bytes
    received = {k: v.encode() if isinstance(v, str) else v for k, v in headers.items()}
    with tracing.consume("payments", received, propagate):
        pass
    publish, consume = exporter.get_finished_spans()
    assert publish.kind.name == "PRODUCER" and consume.kind.name == "CONSUMER"
    if propagate:
        assert consume.parent is not None and consume.parent.span_id == publish.context.span_id
        assert consume.context.trace_id == publish.context.trace_id
    else:
        assert consume.parent is None
        assert consume.context.trace_id != publish.context.trace_id


def test_a_consume_span_never_inherits_the_current_span() -> None:
    tracing, exporter = recording()
    with tracing.server({}, "POST", "/x"), tracing.consume("q", {}, propagate=False):
        pass
    consume, server = exporter.get_finished_spans()
    assert consume.parent is None and consume.context.trace_id != server.context.trace_id


def test_failures_mark_spans() -> None:
    tracing, exporter = recording()
    with pytest.raises(RuntimeError), tracing.client("POST", "http://x", {}):
        raise RuntimeError("down")
    with tracing.consume("q", None, propagate=True):
        tracing.fail_current("handler failed: poison")
    raised, failed = exporter.get_finished_spans()
    assert raised.status.status_code.name == "ERROR"
    assert failed.status.description == "handler failed: poison"


def test_with_headers_copies_and_never_touches_the_shared_properties() -> None:
    copy = with_headers(PERSISTENT, {"traceparent": "00-abc"})
    assert copy.headers == {"traceparent": "00-abc"} and copy.delivery_mode == 2
    assert PERSISTENT.headers is None
    props = pika.BasicProperties(headers={"x-attempt": 2}, reply_to="r")
    assert with_headers(props, {"a": "b"}).headers == {"x-attempt": 2, "a": "b"}


def test_order_of_reads_event_bodies() -> None:
    assert order_of(b'{"order_id": "o-9"}') == "o-9"
    assert order_of(b"not json") is None and order_of(b"[1]") is None


def test_the_knob_wants_a_boolean() -> None:
    assert Knobs(trace_propagation=True).trace_propagation
    with pytest.raises(TopologyError, match="trace_propagation"):
        Knobs(trace_propagation="yes")  # type: ignore[arg-type]


# -- reading Jaeger's JSON ----------------------------------------------------------------

def jaeger_span(trace_id: str, span_id: str, parent: str | None, process: str, name: str,
                start: int, duration: int, kind: str, order: str | None) -> dict[str, Any]:
    tags = [{"key": "span.kind", "type": "string", "value": kind}]
    if order:
        tags.append({"key": "order_id", "type": "string", "value": order})
    refs = ([{"refType": "CHILD_OF", "traceID": trace_id, "spanID": parent}]
            if parent else [])
    return {"traceID": trace_id, "spanID": span_id, "operationName": name,
            "references": refs, "startTime": start, "duration": duration, "tags": tags,
            "processID": process}


PROCESSES = {f"p{i}": {"serviceName": name, "tags": [
    {"key": "testbed.deployment", "type": "string", "value": "sync1"}]}
    for i, name in enumerate(("gateway", "orders", "payments"))}


def sync_trace(trace_id: str, order: str) -> dict[str, Any]:
    """gateway -> orders -> payments; payments works 150 of the 170 ms."""
    return {"traceID": trace_id, "processes": PROCESSES, "spans": [
        jaeger_span(trace_id, "a", None, "p0", "POST /orders", 0, 170_000, "server", order),
        jaeger_span(trace_id, "b", "a", "p0", "POST", 2_000, 166_000, "client", order),
        jaeger_span(trace_id, "c", "b", "p1", "POST /orders", 3_000, 164_000, "server", order),
        jaeger_span(trace_id, "d", "c", "p1", "POST", 5_000, 160_000, "client", order),
        jaeger_span(trace_id, "e", "d", "p2", "POST /orders", 6_000, 158_000, "server", order),
    ]}


def test_parse_traces_reads_jaegers_json() -> None:
    (trace,) = parse_traces({"data": [sync_trace("t1", "o-1")]})
    assert trace.trace_id == "t1" and len(trace.spans) == 5
    root = trace.roots[0]
    assert (root.service, root.operation, root.kind, root.parent_id) == (
        "gateway", "POST /orders", "server", None)
    assert root.order_id == "o-1" and root.deployment == "sync1"
    assert trace.services == {"gateway", "orders", "payments"}
    assert trace.span("e").parent_id == "d" and trace.duration_us == 170_000
    assert "span.kind" not in root.attributes


def test_the_slowest_span_by_self_time_names_the_slow_hop() -> None:
    (trace,) = parse_traces({"data": [sync_trace("t1", "o-1")]})
    slowest = slowest_span(trace)
    assert (slowest.service, slowest.kind) == ("payments", "server")
    assert self_time_us(trace, trace.span("a")) == 4_000
    assert slowest_span(trace, by="total").span_id == "a"


def test_self_time_counts_overlapping_and_overrunning_children_once() -> None:
    parent = Span("t", "p", None, "s", "op", 0, 100, "producer")
    kids = (Span("t", "k1", "p", "s", "x", 10, 30), Span("t", "k2", "p", "s", "y", 20, 40),
            Span("t", "k3", "p", "s", "z", 90, 500))  # a consumer running past the publish
    trace = Trace("t", (parent, *kids))
    assert self_time_us(trace, parent) == 100 - 50 - 10


def test_whole_path_in_one_trace_needs_one_trace_reaching_every_hop() -> None:
    whole = parse_traces({"data": [sync_trace("t1", "o-1")]})
    split = [Trace("t2", (Span("t2", "a", None, "gateway", "POST /orders", 0, 5, "server",
                                attributes={"order_id": "o-2"}),)),
             Trace("t3", (Span("t3", "b", None, "payments", "process payments", 9, 5,
                                "consumer", attributes={"order_id": "o-2"}),))]
    partial = [Trace("t4", (Span("t4", "a", None, "gateway", "POST /orders", 0, 5, "server",
                                  attributes={"order_id": "o-3"}),))]
    traces = [*whole, *split, *partial]
    assert whole_path_in_one_trace(traces, ["gateway", "orders", "payments"]) == {
        "o-1": True, "o-2": False, "o-3": False}
    assert [t.trace_id for t in traces_by_order(traces)["o-2"]] == ["t2", "t3"]
