"""One thread of a Kafka consumer service: a member of its group, or its retry worker.

As testbed/services/kafka_consumer.py runs it (KafkaStage.handle_message):
- a member owns the partitions the group assigned it and takes one message at a time,
  in partition order; with several partitions, the earliest appended of their next
  messages (so a message it must read again stays first). A message is in its hands
  ``kafka_delivery_ms`` after it was appended (or after the fetch that reads it began:
  the group formed, a seek, a reconnect), plus the link's downstream latency; what it
  fetched before its connection dropped it can still take. There is no prefetch limit.
- the retry worker (group ``<service>.retry``) takes the retry topic in order and
  holds each message until ``consumer_retry_delay_ms`` after it was produced.
- per message: received (redelivered if this process has read that offset before),
  the stall (consumer_stall holds it here), the handler (its time plus the work; a
  failure before the work), the side effect, the ``after_process`` crash point, the
  forward produce (the next stage's event, key = order id) until its delivery report,
  then a synchronous commit (a round trip, ``kafka_commit_ms``), then ok.
- a failing message: without a retry policy the thread sleeps error_backoff_ms and seeks
  back to it (it is read again, blocking its partition and the thread's others); with
  ``consumer_retries`` r, attempt n < r is produced to ``<service>.retry`` with attempt
  n + 1 (retries_scheduled), the failure at attempt r to ``<service>.dlq``
  (dead_lettered); either is committed.
- a forward (or retry, or DLQ) produce not delivered within timeout_s, or a commit the
  group refuses (it changed meanwhile): forward_errors, error_backoff_ms, a seek back
  (no commit): the message is read again. A commit waits while the connection is down.
- a graceful stop (KafkaConsumer.stop, the replay fault's SIGTERM): a thread finishes
  the message in its hands (through its commit, or its backoff and seek), takes no
  other and closes its consumer (``closed``); one without a message closes at once. The
  retry worker's message counts as in its hands once fetched, while it waits out its
  delay (the real one sleeps on it, then handles it).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import simpy

from testbed.model.kafka_log import Group, Topic
from testbed.model.messaging import AFTER_PROCESS

if TYPE_CHECKING:
    from testbed.model.kafka import KafkaConsumer

_EPS = 1e-12


class Member:
    """One consumer thread: a member of ``group`` (the retry worker: ``delay_s``)."""

    def __init__(self, consumer: KafkaConsumer, group: Group, delay_s: float = 0.0) -> None:
        self.env = consumer.env
        self.consumer = consumer
        self.group = group
        self.delay_s = delay_s
        self.partitions: list[int] = []
        self.busy = False
        self.wake: simpy.Event | None = None
        self.closed: simpy.Event | None = None  # at a stop: succeeds once it has closed
        group.members.append(self)
        self.env.process(self.run())

    def kick(self) -> None:
        """Something it may be waiting for happened: it looks again."""
        wake, self.wake = self.wake, None
        if wake is not None and not wake.triggered:
            wake.succeed()

    def _sleep(self, seconds: float | None = None) -> simpy.Event:
        wake = self.wake = self.env.event()
        return wake if seconds is None else self.env.any_of([wake, self.env.timeout(seconds)])

    def run(self) -> Generator[simpy.Event, Any, None]:
        env, consumer, group = self.env, self.consumer, self.group
        client = consumer.client
        while True:
            if consumer.paused:
                yield from consumer.thaw()
                continue
            if consumer.stopping and not self._in_hand():
                self.close()
                yield self._sleep()
                continue
            if not (consumer.alive and group.active and self.partitions):
                yield self._sleep()
                continue
            head = self._head()
            if head is None:
                yield self._sleep()
                continue
            p, offset, ready = head
            if not client.up and ready > client.down_at:
                yield self._sleep()  # not fetched before the connection dropped
                continue
            if self.delay_s:
                ready = max(ready, group.topic.partitions[p].at[offset] + self.delay_s)
            if ready > env.now + _EPS:
                yield self._sleep(ready - env.now)
                continue
            group.position[p] = offset + 1
            self.busy = True
            yield from self._handle(p, offset)
            self.busy = False

    def _in_hand(self) -> bool:
        """At a stop: whether it still has a message to finish; between messages only
        the retry worker's fetched one, waiting for its delay."""
        consumer = self.consumer
        if not (self.delay_s and consumer.alive and self.group.active and self.partitions):
            return False
        head = self._head()
        if head is None:
            return False
        client, ready = consumer.client, head[2]
        return ready <= self.env.now + _EPS and (client.up or ready <= client.down_at)

    def close(self) -> None:
        """Its consumer closed: it leaves its group (KafkaConsumer.member_closed)."""
        closed = self.closed
        if closed is not None and not closed.triggered and self.consumer.alive:
            closed.succeed()
            self.consumer.member_closed(self)

    def _head(self) -> tuple[int, int, float] | None:
        """The next message it takes: (partition, offset, when it is in hand)."""
        group = self.group
        parts, position = group.topic.partitions, group.position
        best, best_at = -1, 0.0
        for p in self.partitions:
            pos = position[p]
            at = parts[p].at
            if pos < len(at) and (best < 0 or at[pos] < best_at):
                best, best_at = p, at[pos]
        if best < 0:
            return None
        pos = position[best]
        fetched = group.fetched[best]
        if fetched is not None and fetched[0] == pos:
            return best, pos, fetched[1]
        consumer = self.consumer
        ready = (max(best_at, group.ready_from[best]) + consumer.delivery_s
                 + consumer.link.downstream_s())
        group.fetched[best] = (pos, ready)
        return best, pos, ready

    def _handle(self, p: int, offset: int) -> Generator[simpy.Event, Any, None]:
        consumer, group = self.consumer, self.group
        generation, life = group.generation, consumer.life
        part = group.topic.partitions[p]
        order, attempt = part.orders[offset], part.attempts[offset]
        consumer.counters["received"] += 1
        if consumer.read_before(group, p, offset):
            consumer.counters["redelivered"] += 1
        if consumer.stall_gate.closed:
            yield consumer.stall_gate.lifted
            if consumer.life != life:
                return
        failed, seconds = consumer.cost(order)
        if not (yield from consumer.hold(seconds, life)):
            return  # killed: no side effect
        if failed:
            consumer.counters["handler_errors"] += 1
            yield from self._failed(p, offset, order, attempt, generation, life)
            return
        consumer.record(order)
        if consumer.crash_point is not None and consumer.reached(AFTER_PROCESS):
            return  # died between the side effect and the commit: read again
        out = consumer.out
        target = None if out is None else (out, consumer.pipeline.partition(order), 0)
        if (yield from self._forward(target, order, p, offset, generation, life)):
            consumer.counters["ok"] += 1

    def _failed(self, p: int, offset: int, order: int, attempt: int, generation: int,
                life: int) -> Generator[simpy.Event, Any, None]:
        """Read it again (no retry policy), or produce it to the retry or DLQ topic."""
        consumer = self.consumer
        retries = consumer.knobs.consumer_retries
        if not retries:
            if (yield from consumer.hold(consumer.backoff_s, life)):
                self.group.seek(p, offset, generation, self.env.now)
            return
        topic = consumer.retry_topic if attempt < retries else consumer.dlq
        assert topic is not None  # validation: consumer_retries needs dead_letter
        if (yield from self._forward((topic, 0, attempt + 1), order, p, offset, generation,
                                     life)):
            consumer.counters["retries_scheduled" if attempt < retries
                              else "dead_lettered"] += 1

    def _forward(self, target: tuple[Topic, int, int] | None, order: int, p: int,
                 offset: int, generation: int,
                 life: int) -> Generator[simpy.Event, Any, bool]:
        """Produce ``order`` to ``target`` (topic, partition, attempt; None: nothing to
        produce) until its report, then commit ``offset``: True once committed."""
        if target is not None:
            topic, partition, attempt = target
            delivered = yield from self.consumer.client.produce(
                topic, partition, order, attempt, self.consumer.knobs.timeout_s, life)
            if delivered is None:
                return False
            if not delivered:
                yield from self._again(p, offset, generation, life)
                return False
        return (yield from self._commit(p, offset, generation, life))

    def _again(self, p: int, offset: int, generation: int,
               life: int) -> Generator[simpy.Event, Any, None]:
        """A produce or commit that failed: back off, seek back to the message."""
        consumer = self.consumer
        consumer.counters["forward_errors"] += 1
        if (yield from consumer.hold(consumer.backoff_s, life)):
            self.group.seek(p, offset, generation, self.env.now)

    def _commit(self, p: int, offset: int, generation: int,
                life: int) -> Generator[simpy.Event, Any, bool]:
        """The synchronous commit of ``offset``: True once the coordinator has it."""
        env, consumer, group = self.env, self.consumer, self.group
        client, link = consumer.client, consumer.link
        while True:
            if consumer.life != life:
                return False
            if consumer.paused:
                yield from consumer.thaw()
                continue
            if group.generation != generation:
                yield from self._again(p, offset, generation, life)
                return False
            if not client.up:
                yield self._sleep()  # the connection's return, or the group's change
                continue
            epoch = client.epoch
            if link.upstream:
                yield from link.cross("upstream", 0.0)
                if client.epoch != epoch:
                    continue
            if not group.commit(p, offset + 1, generation):
                continue  # the group changed on the way: refused
            break
        if link.downstream:
            yield from link.cross("downstream", consumer.commit_s)
        elif consumer.commit_s:
            yield env.timeout(consumer.commit_s)
        if consumer.paused:
            yield from consumer.thaw()
        return consumer.life == life
