"""A Kafka service's connection to the broker (librdkafka's), and its confirmed produce.

As testbed/services/kafka_client.py configures it:
- the connection is up while the service is alive, its link is not cut and the broker
  is up. Once the link is back (or the broker is up again) it reconnects after a random
  wait in (0, reconnect_max_s] (reconnect.backoff.max.ms); a (re)started service is
  connected once it is ready (restart_s holds its connect).
- a produce (key: the order id) waits for its delivery report, at most the service's
  timeout_s (message.timeout.ms is the same): the request crosses the link upstream,
  the broker appends the message, the report crosses back after ``kafka_produce_ms``.
  While the connection is down librdkafka holds the message and sends it once it is
  back; past the timeout it gives up on it (never appended then) and the produce fails,
  after the full timeout_s: it does not fail fast. A message lost on the way is sent
  again on the new connection; a report lost with a connection comes on the next one
  (the message is in the log once). A latency toxic on the link holds each crossing.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Generator
from typing import Any

import simpy

from testbed.model.kafka_log import Topic
from testbed.model.links import Link
from testbed.model.service import Service


class Broker:
    """The deployment's Kafka node: up or down, and every client connected to it."""

    def __init__(self) -> None:
        self.up = True
        self.clients: list[Client] = []


class _Delivery:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False  # the timeout came first: librdkafka dropped the message


class Client:
    """One service's connection; ``on_change`` hooks run when it drops or comes up."""

    def __init__(self, env: simpy.Environment, service: Service, link: Link, broker: Broker,
                 rng: random.Random, produce_s: float) -> None:
        self.env = env
        self.service = service
        self.link = link
        self.broker = broker
        self.rng = rng
        self.produce_s = produce_s
        self.reconnect_max_s = service.knobs.reconnect_max_s
        self.up = True
        self.epoch = 0  # +1 at every drop: a crossing that spans one sees it change
        self.down_at = -math.inf  # when it last dropped
        self.came_up = env.event()  # succeeds when it is next up (replaced at each drop)
        self.on_change: list[Callable[[], None]] = []
        self._attempt = 0  # the reconnect attempt that may connect
        broker.clients.append(self)
        link.on_cut.append(lambda _link: self.drop())
        link.on_restore.append(lambda _link: self.reconnect())

    def drop(self) -> None:
        if not self.up:
            return
        self.up = False
        self.epoch += 1
        self.down_at = self.env.now
        self.came_up = self.env.event()
        for hook in self.on_change:
            hook()

    def reconnect(self, fresh: bool = False) -> None:
        """Connect again: at once when the service (re)starts (``fresh``), else a random
        wait in (0, reconnect_max_s] once the link and the broker are back."""
        self._attempt += 1
        self.env.process(self._reconnect(self._attempt, fresh))

    def _reconnect(self, attempt: int, fresh: bool) -> Generator[simpy.Event, Any, None]:
        env, service, link = self.env, self.service, self.link
        while True:
            if attempt != self._attempt or self.up or not service.alive \
                    or not self.broker.up:
                return  # the broker's return starts another attempt
            if link.down:
                yield link.restored
                fresh = False
                continue
            if not fresh:
                yield env.timeout(self.rng.uniform(0.0, self.reconnect_max_s))
            if service.paused:
                yield from service.thaw()
            if attempt != self._attempt or self.up or not service.alive:
                return
            if not link.down and self.broker.up:
                break
        self.up = True
        self.came_up.succeed()
        for hook in self.on_change:
            hook()

    # -- produce ----------------------------------------------------------------------

    def produce(self, topic: Topic, partition: int, order: int, attempt: int,
                timeout_s: float, life: int) -> Generator[simpy.Event, Any, bool | None]:
        """One message, until its delivery report: True (delivered), False (not within
        ``timeout_s``), None (the service died meanwhile)."""
        env, service, link = self.env, self.service, self.link
        deadline = env.now + timeout_s
        if self.up and not link.upstream and not link.downstream:  # the common case
            epoch = self.epoch
            topic.append(partition, order, attempt)
            if self.produce_s:
                yield env.timeout(self.produce_s)
            delivered = True
            if self.epoch != epoch and not self.up:  # the report comes on the next one
                left = deadline - env.now
                if left > 0:
                    yield env.any_of([self.came_up, env.timeout(left)])
                delivered = self.up
        else:
            state = _Delivery()
            delivery = env.process(self._deliver(topic, partition, order, attempt, life,
                                                 state))
            yield env.any_of([delivery, env.timeout(max(0.0, deadline - env.now))])
            state.cancelled = True
            delivered = bool(delivery.triggered and delivery.value)
        if service.paused:
            yield from service.thaw()
        return delivered if service.life == life else None

    def _deliver(self, topic: Topic, partition: int, order: int, attempt: int, life: int,
                 state: _Delivery) -> Generator[simpy.Event, Any, bool]:
        service, link = self.service, self.link
        while True:
            if service.life != life or state.cancelled:
                return False
            if not self.up:
                yield self.came_up
                continue
            if service.paused:
                yield from service.thaw()
                continue
            epoch = self.epoch
            if link.upstream:
                yield from link.cross("upstream", 0.0)
                if service.life != life or state.cancelled:
                    return False
                if self.epoch != epoch:
                    continue  # lost on the way: sent again on the new connection
            topic.append(partition, order, attempt)
            break
        if link.downstream:
            yield from link.cross("downstream", self.produce_s)
        elif self.produce_s:
            yield self.env.timeout(self.produce_s)
        while not self.up:
            yield self.came_up
        return True
