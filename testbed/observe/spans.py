"""A traced trial's spans as a frame, read back from the run's Jaeger after the trial.

One row per span, times on the trial's timeline (seconds from the load's first send), so
the metrics (testbed.scenario.metrics: whole_path_share, slowest_hop_share) and the
report's waterfall read the same raw frame, saved with the run (spans.csv). Each span
also names the hop its own time (self time: not covered by its children) was spent on:
a client span the link its call crossed (``orders-payments``), a producer or consumer
span its service's broker link (``payments-broker``), a server span its service.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import pandas as pd

from testbed.observe.traces import JaegerQuery, Trace, self_time_us
from testbed.topology.model import Topology

SPAN_COLUMNS = ["trace_id", "span_id", "parent_id", "service", "operation", "kind",
                "hop", "start_s", "duration_s", "self_s", "order_id", "error"]
SETTLE_S = 1.5  # spans are exported in batches every 0.5 s: unchanged this long = all in
READ_TIMEOUT_S = 30.0


def hop_of(topology: Topology, service: str, kind: str) -> str:
    """The hop a span's self time was spent on (see the module's docstring)."""
    if kind == "client":
        link = topology.downstream(service)
        return link.name if link is not None else service
    if kind in ("producer", "consumer"):
        link = topology.amqp_link(service)
        return link.name if link is not None else service
    return service


def spans_frame(traces: Iterable[Trace], topology: Topology,
                origin_wall_s: float) -> pd.DataFrame:
    rows = []
    for trace in traces:
        order_ids = sorted(trace.order_ids)
        for span in trace.spans:
            rows.append((span.trace_id, span.span_id, span.parent_id or "", span.service,
                         span.operation, span.kind, hop_of(topology, span.service, span.kind),
                         span.start_us / 1e6 - origin_wall_s, span.duration_s,
                         self_time_us(trace, span) / 1e6,
                         span.order_id or (order_ids[0] if len(order_ids) == 1 else ""),
                         span.error))
    return pd.DataFrame(rows, columns=SPAN_COLUMNS)


def collect_spans(query_url: str, deployment_id: str, topology: Topology,
                  origin_wall_s: float, timeout_s: float = READ_TIMEOUT_S) -> pd.DataFrame:
    """Every span of the deployment, once their count has stopped growing."""
    query = JaegerQuery(query_url)
    services = [s.name for s in topology.services]
    try:
        deadline = time.monotonic() + timeout_s
        count, since = -1, time.monotonic()
        while True:
            traces = query.deployment_traces(deployment_id, services)
            spans = sum(len(t.spans) for t in traces)
            now = time.monotonic()
            if spans != count:
                count, since = spans, now
            elif now - since >= SETTLE_S or now >= deadline:
                return spans_frame(traces, topology, origin_wall_s)
            time.sleep(0.25)
    finally:
        query.close()


def empty_spans() -> pd.DataFrame:
    return pd.DataFrame(columns=SPAN_COLUMNS)
