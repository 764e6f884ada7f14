"""Builders for the two shapes of the same order flow, and the pair of them.

sync:  gateway -> orders -> payments -> inventory [-> notification -> shipping]
       every hop an HTTP call through its own Toxiproxy proxy.
async: gateway publishes order.placed; payments -> inventory -> notification
       [-> shipping -> billing] each consume the previous stage's event and publish
       their own; every service's AMQP link goes through its own Toxiproxy proxy.
``depth`` is the number of services behind the gateway, 1 to 5, on both sides.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass

from testbed.errors import TopologyError
from testbed.topology.model import BROKER, BrokerSpec, Knobs, LinkSpec, ServiceSpec, Topology

SYNC_STAGES = ("orders", "payments", "inventory", "notification", "shipping")
ASYNC_STAGES = ("payments", "inventory", "notification", "shipping", "billing")
MAX_DEPTH = len(SYNC_STAGES)
ORDER_PLACED = "order.placed"


def _check_depth(depth: object) -> int:
    if not isinstance(depth, int) or isinstance(depth, bool) or not 1 <= depth <= MAX_DEPTH:
        raise TopologyError("depth", f"{depth!r} is not allowed",
                            f"give a whole number from 1 to {MAX_DEPTH}")
    return depth


def _knobs_for(name: str, knobs: Knobs, overrides: Mapping[str, Knobs] | None) -> Knobs:
    return (overrides or {}).get(name, knobs)


def _check_overrides(names: list[str], overrides: Mapping[str, Knobs] | None) -> None:
    unknown = sorted(set(overrides or {}) - set(names))
    if unknown:
        raise TopologyError(f"overrides[{unknown[0]}]", "no such service",
                            f"use one of {names}")


def sync_chain(depth: int = 3, knobs: Knobs | None = None,
               overrides: Mapping[str, Knobs] | None = None,
               name: str = "sync") -> Topology:
    """The synchronous HTTP chain: each hop calls the next and waits for it."""
    depth = _check_depth(depth)
    base = knobs or Knobs()
    names = ["gateway", *SYNC_STAGES[:depth]]
    _check_overrides(names, overrides)
    services = tuple(ServiceSpec(n, "http_stage", _knobs_for(n, base, overrides))
                     for n in names)
    links = tuple(LinkSpec(a, b, "http") for a, b in itertools.pairwise(names))
    return Topology(name=name, shape="sync", entry="gateway", services=services, links=links)


def async_pipeline(depth: int = 3, knobs: Knobs | None = None,
                   overrides: Mapping[str, Knobs] | None = None,
                   name: str = "async", broker: str = "rabbitmq",
                   partitions: int = 1) -> Topology:
    """The asynchronous pipeline: the gateway enqueues, consumers work off the queues
    (RabbitMQ), or off the event topics, a consumer group each (``broker="kafka"``)."""
    depth = _check_depth(depth)
    base = knobs or Knobs()
    stages = list(ASYNC_STAGES[:depth])
    _check_overrides(["gateway", *stages], overrides)
    services = [ServiceSpec("gateway", "async_gateway", _knobs_for("gateway", base, overrides),
                            publishes=ORDER_PLACED)]
    consumed = ORDER_PLACED
    for index, stage in enumerate(stages):
        last = index == len(stages) - 1
        publishes = None if last else f"{stage}.done"
        services.append(ServiceSpec(stage, "async_consumer",
                                    _knobs_for(stage, base, overrides),
                                    consumes=consumed, publishes=publishes))
        consumed = publishes or consumed
    spec = BrokerSpec(kind=broker, partitions=partitions)
    links = tuple(LinkSpec(s.name, BROKER, spec.protocol) for s in services)
    return Topology(name=name, shape="async", entry="gateway", services=tuple(services),
                    links=links, broker=spec)


@dataclass(frozen=True)
class Paired:
    """The same order flow twice: as a synchronous chain and as an asynchronous pipeline."""

    sync: Topology
    async_: Topology

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter((self.sync, self.async_))


def paired(depth: int = 3, knobs: Knobs | None = None,
           sync_overrides: Mapping[str, Knobs] | None = None,
           async_overrides: Mapping[str, Knobs] | None = None) -> Paired:
    """Both shapes with the same depth and knobs, ready to receive the same fault."""
    return Paired(sync_chain(depth, knobs, sync_overrides),
                  async_pipeline(depth, knobs, async_overrides))


SHAPE_BUILDERS = {"sync": sync_chain, "async": async_pipeline}


def build_shape(shape: str, depth: int = 3, knobs: Knobs | None = None) -> list[Topology]:
    """Topologies for a shape name as typed on the command line: sync, async or paired."""
    if shape == "paired":
        return list(paired(depth, knobs))
    if shape not in SHAPE_BUILDERS:
        raise TopologyError("shape", f"unknown shape {shape!r}",
                            "use one of: sync, async, paired")
    return [SHAPE_BUILDERS[shape](depth, knobs)]
