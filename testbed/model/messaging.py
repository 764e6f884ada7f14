"""What the async shape shares whichever broker carries it (RabbitMQ: testbed.model.async_,
Kafka: testbed.model.kafka): the gateway's HTTP front, a consumer's handler, the
pipeline's wiring of services to their broker links, and the sampler's rows.

- Front: the async gateway up to the publish: the hop's HTTP cost plus the work, the
  ledger write, the ``after_write`` crash point; the broker's publish is the subclass's.
  A publish that fails is compensated: the ledger entry is taken back, 503.
- Handler: a consumer's handling of one message: the application fault's check (one draw
  per delivery) or a poison message fails it before the work (``reject_ms``), else its
  own time (``handler_ms``) plus the work; the side effect, charged again on a
  redelivery unless ``idempotent``; the order of first processing (the ledger file's).
- MessagingPipeline: a link per topology link, the services built by role (an
  async_gateway entry and async_consumer stages; anything else is NotModelled), the
  processing order, and every service's counters and gauges as sampler rows.
"""

from __future__ import annotations

import random
from array import array
from collections.abc import Callable, Generator
from typing import Any

import simpy

from testbed.model.calibration import Calibration
from testbed.model.errors import NotModelled
from testbed.model.flow import Gate, Step
from testbed.model.links import Link
from testbed.model.record import Counts, Samples
from testbed.model.server import ORDERS, Server, Visit
from testbed.model.service import Service
from testbed.topology.model import ServiceSpec, Topology

AFTER_PROCESS, AFTER_WRITE = "after_process", "after_write"  # the crash points


class Front(Server):
    """The async gateway: accept, store, then ``publish`` (the broker's part)."""

    def serve(self, visit: Visit) -> Step:
        if not (yield from self.arrive(visit)):
            return None
        if self.chaos.fault is not None and (injected := self.chaos.check(ORDERS)) \
                is not None:
            return self.injected(visit, injected)
        if not (yield from self.spend(visit)):
            return None
        order = visit.order
        self.ledger[order] += 1  # the order is in its database now
        self.stored(order)
        if self.crash_point is not None and self.reached(AFTER_WRITE):
            return None  # died here: the caller's connection drops
        return (yield from self.publish(visit))

    def stored(self, order: int) -> None:
        """The order was written (the outbox writes its event with it)."""

    def publish(self, visit: Visit) -> Generator[simpy.Event, Any, Step | None]:
        """Publish the order's event and answer the caller."""
        raise NotImplementedError

    def _failed(self, visit: Visit) -> Step | None:
        self.counters["publish_errors"] += 1
        self.ledger[visit.order] -= 1  # compensate: no event went out
        return self.reply(visit, 503)


class Handler(Service):
    """A consumer service's handling of one message, whatever delivers it."""

    def __init__(self, env: simpy.Environment, spec: ServiceSpec, calibration: Calibration,
                 ledger: Counts, seed: int, service: str) -> None:
        super().__init__(env, spec, calibration, ledger, seed, service)
        self.publishes = spec.publishes
        self.handler_s = calibration.handler_ms / 1000.0
        self.reject_s = calibration.reject_ms / 1000.0
        self.first: array[int] = array("q")  # orders in the order first processed
        self.path = f"/{spec.name}"  # what an application fault's route matches
        self.stall_gate = Gate(env)  # consumer_stall: the handler hangs before a message

    def cost(self, order: int) -> tuple[bool, float]:
        """Whether the handler fails this delivery, and the seconds it takes: a failure
        comes before the work (no draw of a service time)."""
        if (order < 0 or self.chaos.fault is not None) and self.fails(order):
            return True, self.reject_s
        work = self.work_s
        return False, self.handler_s + (work if work is not None else self.work())

    def fails(self, order: int) -> bool:
        """Whether the handler fails this delivery: the application fault's check
        (one draw per delivery, first), then the message itself (a poison one)."""
        if self.chaos.fault is not None and self.chaos.check(self.path) is not None:
            self.counters["injected_errors"] += 1
            return True
        return order < 0

    def record(self, order: int) -> None:
        """The side effect: charged again on a redelivery unless ``idempotent``. The
        ledger keeps the order of first processing (as the real one, a file), which
        out-of-order metrics read."""
        ledger = self.ledger
        if not ledger[order]:
            self.first.append(order)
        elif self.knobs.idempotent:
            self.counters["duplicates_skipped"] += 1
            return
        ledger[order] += 1

    def revive(self) -> None:
        super().revive()
        self.stall_gate.open()  # a new process is not stalled


GatewayFactory = Callable[[ServiceSpec, Link], Front]
ConsumerFactory = Callable[[ServiceSpec, Link], Handler]


class MessagingPipeline:
    """The links and services of an async topology, whichever broker it runs on."""

    def __init__(self, env: simpy.Environment, topology: Topology,
                 link_rng: random.Random) -> None:
        self.env = env
        self.topology = topology
        self.links: dict[str, Link] = {spec.name: Link(env, spec.name, link_rng)
                                       for spec in topology.links}
        self.into = Link(env, f"user-{topology.entry}", link_rng)  # the users' hop
        self.services: dict[str, Service] = {}
        self.handlers: list[Handler] = []
        self.dlq_ledgers: dict[str, Counts] = {}  # "<service>.dlq" -> by order

    def build(self, gateway: GatewayFactory, consumer: ConsumerFactory) -> Server:
        """Every service on its broker link; the entry (an async_gateway)."""
        topology = self.topology
        entry: Server | None = None
        for spec in topology.services:
            link_spec = topology.amqp_link(spec.name)  # amqp or kafka: its broker link
            assert link_spec is not None  # a valid async topology gives every service one
            link = self.links[link_spec.name]
            if spec.role == "async_gateway":
                front = gateway(spec, link)
                self.services[spec.name] = front
                if spec.name == topology.entry:
                    entry = front
            elif spec.role == "async_consumer":
                handler = consumer(spec, link)
                self.services[spec.name] = handler
                self.handlers.append(handler)
            else:
                raise NotModelled(f"service {spec.name!r}: an http_stage in an async "
                                  "topology is not modelled (only async_gateway entry + "
                                  "async_consumer stages)")
        if entry is None:
            raise NotModelled(f"entry {topology.entry!r}: the model needs an async_gateway "
                              "as the entry of an async topology")
        return entry

    def processing_order(self) -> dict[str, array[int]]:
        """Per consumer, its orders in the order it first processed them."""
        return {handler.name: handler.first for handler in self.handlers}

    def sample_services(self, t: float, samples: Samples) -> None:
        add = samples.add
        for service in self.services.values():
            source = f"service:{service.name}"
            for metric, value in (*service.gauges().items(), *service.counters.items()):
                add(t, source, metric, value)


def sample_queue(samples: Samples, t: float, source: str, ready: int, unacked: int,
                 consumers: int) -> None:
    """One queue's row of the sampler (ready, unacked, messages, consumers)."""
    add = samples.add
    add(t, source, "ready", ready)
    add(t, source, "unacked", unacked)
    add(t, source, "messages", ready + unacked)
    add(t, source, "consumers", consumers)
