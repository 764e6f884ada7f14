"""The async shape on RabbitMQ: the gateway publishes, each consumer works off its own
queue. (On Kafka: testbed.model.kafka; what both share: testbed.model.messaging.)

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
  wait in (0, reconnect_max_s] plus the connect time; a restarted one consumes at once
  (``restart_s`` runs until it is ready: consuming).
- a failing message (an application fault on the consumer, or a poison message): the
  handler fails before the work (handler_errors). With ``consumer_retries`` r it is
  published to ``<queue>.retry`` (confirmed) and acked, and comes back to the tail of
  the queue ``consumer_retry_delay_ms`` later, carrying its attempt count; the failure
  after the r-th retry rejects it to ``<queue>.dlq`` (dead_lettered). Without a retry
  policy the handler sleeps ``error_backoff_ms`` holding the delivery, then nacks it
  with requeue: back to the head of the queue, redelivered; a quorum queue with
  ``delivery_limit`` N dead-letters it (``dead_letter``) or drops it instead once it has
  come back N times. What sits in a DLQ is read back as its ledger (by order id; a
  poison message as ``<unreadable>``), as testbed.observe.dead_letters does.
- crash points (crash_at): ``after_process`` kills the consumer after the ledger and
  before the forward and ack (the broker redelivers it); ``after_write`` kills the
  gateway after its ledger write (direct: the event is never published; outbox: the
  restarted relay publishes it). A restarted service's counters start from zero.
- outbox: the gateway writes the order and its event together and answers 202; a
  relay (one per gateway, its own connection) publishes pending events in order, each
  confirmed before the next, backing off 50 ms doubling to 0.5 s while it cannot.
- request_reply: the gateway publishes with a reply address and holds its worker up to
  its ``timeout_s`` for the last stage's reply (200; else 504, reply_timeouts, not
  compensated); the last stage publishes the reply (confirmed) before its ack.
- the broker: down (broker_down) drops every AMQP connection, as a cut of every broker
  link, the queues kept; a memory alarm (memory_alarm) holds every publish until it
  clears (30 s: pika's blocked-connection timeout fails it).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Generator
from typing import Any

import simpy

from testbed.model.calibration import Calibration
from testbed.model.errors import NotModelled
from testbed.model.flow import Gate, Later, Step
from testbed.model.links import Link
from testbed.model.messaging import (
    AFTER_PROCESS,
    Front,
    Handler,
    MessagingPipeline,
    sample_queue,
)
from testbed.model.record import Counts, Samples, Seconds, counts
from testbed.model.server import Visit
from testbed.model.service import Service
from testbed.model.timers import Timers
from testbed.topology.model import ServiceSpec, Topology

BLOCKED_TIMEOUT_S = 30.0  # pika's blocked_connection_timeout (testbed.services.amqp)
RELAY_BACKOFF_MAX_S = 0.5  # testbed.services.outbox


class BrokerQueue:
    """One consumer queue: ready messages (order indexes; a poison message is a
    negative one), the replicas consuming it, its retry and dead-letter queues."""

    def __init__(self, env: simpy.Environment, name: str, spec: ServiceSpec,
                 dlq: Counts | None) -> None:
        knobs = spec.knobs
        self.env = env
        self.name = name
        self.ready: deque[int] = deque()
        self.consumers: list[Replica] = []
        self.redelivered: set[int] = set()
        self.max_length = knobs.max_length
        self.drop_head = knobs.overflow == "drop-head"
        self.delivery_limit = knobs.delivery_limit
        self.retry_s = knobs.consumer_retry_delay_ms / 1000.0
        self.has_retry = bool(knobs.consumer_retries)
        self.returns: dict[int, int] = {}  # nacks per message (a quorum queue counts them)
        self.attempts: dict[int, int] = {}  # the x-attempt header each message carries
        self.parked = 0  # waiting out the delay in <queue>.retry
        self.dlq = dlq  # dead-letter ledger (with dead_letter), by order
        self.dlq_ready = 0
        self.dlq_unreadable = 0  # poison messages in the DLQ
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
            self.dead_letter(self.ready.popleft())
        self.ready.append(order)
        return True

    def dead_letter(self, order: int) -> None:
        """To ``<queue>.dlq`` with dead_letter; without one the broker drops it."""
        if self.dlq is None:
            return
        if order >= 0:
            self.dlq[order] += 1
        else:
            self.dlq_unreadable += 1
        self.dlq_ready += 1

    def nack(self, order: int) -> None:
        """A nack with requeue: back to the head, unless a quorum queue's delivery
        limit is passed (then dead-lettered, or dropped)."""
        if self.delivery_limit is not None:
            returned = self.returns[order] = self.returns.get(order, 0) + 1
            if returned > self.delivery_limit:
                self.dead_letter(order)
                self.dispatch()
                return
        self.requeue([order])

    def park(self, order: int) -> None:
        """Into the delay queue; its TTL sends it back to this queue's tail."""
        self.parked += 1
        self.env.process(self._unpark(order))

    def _unpark(self, order: int) -> Generator[simpy.Event, Any, None]:
        yield self.env.timeout(self.retry_s)
        self.parked -= 1
        self.publish(order)

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


class Gateway(Front):
    """The async_gateway: accept, store, publish (confirmed), answer 202; or store with
    the event (outbox) and answer; or wait for the reply (request_reply)."""

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
        self.delivery_s = calibration.delivery_ms / 1000.0
        self.stale = 0  # worker connections a cut broke: each reconnects at its next publish
        self.relay = Relay(self) if spec.knobs.outbox else None
        self.request_reply = spec.knobs.request_reply
        link.on_cut.append(self._cut)

    def _cut(self, link: Link) -> None:
        self.stale = self.knobs.pool_size
        if self.relay is not None:
            self.relay.stale = True

    def revive(self) -> None:
        """A new process: new connections; the relay finds what is pending."""
        super().revive()
        self.stale = self.knobs.pool_size
        if self.relay is not None:
            self.relay.stale = True
            self.relay.kick()

    def stored(self, order: int) -> None:
        if self.relay is not None:  # with its event, in one transaction
            self.relay.add(order)

    def publish(self, visit: Visit) -> Generator[simpy.Event, Any, Step | None]:
        """The direct publish, confirmed; then the answer (or the reply's wait); with
        the outbox the order is answered at once (the relay publishes its event)."""
        if self.relay is not None:
            self.counters["ok"] += 1
            return self.reply(visit, 202)
        env = self.env
        order = visit.order
        link = self.link
        if link.down:
            return self._failed(visit)
        if self.pipeline.alarm.closed and not (yield from self.pipeline.unblocked(visit.life,
                                                                              self)):
            return None if self.life != visit.life else self._failed(visit)
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
        reply = self.pipeline.await_reply(order) if self.request_reply else None
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
            self.pipeline.awaiting.pop(order, None)
            return self._failed(visit)
        if not accepted:
            self.pipeline.awaiting.pop(order, None)
            self.counters["rejected"] += 1
            self.ledger[order] -= 1
            return self.reply(visit, 429)
        if reply is not None:
            return (yield from self._wait_reply(visit, reply))
        self.counters["ok"] += 1
        return self.reply(visit, 202)

    def _wait_reply(self, visit: Visit,
                    reply: simpy.Event) -> Generator[simpy.Event, Any, Step | None]:
        """Hold the worker until the last stage's reply, at most ``timeout_s``."""
        env = self.env
        if not reply.triggered:
            yield env.any_of([reply, env.timeout(self.knobs.timeout_s)])
        self.pipeline.awaiting.pop(visit.order, None)
        if self.paused:
            yield from self.thaw()
        if self.life != visit.life:
            return None
        if not reply.triggered:
            self.counters["reply_timeouts"] += 1
            return self.reply(visit, 504)  # the order stays stored: no compensation
        self.counters["ok"] += 1
        return self.reply(visit, 200)

    def relay_publish(self, relay: Relay,
                      order: int) -> Generator[simpy.Event, Any, bool | None]:
        """One confirmed publish of the outbox relay: True (confirmed), False (failed:
        try again), None (the gateway died meanwhile)."""
        env, link, life = self.env, self.link, self.life
        if link.down:
            return False
        if self.pipeline.alarm.closed and not (yield from self.pipeline.unblocked(life, self)):
            return None if self.life != life else False
        cuts = link.cuts
        connect = self.connect_s if relay.stale else 0.0
        relay.stale = False
        if connect or link.upstream:
            yield from link.cross("upstream", connect)
            if self.life != life:
                return None
            if link.cuts != cuts:
                return False
        accepted = self.pipeline.route(self.publishes, order)
        if link.downstream:
            yield from link.cross("downstream", self.confirm_s)
        elif self.confirm_s:
            yield env.timeout(self.confirm_s)
        if self.paused:
            yield from self.thaw()
        if self.life != life:
            return None  # routed, not deleted: the restarted relay sends it again
        return accepted and link.cuts == cuts

class Relay:
    """The outbox relay of a gateway: pending events in order, each deleted once its
    publish is confirmed; a failure backs off (50 ms, doubling, at most 0.5 s)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.env = gateway.env
        self.pending: deque[int] = deque()  # in the outbox table: survives a crash
        self.stale = True  # it connects at its first publish
        self._idle: simpy.Event | None = None
        self.env.process(self.run())

    def add(self, order: int) -> None:
        self.pending.append(order)
        self.kick()

    def kick(self) -> None:
        if self._idle is not None:
            idle, self._idle = self._idle, None
            idle.succeed()

    def run(self) -> Generator[simpy.Event, Any, None]:
        env, gateway, pending = self.env, self.gateway, self.pending
        backoff = 0.0
        while True:
            if not pending or not gateway.alive:
                self._idle = env.event()
                yield self._idle
                continue
            life = gateway.life
            sent = yield from gateway.relay_publish(self, pending[0])
            if gateway.life != life or sent is None:
                continue
            if sent:
                pending.popleft()
                gateway.counters["relayed"] += 1
                backoff = 0.0
                continue
            gateway.counters["relay_errors"] += 1
            self.stale = True
            backoff = min(RELAY_BACKOFF_MAX_S, max(0.05, backoff * 2))
            yield env.timeout(backoff)


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
        self.job: tuple[int, float, float, int, int, int, bool] | None = None
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
        if link.downstream or consumer.paused or consumer.stall_gate.closed:
            inbox.append((at, order))
            wake.succeed()  # the loop waits the delivery out itself
        else:
            wake.succeed_in(self._start(at, order) - env.now)

    def _start(self, at: float, order: int) -> float:
        """Begin handling ``order`` once it arrives (at ``at``); when the work ends."""
        consumer = self.consumer
        consumer.counters["received"] += 1
        if order in self.queue.redelivered:
            consumer.counters["redelivered"] += 1
        failed, seconds = consumer.cost(order)
        start = max(at, self.env.now)
        self.job = (order, start, seconds, self.epoch, consumer.life, consumer.pauses,
                    failed)
        self.current = order
        return start + seconds

    def run(self) -> Generator[simpy.Event, Any, None]:
        env = self.env
        consumer = self.consumer
        inbox = self.inbox
        link = self.link
        pipeline = consumer.pipeline
        route = pipeline.route
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
                if consumer.stall_gate.closed:
                    yield consumer.stall_gate.lifted
                    continue
                inbox.popleft()
                end = self._start(at, order)
                if end > env.now:
                    yield env.timeout(end - env.now)
                job = self.job
                assert job is not None
            self.job = None
            order, start, seconds, epoch, life, pauses, failed = job
            if consumer.pauses != pauses or consumer.paused:
                yield from consumer.make_up(start, seconds)
            if consumer.life != life:
                continue  # killed: no side effect
            if self.epoch != epoch and self.lost_at[epoch] <= start:
                continue  # cut before it arrived: never handled, it was requeued
            if failed:
                consumer.counters["handler_errors"] += 1
                if self.epoch == epoch:
                    yield from self._fail(order, epoch, life)
                continue
            consumer.record(order)
            if consumer.crash_point is not None and consumer.reached(AFTER_PROCESS):
                continue  # died between the side effect and the ack: redelivered
            if self.epoch != epoch:
                continue  # cut during the work: the publish fails, the message comes again
            if consumer.publishes is not None or consumer.replies:
                if pipeline.alarm.closed and not (yield from pipeline.unblocked(life, consumer)):
                    continue
                if link.upstream:
                    yield from link.cross("upstream", 0.0)
                    if self.epoch != epoch:
                        continue
                if consumer.publishes is not None:
                    route(consumer.publishes, order)
                else:  # the last stage answers the request-reply caller
                    pipeline.reply(order)
                    consumer.counters["replies"] += 1
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

    def _fail(self, order: int, epoch: int, life: int) -> Generator[simpy.Event, Any, None]:
        """A failed message, as async_consumer.fail() sends it on: the retry queue, the
        DLQ, or (no retry policy) a nack with requeue after ``error_backoff_ms``."""
        consumer, queue = self.consumer, self.queue
        knobs = consumer.knobs
        attempt = queue.attempts.get(order, 0)
        if attempt < knobs.consumer_retries:
            if not (yield from self._confirmed(epoch, life)):
                return
            queue.attempts[order] = attempt + 1
            queue.park(order)
            consumer.counters["retries_scheduled"] += 1
            self.current = None
            self._acked(epoch)
            return
        if knobs.consumer_retries:  # rejected without requeue: the DLX takes it
            queue.dead_letter(order)
            consumer.counters["dead_lettered"] += 1
            self.current = None
            self._acked(epoch)
            return
        if not (yield from consumer.hold(knobs.error_backoff_ms / 1000.0, life)) \
                or self.epoch != epoch:
            return  # gone with the connection: requeued already
        self.current = None
        self.unacked -= 1
        queue.nack(order)

    def _confirmed(self, epoch: int, life: int) -> Generator[simpy.Event, Any, bool]:
        """One publish of the consumer's (to the retry queue), until its confirm."""
        consumer, link, env = self.consumer, self.link, self.env
        pipeline = consumer.pipeline
        if pipeline.alarm.closed and not (yield from pipeline.unblocked(life, consumer)):
            return False
        if link.upstream:
            yield from link.cross("upstream", 0.0)
        if link.downstream:
            yield from link.cross("downstream", consumer.confirm_s)
        elif consumer.confirm_s:
            yield env.timeout(consumer.confirm_s)
        if consumer.paused:
            yield from consumer.thaw()
        return consumer.life == life and self.epoch == epoch

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
            # a (re)started service is ready once consuming: restart_s holds its connect
            wait = 0.0 if fresh else consumer.connect_s + consumer.rng.uniform(
                0.0, consumer.knobs.reconnect_max_s)
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


class Consumer(Handler):
    """An async_consumer service: ``replicas`` competing consumers on its queue."""

    def __init__(self, env: simpy.Environment, spec: ServiceSpec, calibration: Calibration,
                 ledger: Counts, seed: int, service: str, queue: BrokerQueue, link: Link,
                 pipeline: AsyncPipeline) -> None:
        super().__init__(env, spec, calibration, ledger, seed, service)
        self.queue = queue
        self.link = link
        self.pipeline = pipeline
        self.delivery_s = calibration.delivery_ms / 1000.0
        self.confirm_s = calibration.forward_confirm_ms / 1000.0
        self.connect_s = calibration.connect_ms / 1000.0
        self.replies = spec.publishes is None and pipeline.request_reply
        self.replicas = [Replica(self, i) for i in range(spec.knobs.replicas)]
        link.on_cut.append(self._cut)
        link.on_eased.append(self._eased)

    def _eased(self, link: Link, stream: str) -> None:
        if stream == "downstream":
            for replica in self.replicas:
                replica.flush()

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


class AsyncPipeline(MessagingPipeline):
    """The gateway, the broker's queues and the consumers, and their AMQP links."""

    def __init__(self, env: simpy.Environment, topology: Topology, calibration: Calibration,
                 timers: Timers, ledgers: dict[str, Counts], queued: Seconds,
                 seed: int, service: str, link_rng: random.Random) -> None:
        super().__init__(env, topology, link_rng)
        self.delivery_s = calibration.delivery_ms / 1000.0
        self.queues: dict[str, BrokerQueue] = {}
        self.routes: dict[str, list[BrokerQueue]] = {}
        n = len(queued)
        for spec in topology.services:
            if spec.role == "async_consumer" and spec.consumes:
                dlq = counts(n) if spec.knobs.dead_letter else None
                if dlq is not None:
                    self.dlq_ledgers[f"{spec.name}.dlq"] = dlq
                queue = BrokerQueue(env, spec.name, spec, dlq)
                self.queues[spec.name] = queue
                self.routes.setdefault(spec.consumes, []).append(queue)
        self._check(topology)
        self.request_reply = any(s.knobs.request_reply for s in topology.services
                                 if s.role == "async_gateway")
        self.awaiting: dict[int, Later] = {}  # request-reply: the gateway waits on these
        self.alarm = Gate(env)  # a memory alarm: every publish waits (connection.blocked)
        self._poison = 0  # the last poison message's (negative) index

        def gateway(spec: ServiceSpec, link: Link) -> Gateway:
            return Gateway(env, spec, calibration, ledgers[spec.name], seed, service, timers,
                           queued, self.into, link, self)

        def consumer(spec: ServiceSpec, link: Link) -> Consumer:
            return Consumer(env, spec, calibration, ledgers[spec.name], seed, service,
                            self.queues[spec.name], link, self)

        self.entry = self.build(gateway, consumer)

    def _check(self, topology: Topology) -> None:
        for spec in topology.services:
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

    # -- request-reply ------------------------------------------------------------------

    def await_reply(self, order: int) -> Later:
        """The gateway's wait for ``order``'s reply (registered before the publish)."""
        reply = self.awaiting[order] = Later(self.env)
        return reply

    def reply(self, order: int) -> None:
        """The last stage's reply, in the gateway's reply queue a delivery later; one
        nobody waits for any more (a timeout, a second one) is dropped."""
        reply = self.awaiting.pop(order, None)
        if reply is not None and not reply.triggered:
            reply.succeed_in(self.delivery_s)

    # -- the broker ---------------------------------------------------------------------

    def broker_down(self) -> None:
        """Every AMQP connection drops; the (durable) queues keep their messages."""
        for link in self.links.values():
            link.cut()

    def broker_up(self) -> None:
        for link in self.links.values():
            link.restore()

    def unblocked(self, life: int, service: Service) -> Generator[simpy.Event, Any, bool]:
        """Wait out a memory alarm, at most pika's blocked-connection timeout; False if
        it held that long (the publish fails) or ``service`` died meanwhile."""
        env = self.env
        if self.alarm.closed:
            yield env.any_of([self.alarm.lifted, env.timeout(BLOCKED_TIMEOUT_S)])
        return not self.alarm.closed and service.life == life

    def poison(self, queue: str, count: int) -> None:
        """Undecodable messages published straight into ``queue`` (at its tail)."""
        for _ in range(count):
            self._poison -= 1
            self.queues[queue].publish(self._poison)

    def purge(self, queue: str) -> None:
        self.queues[queue].ready.clear()

    def unreadable(self) -> dict[str, int]:
        """Poison messages per DLQ, as its ledger reads them back."""
        return {f"{q.name}.dlq": q.dlq_unreadable for q in self.queues.values()
                if q.dlq_unreadable}

    # -- what the trial observes --------------------------------------------------------

    def drained(self) -> bool:
        return not any(queue.ready or queue.unacked or queue.parked
                       for queue in self.queues.values())

    def sample(self, t: float, samples: Samples) -> None:
        for queue in self.queues.values():
            sample_queue(samples, t, f"queue:{queue.name}", len(queue.ready), queue.unacked,
                         len(queue.consumers))
            if queue.dlq is not None:
                sample_queue(samples, t, f"queue:{queue.name}.dlq", queue.dlq_ready, 0, 0)
            if queue.has_retry:
                sample_queue(samples, t, f"queue:{queue.name}.retry", queue.parked, 0, 0)
        self.sample_services(t, samples)
