"""The async shape on Kafka (``Topology.on_kafka``): the gateway produces each order's
event to its topic, each consumer service is a consumer group on the topic it consumes.

As testbed/services/kafka_gateway.py and kafka_consumer.py do it (the topics and
groups: testbed.model.kafka_log; the connection and the produce:
testbed.model.kafka_client; a consumer thread: testbed.model.kafka_member):
- gateway: the RabbitMQ gateway's front (testbed.model.messaging.Front: the HTTP hop,
  the work, the ledger), then a produce of the event (key = order id) until its
  delivery report, at most the gateway's timeout_s: delivered, 202; not delivered in
  time (the broker down, its link cut), after the whole timeout_s: the ledger entry
  taken back, 503, publish_errors. A message produced while the link is cut is
  delivered once it is back and connected again, if still in time (then 202).
- consumer: ``replicas`` members in one process, the partitions split by range
  assignment; the retry worker (with consumer_retries) in a group of its own. No
  prefetch (the knob is RabbitMQ's; so are heartbeat_s and the queue policies).
- the group and the process's fate (a session of ``SESSION_TIMEOUT_S``, 6 s, as the
  real service sets it): while the process sends no heartbeats (its connection down, a
  pause) the group keeps its members for the session; back within it, they read on
  where they were (a cut link: once reconnected). Past it they are out; when they can
  heartbeat again they join and the group forms ``kafka_rejoin_s`` later, from the
  committed offsets (what was handled and not committed is handled again: redelivered,
  a duplicate side effect unless idempotent). A kill (or crash) leaves no group: the
  dead members' sessions hold the group until kill + 6 s; the restarted process joins
  once ready and the group forms at max(ready, kill + 6 s) + kafka_rejoin_s. The broker
  down drops every connection and every group; ``kafka_restart_s`` after the fault's
  removal it is up, each client reconnects within reconnect_max_s, each group forms
  kafka_rejoin_s after its process has.
- consumer_stall: every member and the retry worker hold in the handler until it ends.
- replay (KafkaPipeline.replay, as testbed.faults.broker.Replay): the consumer is
  stopped gracefully (SIGTERM): each member and the retry worker finish the message in
  their hands (the handler, the forward, the commit; the retry worker's polled message
  after its delay too), take no other, and close, leaving their group at once (no
  session to wait for). The process then exits (down: counters from zero in the next
  one): once the first member has closed and each other thread has within
  ``STOP_JOIN_S`` of the previous, at most ``STOP_GRACE_S`` after the stop; a thread
  still busy then dies as killed (no commit) and its group is held for its session.
  Once the group is empty its committed offsets go back to 0 on every partition (the
  retry group's stay), the process is ready ``restart_s`` later and the group forms
  ``kafka_rejoin_s`` after that: every message the topic holds is read again, in
  partition order, by a process that has read none of them (not ``redelivered``; a
  second side effect, or duplicates_skipped when idempotent; forwarded again to the
  next stage). A broker down at the rewind, or a group that had committed nothing, is
  a ModelError, as the real fault fails then (BrokerError, or its check).
- samples: ``queue:<service>`` ready = the group's lag (produced to its topic minus
  committed by the group: the message in a handler counts), unacked 0, messages =
  ready, consumers = the members while the group is formed (0 while it is not: killed,
  broker down, rejoining); ``queue:<service>.retry`` the retry group's lag,
  ``queue:<service>.dlq`` the messages in the DLQ.
- poison(count): unkeyed messages into the consumer's topic, partition 0 (every group
  on that topic meets them). purge, memory_alarm, request_reply and the outbox are
  RabbitMQ's: NotModelled.
"""

from __future__ import annotations

import random
from collections.abc import Generator, Iterable
from typing import Any

import simpy

from testbed.model.calibration import Calibration
from testbed.model.errors import ModelError, NotModelled
from testbed.model.flow import Step
from testbed.model.kafka_client import Broker, Client
from testbed.model.kafka_log import DeadLetters, Group, Topic, partitions_of
from testbed.model.kafka_member import Member
from testbed.model.links import Link
from testbed.model.messaging import Front, Handler, MessagingPipeline, sample_queue
from testbed.model.record import Counts, Samples, Seconds, counts
from testbed.model.server import Visit
from testbed.model.timers import Timers
from testbed.services.kafka_settings import SESSION_TIMEOUT_MS
from testbed.topology.model import ServiceSpec, Topology

SESSION_TIMEOUT_S = SESSION_TIMEOUT_MS / 1000.0
# A graceful stop: the runtimes' SIGKILL after SIGTERM (LocalService.stop's grace, the
# containers' stop timeout), and how long the main thread waits for each other thread
# to close (testbed.services.kafka_consumer.STOP_S) before it exits.
STOP_GRACE_S = 3.0
STOP_JOIN_S = 2.0


class KafkaGateway(Front):
    """The async gateway on Kafka: store, produce (until its report), answer."""

    def __init__(self, env: simpy.Environment, spec: ServiceSpec, calibration: Calibration,
                 ledger: Counts, seed: int, service: str, timers: Timers,
                 queued: Seconds, into: Link, link: Link,
                 pipeline: KafkaPipeline) -> None:
        super().__init__(env, spec, calibration, ledger, seed, service, timers, queued, into)
        self.client = Client(env, self, link, pipeline.broker, self.rng,
                             pipeline.produce_s)
        self.topic = pipeline.topic(spec.publishes or "")
        self.partition = pipeline.partition

    def publish(self, visit: Visit) -> Generator[simpy.Event, Any, Step | None]:
        order = visit.order
        delivered = yield from self.client.produce(self.topic, self.partition(order), order,
                                                   0, self.knobs.timeout_s, visit.life)
        if delivered is None or self.life != visit.life:
            return None
        if not delivered:
            return self._failed(visit)
        self.counters["ok"] += 1
        return self.reply(visit, 202)

    def kill(self) -> None:
        super().kill()
        self.client.drop()

    def revive(self) -> None:
        super().revive()
        self.client.reconnect(fresh=True)


class KafkaConsumer(Handler):
    """An async_consumer on Kafka: its group's members, its retry worker, its session."""

    def __init__(self, env: simpy.Environment, spec: ServiceSpec, calibration: Calibration,
                 ledger: Counts, seed: int, service: str, link: Link,
                 pipeline: KafkaPipeline) -> None:
        super().__init__(env, spec, calibration, ledger, seed, service)
        knobs = spec.knobs
        self.link = link
        self.pipeline = pipeline
        self.delivery_s = calibration.kafka_delivery_ms / 1000.0
        self.commit_s = calibration.kafka_commit_ms / 1000.0
        self.rejoin_s = calibration.kafka_rejoin_s
        self.backoff_s = knobs.error_backoff_ms / 1000.0
        self.client = Client(env, self, link, pipeline.broker, self.rng,
                             calibration.kafka_forward_ms / 1000.0)
        self.client.on_change.append(self._connection)
        link.on_eased.append(self._eased)
        self.out = pipeline.topic(spec.publishes) if spec.publishes else None
        self.group = Group(spec.name, pipeline.topic(spec.consumes or ""))
        self.members = [Member(self, self.group) for _ in range(knobs.replicas)]
        self.group.assign()
        self.groups = [self.group]
        self.retry_topic: Topic | None = None
        self.retry_group: Group | None = None
        if knobs.consumer_retries:
            self.retry_topic = Topic(env, f"{spec.name}.retry", 1)
            self.retry_group = Group(self.retry_topic.name, self.retry_topic)
            self.members.append(Member(self, self.retry_group,
                                       knobs.consumer_retry_delay_ms / 1000.0))
            self.retry_group.assign()
            self.groups.append(self.retry_group)
        self.dlq = DeadLetters(env, f"{spec.name}.dlq", pipeline.dlq_ledger(spec.name)) \
            if knobs.dead_letter else None
        self._read: dict[str, list[int]] = {}  # per group: highest offset read + 1
        self._beating = True  # heartbeats reach the coordinator
        self._beat = 0  # +1 whenever they stop or start: a pending expiry sees it
        self.stopping = False  # a SIGTERM came: each thread closes after its message

    def read_before(self, group: Group, partition: int, offset: int) -> bool:
        """Whether this process read ``offset`` before (the real one's _redelivered)."""
        read = self._read.get(group.name)
        if read is None:
            read = self._read[group.name] = [0] * len(group.position)
        again = offset < read[partition]
        if not again:
            read[partition] = offset + 1
        return again

    # -- the session ------------------------------------------------------------------

    def _heartbeats(self) -> bool:
        return self.alive and not self.paused and self.client.up

    def _kick(self) -> None:
        for member in self.members:
            member.kick()

    def _connection(self) -> None:
        if self.client.up:
            for group in self.groups:
                group.refetch(self.env.now)
            self._regained()
        else:
            self._lost()
        self._kick()

    def _eased(self, link: Link, stream: str) -> None:
        if stream == "downstream":  # held fetches come through now
            for group in self.groups:
                group.fetched = [None] * len(group.fetched)
            self._kick()

    def _lost(self) -> None:
        """Heartbeats stop: the coordinator keeps the members for the session."""
        if not self._beating:
            return
        self._beating = False
        self._beat += 1
        self.env.process(self._expire(self._beat))

    def _expire(self, beat: int) -> Generator[simpy.Event, Any, None]:
        yield self.env.timeout(SESSION_TIMEOUT_S)
        if self._beat == beat and not self._heartbeats():
            for group in self.groups:
                group.leave()

    def _regained(self) -> None:
        """Heartbeats again: the members go on, or (out of the group) join it."""
        if not self._heartbeats():
            return
        if not self._beating:
            self._beating = True
            self._beat += 1
        for group in self.groups:
            if not group.active:
                self._join(group)

    def _join(self, group: Group) -> None:
        if self.stopping:
            return  # a closed consumer joins nothing
        group.joining += 1
        at = max(self.env.now, group.blocked_until) + self.rejoin_s
        self.env.process(self._formed(group, group.joining, at))

    def _formed(self, group: Group, attempt: int,
                at: float) -> Generator[simpy.Event, Any, None]:
        yield self.env.timeout(at - self.env.now)
        if group.joining == attempt and not group.active and self._heartbeats() \
                and not self.stopping:
            group.form(self.env.now)

    def drop_groups(self, held_until: float) -> None:
        """Every group of this process is without members; a new generation cannot form
        before ``held_until`` (dead members' sessions)."""
        for group in self.groups:
            group.leave()
            group.blocked_until = held_until

    # -- the process ------------------------------------------------------------------

    def kill(self) -> None:
        """Its members vanish without leaving: their sessions run out in 6 s."""
        self._gone(self.groups)

    def _gone(self, held: Iterable[Group]) -> None:
        """The process is gone; the groups in ``held`` (a member that did not leave)
        cannot form again before its session has run out."""
        super().kill()
        self._beating = False
        self._beat += 1
        held_until = self.env.now + SESSION_TIMEOUT_S
        holding = set(held)
        for group in self.groups:
            group.leave()
            if group in holding:
                group.blocked_until = held_until
        self.client.drop()

    def revive(self) -> None:
        super().revive()
        self.stopping = False
        for member in self.members:
            member.closed = None
        self._read.clear()  # a new process has read nothing
        self.client.reconnect(fresh=True)

    def stop(self) -> Generator[simpy.Event, Any, None]:
        """A graceful stop (SIGTERM), until the process is gone: each thread finishes
        the message in its hands and closes its consumer (Member.close: the group is
        left once all its members have); the main thread (member 0), once closed,
        waits up to STOP_JOIN_S for each other thread in turn (the retry worker first,
        as it was started first), then the process exits; STOP_GRACE_S after the
        SIGTERM the runtime kills it. A thread not closed by then dies there."""
        if not self.alive:
            return  # nothing to stop
        env, life = self.env, self.life
        if self.paused:
            self.resume()  # the stop sends SIGCONT first
        self.stopping = True
        for member in self.members:
            member.closed = env.event()
        self._kick()
        deadline = env.now + STOP_GRACE_S
        replicas = self.members[:self.knobs.replicas]
        order = [replicas[0], *self.members[self.knobs.replicas:], *replicas[1:]]
        for index, member in enumerate(order):
            until = deadline if index == 0 else min(deadline, env.now + STOP_JOIN_S)
            closed = member.closed
            if closed is not None and not closed.triggered and until > env.now:
                yield env.any_of([closed, env.timeout(until - env.now)])
            if self.life != life:
                return  # killed meanwhile
        self._gone(m.group for m in self.members
                   if m.closed is None or not m.closed.triggered)

    def member_closed(self, member: Member) -> None:
        """``member`` closed its consumer: its group is left once every member has."""
        group = member.group
        if all(m.closed is not None and m.closed.triggered
               for m in self.members if m.group is group):
            group.leave()

    def pause(self) -> None:
        """Frozen, heartbeats too: the group drops it after the session."""
        if self.paused or not self.alive:
            return
        super().pause()
        self._lost()

    def resume(self) -> None:
        if not self.paused:
            return
        super().resume()
        self._regained()
        self._kick()

    def gauges(self) -> dict[str, float]:
        busy = sum(1 for member in self.members if member.busy)
        return {"in_flight": busy, "saturation": round(busy / len(self.members), 3)}


class KafkaPipeline(MessagingPipeline):
    """The gateway, the topics and groups, the consumers, and their Kafka links."""

    def __init__(self, env: simpy.Environment, topology: Topology, calibration: Calibration,
                 timers: Timers, ledgers: dict[str, Counts], queued: Seconds,
                 seed: int, service: str, link_rng: random.Random,
                 ids: Iterable[str]) -> None:
        super().__init__(env, topology, link_rng)
        _check(topology)
        assert topology.broker is not None
        self.partitions = topology.broker.partitions
        self._partition = partitions_of(ids, self.partitions)
        self.produce_s = calibration.kafka_produce_ms / 1000.0
        self.broker = Broker()
        self.topics: dict[str, Topic] = {}
        self._n = len(queued)
        self._poison = 0  # the last poison message's (negative) index

        def gateway(spec: ServiceSpec, link: Link) -> KafkaGateway:
            return KafkaGateway(env, spec, calibration, ledgers[spec.name], seed, service,
                                timers, queued, self.into, link, self)

        def consumer(spec: ServiceSpec, link: Link) -> KafkaConsumer:
            return KafkaConsumer(env, spec, calibration, ledgers[spec.name], seed, service,
                                 link, self)

        self.entry = self.build(gateway, consumer)
        self.consumers = [s for s in self.services.values() if isinstance(s, KafkaConsumer)]
        self.queues: dict[str, Group] = {c.name: c.group for c in self.consumers}

    def topic(self, event: str) -> Topic:
        """The event's topic (made on first use, as the deployment creates them)."""
        topic = self.topics.get(event)
        if topic is None:
            topic = self.topics[event] = Topic(self.env, event, self.partitions)
        return topic

    def partition(self, order: int) -> int:
        """Where a message keyed by ``order``'s id goes."""
        return 0 if self._partition is None or order < 0 else self._partition[order]

    def dlq_ledger(self, name: str) -> Counts:
        ledger = self.dlq_ledgers[f"{name}.dlq"] = counts(self._n)
        return ledger

    # -- faults -----------------------------------------------------------------------

    def poison(self, queue: str, count: int) -> None:
        """Unkeyed, undecodable messages into the topic ``queue`` reads: partition 0."""
        topic = self.queues[queue].topic
        for _ in range(count):
            self._poison -= 1
            topic.append(0, self._poison)

    def purge(self, queue: str) -> None:
        raise NotModelled("purge on Kafka: a log is not purged (the fault is RabbitMQ's)")

    def replay(self, queue: str, restart_s: float) -> Generator[simpy.Event, Any, None]:
        """The replay fault's inject: ``queue``'s consumer stopped gracefully, its
        group (once empty) set back to offset 0 of every partition, the consumer
        started again, ready ``restart_s`` later (the group forms kafka_rejoin_s after)."""
        env = self.env
        consumer = next(c for c in self.consumers if c.name == queue)
        group = consumer.group
        yield from consumer.stop()
        if group.blocked_until > env.now:  # a member that did not leave: its session
            yield env.timeout(group.blocked_until - env.now)
        if not self.broker.up:
            raise ModelError(f"replay on model/{queue}: the broker is down at the rewind, "
                             "so the group's offsets cannot be set back (the real fault "
                             "fails with a BrokerError)")
        rewound = group.rewind()
        if not rewound:
            raise ModelError(f"replay on model/{queue}: the group had committed nothing "
                             f"at {env.now:g} s, so there is nothing to read again (the "
                             "real fault's check fails); replay after the consumer has "
                             "handled messages")
        yield env.timeout(restart_s)
        consumer.revive()

    def broker_down(self) -> None:
        """Every connection drops, every group is gone; the logs and offsets stay."""
        self.broker.up = False
        for consumer in self.consumers:
            consumer.drop_groups(-float("inf"))
        for client in self.broker.clients:
            client.drop()

    def broker_up(self) -> None:
        self.broker.up = True
        for client in self.broker.clients:
            if client.service.alive:
                client.reconnect()

    def unreadable(self) -> dict[str, int]:
        """Poison messages per DLQ, as its ledger reads them back."""
        return {c.dlq.name: c.dlq.unreadable for c in self.consumers
                if c.dlq is not None and c.dlq.unreadable}

    # -- what the trial observes ------------------------------------------------------

    def drained(self) -> bool:
        return not any(group.lag for c in self.consumers for group in c.groups)

    def sample(self, t: float, samples: Samples) -> None:
        for consumer in self.consumers:
            for group in consumer.groups:
                members = sum(1 for m in consumer.members if m.group is group)
                sample_queue(samples, t, f"queue:{group.name}", group.lag, 0,
                             members if group.active else 0)
            if consumer.dlq is not None:
                sample_queue(samples, t, f"queue:{consumer.dlq.name}", consumer.dlq.size, 0, 0)
        self.sample_services(t, samples)


def _check(topology: Topology) -> None:
    """What only RabbitMQ has (validation refuses it on Kafka; said plainly anyway)."""
    for spec in topology.services:
        for knob in ("request_reply", "outbox"):
            if getattr(spec.knobs, knob):
                raise NotModelled(f"services[{spec.name}].knobs.{knob} on Kafka is not "
                                  "modelled (it is RabbitMQ's)")
