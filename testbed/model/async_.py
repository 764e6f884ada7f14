"""The async shape: the gateway publishes, each consumer works off its own queue.

As testbed/services/async_gateway.py and async_consumer.py do it:
- gateway: a worker takes the order, spends the hop's HTTP cost plus the work, writes
  its ledger, publishes the event and waits for the broker's confirm (the publish
  crosses its link upstream, the confirm downstream), answers 202. A publish that
  fails (its link cut) is compensated: the ledger entry is taken back, the user gets
  503; a full queue with overflow=reject-publish nacks it: 429.
- broker: a queue per consumer service, bound to the event it consumes; it pushes a
  message to a connected replica with a free delivery slot (round-robin), else holds
  it ready. A cut connection's unacked messages go back to the head of the queue.
- consumer: each replica holds up to ``prefetch`` unacked deliveries (a delivery
  crosses its link downstream), handles one at a time: its own time plus the work,
  the ledger (the side effect, before the ack: at-least-once), the publish of its own
  event with confirm, then the ack (upstream), which frees the slot. A replica whose
  link is cut loses its connection; once the link is back it reconnects after a random
  wait in (0, reconnect_max_s] plus the connect time.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Generator
from typing import Any

import simpy

from testbed.model.calibration import Calibration
from testbed.model.errors import NotModelled
from testbed.model.flow import Later, Step
from testbed.model.links import Link
from testbed.model.record import Counts, Samples, Seconds, counts
from testbed.model.server import GONE, WAIT, Server, Visit
from testbed.model.service import Service
from testbed.model.timers import Timers
from testbed.topology.model import ServiceSpec, Topology


class BrokerQueue:
    """One consumer queue: ready messages (order indexes), the replicas consuming it."""

    def __init__(self, name: str, spec: ServiceSpec, dlq: Counts | None) -> None:
        knobs = spec.knobs
        self.name = name
        self.ready: deque[int] = deque()
        self.consumers: list[Replica] = []
        self.redelivered: set[int] = set()
        self.max_length = knobs.max_length
        self.drop_head = knobs.overflow == "drop-head"
        self.dlq = dlq  # dead-letter ledger, with dead_letter: what drop-head dropped
        self.dlq_ready = 0
        self._next = 0

    def _free_replica(self) -> Replica | None:
        consumers = self.consumers
        n = len(consumers)
        for k in range(n):
            i = (self._next + k) % n
            replica = consumers[i]
            if replica.unacked < replica.prefetch:
                self._next = i + 1
                return replica
        return None

    def publish(self, order: int) -> bool:
        """Route one message here; False: refused (full, overflow=reject-publish)."""
        if self.consumers:
            replica = self._free_replica()
            if replica is not None:
                replica.deliver(order)
                return True
        if self.max_length is not None and len(self.ready) >= self.max_length:
            if not self.drop_head:
                return False
            dropped = self.ready.popleft()
            if self.dlq is not None:
                self.dlq[dropped] += 1
                self.dlq_ready += 1
        self.ready.append(order)
        return True

    def requeue(self, orders: list[int]) -> None:
        """Unacked messages of a lost connection: back to the head, in order."""
        if not orders:
            return
        self.ready.extendleft(reversed(orders))
        self.redelivered.update(orders)
        self.dispatch()

    def dispatch(self) -> None:
        ready = self.ready
        while ready and (replica := self._free_replica()) is not None:
            replica.deliver(ready.popleft())

    @property
    def unacked(self) -> int:
        return sum(replica.unacked for replica in self.consumers)


class Gateway(Server):
    """The async_gateway: accept, store, publish (confirmed), answer 202."""

    def __init__(self, env: simpy.Environment, spec: ServiceSpec, calibration: Calibration,
                 ledger: Counts, seed: int, service: str, timers: Timers,
                 queued: Seconds, into: Link, link: Link,
                 pipeline: AsyncPipeline) -> None:
        super().__init__(env, spec, calibration, ledger, seed, service, timers, queued, into)
        self.link = link
        self.pipeline = pipeline
        self.publishes = spec.publishes or ""
        self.confirm_s = calibration.publish_confirm_ms / 1000.0
        self.connect_s = calibration.connect_ms / 1000.0
        self.stale = 0  # worker connections a cut broke: each reconnects at its next publish
        link.on_cut.append(self._cut)

    def _cut(self, link: Link) -> None:
        self.stale = self.knobs.pool_size

    def serve(self, visit: Visit) -> Step:
        env = self.env
        if visit.call.route.upstream:
            if not (yield from self.arrive(visit)):
                return None
        else:
            state = self.admit(visit)
            if state == WAIT:
                if not (yield from self.wait_worker(visit)):
                    return None
            elif state == GONE:
                return None
        if not (yield from self.spend(visit)):
            return None
        order = visit.order
        self.ledger[order] += 1  # the order is in its database now
        link = self.link
        if link.down:
            return self._failed(visit)
        cuts = link.cuts
        connect = 0.0
        if self.stale:  # this worker's connection broke in a cut: it reconnects first
            self.stale -= 1
            connect = self.connect_s
        if connect or link.upstream:
            yield from link.cross("upstream", connect)
            if self.life != visit.life:
                return None
            if link.cuts != cuts:
                return self._failed(visit)
        accepted = self.pipeline.route(self.publishes, order)
        if link.downstream:
            yield from link.cross("downstream", self.confirm_s)
        elif self.confirm_s:
            yield env.timeout(self.confirm_s)
        if self.paused:
            yield from self.thaw()
        if self.life != visit.life:
            return None
        if link.cuts != cuts:
            return self._failed(visit)
        if not accepted:
            self.counters["rejected"] += 1
            self.ledger[order] -= 1
            return self.reply(visit, 429)
        self.counters["ok"] += 1
        return self.reply(visit, 202)

    def _failed(self, visit: Visit) -> Step | None:
        self.counters["publish_errors"] += 1
        self.ledger[visit.order] -= 1  # compensate: no event went out
        return self.reply(visit, 503)


class Replica:
    """One competing consumer of a consumer service: its connection and its thread.

    An idle replica handed a delivery is woken once, when the delivery has arrived and
    its handler has done the work (a Later event), and a busy one takes the next
    delivery in one wait likewise; what happened meanwhile (a cut, a kill, a pause) is
    read when it wakes, from the times: a cut before the delivery arrived means it was
    never handled; one during the work, handled (the ledger written) but not acked.
    """

    def __init__(self, consumer: Consumer, index: int) -> None:
        self.env = consumer.env
        self.consumer = consumer
        self.queue = consumer.queue
        self.link = consumer.link
        self.index = index
        self.prefetch = consumer.knobs.prefetch
        self.connected = True  # the deployment is up before the load starts
        self.epoch = 0  # +1 at every lost connection: a step begun before sees it
        self.lost_at: list[float] = []  # when connection number ``epoch`` was lost
        self.unacked = 0  # delivered and not yet acked, as the broker counts them
        self.inbox: deque[tuple[float, int]] = deque()  # (arrives at, order)
        self.current: int | None = None  # the delivery being handled (unacked)
        self.job: tuple[int, float, float, int, int, int] | None = None
        self.wake: Later | None = None
        self._attempt = 0  # the reconnect attempt that may connect
        self.queue.consumers.append(self)
        self.env.process(self.run())

    def deliver(self, order: int) -> None:
        self.unacked += 1
        consumer, link, env = self.consumer, self.link, self.env
        at = env.now + consumer.delivery_s + link.downstream_s()
        inbox = self.inbox
        if inbox and inbox[-1][0] > at:
            at = inbox[-1][0]  # one stream: a delivery cannot overtake the one before
        wake = self.wake
        if wake is None:
            inbox.append((at, order))
            return
        self.wake = None
        if link.downstream or consumer.paused:
            inbox.append((at, order))
            wake.succeed()  # the loop waits the delivery out itself
        else:
            wake.succeed_in(self._start(at, order) - env.now)

    def _start(self, at: float, order: int) -> float:
        """Begin handling ``order`` once it arrives (at ``at``); when the work ends."""
        consumer = self.consumer
        work = consumer.work_s
        seconds = consumer.handler_s + (work if work is not None else consumer.work())
        start = max(at, self.env.now)
        self.job = (order, start, seconds, self.epoch, consumer.life, consumer.pauses)
        self.current = order
        consumer.counters["received"] += 1
        if order in self.queue.redelivered:
            consumer.counters["redelivered"] += 1
        return start + seconds

    def run(self) -> Generator[simpy.Event, Any, None]:
        env = self.env
        consumer = self.consumer
        inbox = self.inbox
        link = self.link
        route = consumer.pipeline.route
        while True:
            job = self.job
            if job is None:
                if not inbox:
                    self.wake = Later(env)
                    yield self.wake
                    continue
                at, order = inbox[0]
                if at > env.now and link.downstream:  # a removed latency lets it through
                    yield env.any_of([env.timeout(at - env.now), link.eased("downstream")])
                    continue
                if consumer.paused:
                    yield from consumer.thaw()
                    continue
                inbox.popleft()
                end = self._start(at, order)
                if end > env.now:
                    yield env.timeout(end - env.now)
                job = self.job
                assert job is not None
            self.job = None
            order, start, seconds, epoch, life, pauses = job
            if consumer.pauses != pauses or consumer.paused:
                yield from consumer.make_up(start, seconds)
            if consumer.life != life:
                continue  # killed: no side effect
            if self.epoch != epoch and self.lost_at[epoch] <= start:
                continue  # cut before it arrived: never handled, it was requeued
            consumer.record(order)
            if self.epoch != epoch:
                continue  # cut during the work: the publish fails, the message comes again
            if consumer.publishes is not None:
                if link.upstream:
                    yield from link.cross("upstream", 0.0)
                    if self.epoch != epoch:
                        continue
                route(consumer.publishes, order)
                if link.downstream:
                    yield from link.cross("downstream", consumer.confirm_s)
                elif consumer.confirm_s:
                    yield env.timeout(consumer.confirm_s)
                if consumer.paused:
                    yield from consumer.thaw()
                if consumer.life != life or self.epoch != epoch:
                    continue  # no confirm, no ack: the broker delivers it again
            self.current = None
            consumer.counters["ok"] += 1
            if link.upstream:
                env.process(self._ack(epoch))
            else:
                self._acked(epoch)

    def _ack(self, epoch: int) -> Generator[simpy.Event, Any, None]:
        yield from self.link.cross("upstream", 0.0)
        self._acked(epoch)

    def _acked(self, epoch: int) -> None:
        """The broker has the ack: the slot frees, the next ready message comes."""
        if self.epoch != epoch:
            return
        self.unacked -= 1
        queue = self.queue
        if queue.ready:
            self.deliver(queue.ready.popleft())

    def flush(self) -> None:
        """A latency on the link was removed: held deliveries come through now."""
        soonest = self.env.now + self.consumer.delivery_s
        held = [(min(at, soonest), order) for at, order in self.inbox]
        self.inbox.clear()  # in place: run() holds this deque
        self.inbox.extend(held)

    def disconnect(self) -> None:
        """The connection is gone: what it held unacked goes back to the queue."""
        if not self.connected:
            return
        self.connected = False
        self.epoch += 1
        self.lost_at.append(self.env.now)
        self.queue.consumers.remove(self)
        held = [] if self.current is None else [self.current]
        held.extend(order for _, order in self.inbox)
        self.current = None
        self.inbox.clear()
        self.unacked = 0
        self.queue.requeue(held)

    def reconnect(self, fresh: bool = False) -> None:
        """Connect again: at once when the service (re)starts (``fresh``), else once the
        link is back and a random wait in (0, reconnect_max_s] has passed."""
        self._attempt += 1
        self.env.process(self._reconnect(self._attempt, fresh))

    def _reconnect(self, attempt: int, fresh: bool) -> Generator[simpy.Event, Any, None]:
        env, consumer, link = self.env, self.consumer, self.link
        while True:
            if attempt != self._attempt or self.connected or not consumer.alive:
                return
            if link.down:
                yield link.restored
                fresh = False
                continue
            wait = consumer.connect_s
            if not fresh:
                wait += consumer.rng.uniform(0.0, consumer.knobs.reconnect_max_s)
            yield env.timeout(wait)
            if consumer.paused:
                yield from consumer.thaw()
            if attempt != self._attempt or self.connected or not consumer.alive:
                return
            if not link.down:
                break
        self.connected = True
        self.queue.consumers.append(self)
        ready = self.queue.ready
        while ready and self.unacked < self.prefetch:
            self.deliver(ready.popleft())


class Consumer(Service):
    """An async_consumer service: ``replicas`` competing consumers on its queue."""

    def __init__(self, env: simpy.Environment, spec: ServiceSpec, calibration: Calibration,
                 ledger: Counts, seed: int, service: str, queue: BrokerQueue, link: Link,
                 pipeline: AsyncPipeline) -> None:
        super().__init__(env, spec, calibration, ledger, seed, service)
        self.queue = queue
        self.link = link
        self.pipeline = pipeline
        self.publishes = spec.publishes
        self.delivery_s = calibration.delivery_ms / 1000.0
        self.handler_s = calibration.handler_ms / 1000.0
        self.confirm_s = calibration.publish_confirm_ms / 1000.0
        self.connect_s = calibration.connect_ms / 1000.0
        self.replicas = [Replica(self, i) for i in range(spec.knobs.replicas)]
        link.on_cut.append(self._cut)
        link.on_eased.append(self._eased)

    def _eased(self, link: Link, stream: str) -> None:
        if stream == "downstream":
            for replica in self.replicas:
                replica.flush()

    def record(self, order: int) -> None:
        """The side effect: charged again on a redelivery unless ``idempotent``."""
        if self.knobs.idempotent and self.ledger[order]:
            self.counters["duplicates_skipped"] += 1
        else:
            self.ledger[order] += 1

    def _cut(self, link: Link) -> None:
        for replica in self.replicas:
            if replica.connected:
                replica.disconnect()
                self.counters["reconnects"] += 1
            replica.reconnect()

    def kill(self) -> None:
        super().kill()
        for replica in self.replicas:
            replica.disconnect()

    def revive(self) -> None:
        super().revive()
        for replica in self.replicas:
            replica.reconnect(fresh=True)

    def pause(self) -> None:
        """Frozen: it holds its deliveries unacked; after ``heartbeat_s`` without a
        heartbeat the broker closes its connections (RabbitMQ's heartbeat timeout)."""
        if self.paused or not self.alive:
            return
        super().pause()
        self.env.process(self._heartbeat(self.pauses))

    def _heartbeat(self, pause: int) -> Generator[simpy.Event, Any, None]:
        yield self.env.timeout(self.knobs.heartbeat_s)
        if self.paused and self.pauses == pause:
            for replica in self.replicas:
                replica.disconnect()

    def resume(self) -> None:
        super().resume()
        for replica in self.replicas:
            if not replica.connected:
                replica.reconnect()

    def gauges(self) -> dict[str, float]:
        busy = sum(1 for replica in self.replicas if replica.current is not None)
        return {"in_flight": busy,
                "saturation": round(busy / (self.knobs.prefetch * self.knobs.replicas), 3)}


class AsyncPipeline:
    """The gateway, the broker's queues and the consumers, and their AMQP links."""

    def __init__(self, env: simpy.Environment, topology: Topology, calibration: Calibration,
                 timers: Timers, ledgers: dict[str, Counts], queued: Seconds,
                 seed: int, service: str, link_rng: random.Random) -> None:
        self.env = env
        self.topology = topology
        self.links: dict[str, Link] = {}
        for link_spec in topology.links:
            self.links[link_spec.name] = Link(env, link_spec.name, link_rng)
        self.queues: dict[str, BrokerQueue] = {}
        self.routes: dict[str, list[BrokerQueue]] = {}
        self.dlq_ledgers: dict[str, Counts] = {}
        n = len(queued)
        for spec in topology.services:
            if spec.role == "async_consumer" and spec.consumes:
                dlq = counts(n) if spec.knobs.dead_letter else None
                if dlq is not None:
                    self.dlq_ledgers[f"{spec.name}.dlq"] = dlq
                queue = BrokerQueue(spec.name, spec, dlq)
                self.queues[spec.name] = queue
                self.routes.setdefault(spec.consumes, []).append(queue)
        self._check(topology)
        self.services: dict[str, Service] = {}
        self.consumers: list[Consumer] = []
        entry: Server | None = None
        into = Link(env, f"user-{topology.entry}", link_rng)
        for spec in topology.services:
            link = self._amqp(topology, spec.name)
            if spec.role == "async_gateway":
                gateway = Gateway(env, spec, calibration, ledgers[spec.name], seed, service,
                                  timers, queued, into, link, self)
                self.services[spec.name] = gateway
                if spec.name == topology.entry:
                    entry = gateway
            elif spec.role == "async_consumer":
                consumer = Consumer(env, spec, calibration, ledgers[spec.name], seed,
                                    service, self.queues[spec.name], link, self)
                self.services[spec.name] = consumer
                self.consumers.append(consumer)
            else:
                raise NotModelled(f"service {spec.name!r}: an http_stage in an async "
                                  "topology is not modelled (only async_gateway entry + "
                                  "async_consumer stages)")
        if entry is None:
            raise NotModelled(f"entry {topology.entry!r}: the model needs an async_gateway "
                              "as the entry of an async topology")
        self.entry: Server = entry

    def _amqp(self, topology: Topology, name: str) -> Link:
        spec = topology.amqp_link(name)
        assert spec is not None  # a valid async topology gives every async service one
        return self.links[spec.name]

    def _check(self, topology: Topology) -> None:
        for spec in topology.services:
            knobs = spec.knobs
            if knobs.outbox or knobs.request_reply:
                which = "outbox" if knobs.outbox else "request_reply"
                raise NotModelled(f"knob {which} of {spec.name!r}: the model has the "
                                  "direct publish only (compensated on failure)")
            if spec.publishes and spec.role == "async_consumer":
                for queue in self.routes.get(spec.publishes, []):
                    if queue.max_length is not None and not queue.drop_head:
                        raise NotModelled(
                            f"queue {queue.name!r}: overflow=reject-publish on a queue fed "
                            f"by consumer {spec.name!r} (a nacked forward) is not modelled; "
                            "use drop-head there, or reject-publish on the gateway's queue")

    def route(self, key: str, order: int) -> bool:
        """The exchange: a copy for every queue bound to ``key``; False if one refused."""
        accepted = True
        for queue in self.routes.get(key, ()):
            accepted = queue.publish(order) and accepted
        return accepted

    def drained(self) -> bool:
        return not any(queue.ready or queue.unacked for queue in self.queues.values())

    def sample(self, t: float, samples: Samples) -> None:
        add = samples.add
        for queue in self.queues.values():
            source = f"queue:{queue.name}"
            ready, unacked = len(queue.ready), queue.unacked
            add(t, source, "ready", ready)
            add(t, source, "unacked", unacked)
            add(t, source, "messages", ready + unacked)
            add(t, source, "consumers", len(queue.consumers))
            if queue.dlq is not None:
                add(t, f"queue:{queue.name}.dlq", "ready", queue.dlq_ready)
        for service in self.services.values():
            source = f"service:{service.name}"
            for metric, value in (*service.gauges().items(), *service.counters.items()):
                add(t, source, metric, value)
