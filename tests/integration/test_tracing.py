"""Tracing end to end: real services export OpenTelemetry spans to the run's real Jaeger,
read back through Jaeger's own query API.

Sync: one trace per order through every hop, each hop's client span the parent of the
next hop's server span. Async without trace_propagation: one trace per stage per order;
with it: one trace per order across the stages. Plus: spans buffered at a service's stop
are flushed, and a controller's death takes its Jaeger with it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import psutil
import pytest

from testbed.observe.traces import (
    JaegerQuery,
    Trace,
    slowest_span,
    traces_by_order,
    whole_path_in_one_trace,
)
from testbed.runtime.local import LocalRuntime
from testbed.topology import Knobs, async_pipeline, sync_chain

from .conftest import process_names, wait_until_gone

# a missing jaeger fails with the fix named; heavy: apart from the timing tests
pytestmark = [pytest.mark.local_only, pytest.mark.heavy]

ORDERS = ("t-1", "t-2", "t-3")
READ_TIMEOUT_S = 20.0


@pytest.fixture(scope="module")
def runtime() -> Iterator[LocalRuntime]:
    """One traced run for the module: its Jaeger boots once, everything goes at the end
    (pass or fail: the with block closes the run)."""
    with LocalRuntime(tracing=True) as traced:
        traced.jaeger()
        yield traced


@pytest.fixture(scope="module")
def jaeger(runtime: LocalRuntime) -> Iterator[JaegerQuery]:
    query = JaegerQuery(runtime.jaeger().query_url)
    yield query
    query.close()


def spans_per_order(expected: int,
                    orders: tuple[str, ...] = ORDERS) -> Callable[[list[Trace]], bool]:
    """A readiness check: every order has ``expected`` spans across its traces."""
    def ready(traces: list[Trace]) -> bool:
        held = traces_by_order(traces)
        return all(sum(len(t.spans) for t in held.get(order, [])) >= expected
                   for order in orders)
    return ready


def test_jaeger_listens_only_on_loopback_ports_it_was_given(runtime: LocalRuntime) -> None:
    server = runtime.jaeger()
    assert server.process.pid is not None
    listening = {(c.laddr.ip, c.laddr.port)
                 for c in psutil.Process(server.process.pid).net_connections("inet")
                 if c.status == psutil.CONN_LISTEN}
    assert listening == {("127.0.0.1", port) for port in server.ports.all()}
    print(f"jaeger booted in {runtime.timings['jaeger_boot_s']:.2f} s")


def test_sync_chain_one_trace_per_order_through_every_hop(runtime: LocalRuntime,
                                                          jaeger: JaegerQuery) -> None:
    topology = sync_chain(2, overrides={"payments": Knobs(work_ms=150)})
    with runtime.deploy(topology) as chain:
        for order in ORDERS:
            assert chain.place_order(order).status_code == 200
        services = [s.name for s in topology.services]
        # Per order: a server span per hop (3) and a client span per call (2).
        traces = jaeger.wait_for(chain.id, spans_per_order(5), READ_TIMEOUT_S, services)
    assert whole_path_in_one_trace(traces, services) == dict.fromkeys(ORDERS, True)
    for trace in traces:
        assert len(trace.spans) == 5 and len(trace.roots) == 1
        root = trace.roots[0]
        assert (root.service, root.kind, root.operation) == ("gateway", "server",
                                                             "POST /orders")
        for span in trace.spans:
            if span is root:
                continue
            parent = trace.span(span.parent_id or "")
            if span.kind == "client":  # a hop's call, under its own server span
                assert (parent.service, parent.kind) == (span.service, "server")
            else:  # the next hop's server span, under the caller's client span
                assert parent.kind == "client" and parent.service != span.service
        assert {s.order_id for s in trace.spans} == set(trace.order_ids)
        slowest = slowest_span(trace)
        assert (slowest.service, slowest.kind) == ("payments", "server"), str(slowest)
        assert slowest_span(trace, by="total") is root


def test_async_without_propagation_one_trace_per_stage(runtime: LocalRuntime,
                                                       jaeger: JaegerQuery) -> None:
    topology = async_pipeline(2)
    with runtime.deploy(topology) as pipeline:
        for order in ORDERS:
            assert pipeline.place_order(order).status_code == 202
        services = [s.name for s in topology.services]
        # Per order: gateway server + publish, payments consume + publish, inventory consume.
        traces = jaeger.wait_for(pipeline.id, spans_per_order(5), READ_TIMEOUT_S, services)
    held = traces_by_order(traces)
    assert sorted(held) == sorted(ORDERS)
    for order in ORDERS:
        stages = sorted(tuple(sorted(t.services)) for t in held[order])
        assert stages == [("gateway",), ("inventory",), ("payments",)], order
    assert whole_path_in_one_trace(traces, services) == dict.fromkeys(ORDERS, False)
    for trace in traces:
        kinds = sorted(s.kind for s in trace.spans)
        assert kinds in (["producer", "server"], ["consumer", "producer"], ["consumer"])
        assert len(trace.roots) == 1


def test_async_with_propagation_one_trace_per_order(runtime: LocalRuntime,
                                                    jaeger: JaegerQuery) -> None:
    topology = async_pipeline(2, knobs=Knobs(trace_propagation=True))
    with runtime.deploy(topology) as pipeline:
        for order in ORDERS:
            assert pipeline.place_order(order).status_code == 202
        services = [s.name for s in topology.services]
        traces = jaeger.wait_for(pipeline.id, spans_per_order(5), READ_TIMEOUT_S, services)
    assert whole_path_in_one_trace(traces, services) == dict.fromkeys(ORDERS, True)
    assert len(traces) == len(ORDERS)
    for trace in traces:
        assert len(trace.spans) == 5 and len(trace.roots) == 1
        assert trace.roots[0].service == "gateway"
        for span in trace.spans:
            if span.kind == "consumer":  # joined the trace under the publisher's span
                parent = trace.span(span.parent_id or "")
                assert parent.kind == "producer" and parent.service != span.service


def test_spans_buffered_at_a_stop_are_flushed(runtime: LocalRuntime,
                                              jaeger: JaegerQuery) -> None:
    """The batch processor exports every 0.5 s; a stop right after the request must not
    lose the spans it still holds (SIGTERM flushes them)."""
    with runtime.deploy(sync_chain(1)) as chain:
        assert chain.place_order("flush-1").status_code == 200
        deployment_id = chain.id
    traces = jaeger.wait_for(deployment_id, spans_per_order(3, ("flush-1",)), READ_TIMEOUT_S,
                             ["gateway", "orders"])
    assert [len(t.spans) for t in traces] == [3]


def test_tracing_off_exports_nothing(runtime: LocalRuntime, jaeger: JaegerQuery) -> None:
    runtime.tracing = False
    try:
        with runtime.deploy(sync_chain(1)) as chain:
            assert chain.place_order("dark-1").status_code == 200
            assert runtime.run_dir is not None
            config = (runtime.run_dir / chain.id / "gateway.json").read_text()
            deployment_id = chain.id
    finally:
        runtime.tracing = True
    assert '"otlp_endpoint": null' in config
    time.sleep(1.0)  # longer than an export period
    assert jaeger.deployment_traces(deployment_id, ["gateway", "orders"]) == []


CONTROLLER = """
import sys, time
from testbed.runtime.local import LocalRuntime
runtime = LocalRuntime(tracing=True)
runtime.open()
runtime.jaeger()
print(runtime.run_id, flush=True)
time.sleep(60)
"""


def test_a_dead_controllers_jaeger_is_swept() -> None:
    with subprocess.Popen([sys.executable, "-c", CONTROLLER], stdout=subprocess.PIPE,
                          text=True) as proc:
        try:
            assert proc.stdout is not None
            run_id = proc.stdout.readline().strip()
            assert run_id, "the controller did not come up"
            assert "jaeger" in process_names(run_id)
            proc.send_signal(signal.SIGKILL)
            proc.wait(5)
            assert wait_until_gone(run_id, timeout=15) == []
        finally:
            if proc.poll() is None:
                proc.kill()
