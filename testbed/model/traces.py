"""The traces a traced run would hold, predicted from its topology, knobs and faults.

The rules (testbed/services/tracing.py and otel.py are what they describe):
- spans per order: at every sync hop a server span, and a client span for its call to
  the next hop; in the async pipeline the gateway's server span and its producer span,
  at each consumer a consumer span, and a producer span when it publishes the next event;
- traces: a sync chain carries the context in its HTTP headers, so an order is one trace.
  A message carries it only with ``trace_propagation`` on at both ends; otherwise each
  consumer's span starts a trace of its own;
- self time (the part of a span its children do not cover): a server span's is its
  service's work plus its HTTP hop cost; a client span's the call's crossing (an HTTP
  hop); a consumer span's its work; a producer span's the produce until its confirm
  (publish_confirm_ms, kafka_produce_ms on Kafka). A latency fault of L ms on a link adds
  L to the self time of the span that waits across it: the caller's client span (sync),
  the producer span of the link's service (async, the confirm crosses it). A consumer's
  delivery crosses its link before its span starts: no span shows that wait.
An order is affected when it is placed inside the fault's window. Spans are placed on
the order's timeline in path order; only the trace ids, the hops and the self times
feed the metrics (whole_path_share, slowest_hop_share), the rest draws the waterfall.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import pandas as pd

from testbed.model.calibration import Calibration
from testbed.observe.spans import SPAN_COLUMNS, hop_of
from testbed.topology.model import Topology

if TYPE_CHECKING:
    from testbed.scenario.faults import ServiceFault

Row = tuple[object, ...]


def _latencies(topology: Topology, faults: Iterable[ServiceFault]
               ) -> list[tuple[str, float, float, float]]:
    """(link, start, end, added seconds) of each latency fault."""
    found = []
    for fault in faults:
        if fault.fault_name != "latency" or not fault.applies_to(topology):
            continue
        added = float(fault.params.get("latency", 0.0)) / 1000.0  # jitter: mean 0
        end = fault.at + (fault.duration if fault.duration is not None else 1e9)
        found += [(link, fault.at, end, added) for link in fault.targets(topology)]
    return found


def _path(topology: Topology) -> list[str]:
    """The services in the order an order meets them."""
    if topology.shape == "sync":
        names, link = [topology.entry], topology.downstream(topology.entry)
        while link is not None:
            names.append(link.target)
            link = topology.downstream(link.target)
        return names
    order, event = [topology.entry], topology.service(topology.entry).publishes
    consumers = {s.consumes: s for s in topology.services if s.consumes}
    while event in consumers:
        order.append(consumers[event].name)
        event = consumers[event].publishes
    return order


def predicted_spans(topology: Topology, requests: pd.DataFrame, calibration: Calibration,
                    faults: Iterable[ServiceFault]) -> pd.DataFrame:
    """One row per span (testbed.observe.spans.SPAN_COLUMNS) for every accepted order."""
    latencies = _latencies(topology, faults)
    hop_s = calibration.http_hop_ms / 1000.0
    confirm_s = (calibration.kafka_produce_ms if topology.on_kafka
                 else calibration.publish_confirm_ms) / 1000.0
    path = _path(topology)
    rows: list[Row] = []
    for order_id, placed in zip(requests["order_id"], requests["t_scheduled"], strict=True):
        if not isinstance(order_id, str):
            continue
        rows += _order_spans(topology, path, order_id, float(placed), hop_s, confirm_s,
                             [(link, added) for link, start, end, added in latencies
                              if start <= placed < end])
    return pd.DataFrame(rows, columns=SPAN_COLUMNS)


def _order_spans(topology: Topology, path: list[str], order_id: str, placed: float,
                 hop_s: float, confirm_s: float,
                 slow: list[tuple[str, float]]) -> list[Row]:
    rows: list[Row] = []
    trace = f"{order_id}-t0"
    clock = placed

    def add(service: str, kind: str, own_s: float, trace_id: str) -> None:
        nonlocal clock
        hop = hop_of(topology, service, kind)
        own_s += sum(added for link, added in slow if link == hop and kind != "consumer")
        rows.append((trace_id, f"{order_id}-{len(rows)}", "", service, kind, kind, hop,
                     clock, own_s, own_s, order_id, False))
        clock += own_s

    sync = topology.shape == "sync"
    for index, service in enumerate(path):
        work_s = topology.service(service).knobs.work_ms / 1000.0
        if sync:
            add(service, "server", work_s + hop_s, trace)
            if index + 1 < len(path):
                add(service, "client", hop_s, trace)
            continue
        spec = topology.service(service)
        if index == 0:
            add(service, "server", work_s + hop_s, trace)
        else:
            upstream = topology.service(path[index - 1]).knobs.trace_propagation
            joined = upstream and spec.knobs.trace_propagation
            if not joined:
                trace = f"{order_id}-t{index}"
            add(service, "consumer", work_s, trace)
        if spec.publishes:
            add(service, "producer", confirm_s, trace)
    return rows
