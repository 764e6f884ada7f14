"""An async stage on Kafka: a consumer group per service, offsets committed after the work.

The business part (parse, work, the charge, the crash point) is async_consumer.Consumer's;
what differs is what a log does with a message:
- each of ``replicas`` members (threads, one librdkafka consumer each) owns the
  partitions the group gives it and takes their messages one at a time, in order; the
  offset is committed (synchronously) after the forward, so a crash before the commit
  means the message is handled again after the restart: at least once;
- a message the handler cannot process, without a retry policy: the member waits
  error_backoff_ms and seeks back to it. A log cannot skip one message and keep the
  rest, so its partition (and the member's other partitions) block behind it, forever;
- with ``consumer_retries`` r (and dead_letter): it goes to ``<service>.retry`` with its
  attempt count and is committed; the retry worker (a thread, group ``<service>.retry``)
  takes those in order, waits until consumer_retry_delay_ms after each was produced,
  and handles it; the failure after the r-th retry goes to ``<service>.dlq``;
- a forward that is not delivered within timeout_s (broker down, link cut): no commit;
  the member waits error_backoff_ms and seeks back, so it is handled again.
A SIGTERM (a graceful stop) closes every consumer, which leaves the group at once (its
partitions go to the others, or the group is empty: what a replay needs); a SIGKILL
leaves it to the 6 s session. ``PUT /admin/members/<n>`` makes member n (not 0, the
main thread) leave the group the same way, and ``DELETE`` brings it back: each is a
rebalance (the member_leave fault).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any
from urllib.parse import parse_qs

from confluent_kafka import Consumer as RdConsumer
from confluent_kafka import KafkaException, Message, TopicPartition

from testbed.services import async_consumer
from testbed.services.async_consumer import AFTER_PROCESS, Consumer, HandlerFailure
from testbed.services.config import ServiceConfig
from testbed.services.kafka_client import (
    ATTEMPT_HEADER,
    KafkaPublisher,
    NotDelivered,
    consumer_settings,
    dead_letter_topic,
    headers_of,
    retry_topic,
)
from testbed.services.wsgi import Environ, Handler, Reply

POLL_S = 0.1
STOP_S = 2.0  # at a SIGTERM, how long the main thread waits for the others to close


class KafkaStage(Consumer):
    """Consumer's handling, over a Kafka consumer group."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        assert self.config.kafka is not None and self.config.consumes is not None
        self.topic = self.config.consumes
        self.publisher = KafkaPublisher(self.config, self.tracing)
        self._seen: dict[tuple[str, int], int] = {}  # highest offset handled, per partition
        self._seen_lock = threading.Lock()

    def start_side_workers(self) -> None:
        self.stopping = threading.Event()
        self.leaving: dict[int, threading.Event] = {}
        self._loops: list[threading.Thread] = []
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())
        if self.knobs.consumer_retries:
            self._start(self._retry_worker, "retry-worker")

    def start_replica(self, replica: int) -> None:
        self.leaving[replica] = threading.Event()
        self._start(self.run_forever, f"replica{replica}", replica)

    def admin_routes(self) -> dict[tuple[str, str], Handler]:
        return member_routes(self)

    def members(self) -> list[int]:
        """The replicas in the group now (assigned, not leaving)."""
        with self._lock:
            return sorted(self._consuming)

    def leave(self, replica: int) -> None:
        """Member ``replica`` closes its consumer: it leaves the group at once."""
        if replica not in self.leaving:
            raise ValueError(f"no member {replica}: members 1-{self.knobs.replicas - 1} "
                             "can leave (0 is the main thread)")
        self.leaving[replica].set()

    def rejoin(self, replica: int) -> None:
        """Member ``replica`` joins again (a new consumer), once it has left."""
        if replica not in self.leaving:
            raise ValueError(f"no member {replica}")
        if self.leaving[replica].is_set():
            self.start_replica(replica)

    def _start(self, target: Any, name: str, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._loops.append(thread)
        thread.start()

    def stop_when_told(self) -> None:
        """The main thread, after its own loop ended: wait for the others to close
        their consumers, export the spans held, and exit."""
        for thread in self._loops:
            thread.join(STOP_S)
        self.tracing.shutdown()
        os._exit(0)

    # -- the consume loops ---------------------------------------------------------------

    def run_forever(self, replica: int) -> None:
        """One group member. librdkafka reconnects by itself (backoff capped at
        reconnect_max_s); the loop only polls, and counts what the broker reports."""
        consumer = self._consumer(self.config.name, self.topic, replica)
        leaving = self.leaving.get(replica, threading.Event())
        while not self.stopping.is_set() and not leaving.is_set():
            message = consumer.poll(POLL_S)
            if message is None:
                continue
            if message.error():
                self.stats.count("reconnects")  # transport errors, reported once each
                continue
            self.on_delivery(consumer, message)
        consumer.close()  # leaves the group now, not after the session
        with self._lock:
            self._consuming.discard(replica)
        if replica == 0:
            self.stop_when_told()

    def _consumer(self, group: str, topic: str, replica: int | None) -> RdConsumer:
        consumer = RdConsumer(consumer_settings(self.config, group))

        def assigned(_: Any, partitions: list[TopicPartition]) -> None:
            if replica is not None:
                with self._lock:
                    self._consuming.add(replica)

        def revoked(_: Any, partitions: list[TopicPartition]) -> None:
            if replica is not None:
                with self._lock:
                    self._consuming.discard(replica)

        consumer.subscribe([topic], on_assign=assigned, on_revoke=revoked, on_lost=revoked)
        return consumer

    def _retry_worker(self) -> None:
        """Take the retry topic in order; each message waits out its delay, then is
        handled like any other (and can fail again: the next retry, or the DLQ)."""
        consumer = self._consumer(retry_topic(self.config.name),
                                  retry_topic(self.config.name), None)
        delay_s = self.knobs.consumer_retry_delay_ms / 1000.0
        while not self.stopping.is_set():
            message = consumer.poll(POLL_S)
            if message is None or message.error():
                continue
            _, produced_ms = message.timestamp()
            time.sleep(max(0.0, produced_ms / 1000.0 + delay_s - time.time()))
            self.on_delivery(consumer, message)
        consumer.close()

    # -- one message ---------------------------------------------------------------------

    def on_delivery(self, consumer: RdConsumer, message: Message) -> None:
        if not self.tracing.enabled:
            self.handle_message(consumer, message)
            return
        with self.tracing.consume(message.topic() or "", headers_of(message),
                                  self.knobs.trace_propagation) as span:
            span.set("messaging.kafka.partition", message.partition() or 0)
            span.set("messaging.kafka.offset", message.offset() or 0)
            self.handle_message(consumer, message)

    def _redelivered(self, message: Message) -> bool:
        where = (message.topic() or "", message.partition() or 0)
        offset = message.offset() or 0
        with self._seen_lock:
            seen = self._seen.get(where, -1)
            self._seen[where] = max(seen, offset)
        return offset <= seen

    def handle_message(self, consumer: RdConsumer, message: Message) -> None:
        self.stats.count("received")
        if self._redelivered(message):
            self.stats.count("redelivered")
        with self.stats.busy():
            self.wait_while_stalled()
            try:
                order = self.handle(message.value() or b"")
            except HandlerFailure as exc:
                self.stats.count("handler_errors")
                self.tracing.fail_current(f"handler failed: {exc}")
                self.fail(consumer, message)
                return
            self.tracing.tag_order(order["order_id"])
            self.side_effect(order["order_id"])
            self.crash.reached(AFTER_PROCESS)
            try:
                if self.config.publishes:
                    self.publisher.publish(message.value() or b"", key=_key(message))
                consumer.commit(message=message, asynchronous=False)
            except (NotDelivered, KafkaException):
                self.stats.count("forward_errors")
                self.again_later(consumer, message)
                return
        self.stats.count("ok")

    def again_later(self, consumer: RdConsumer, message: Message) -> None:
        """Back off, then read this message again: nothing after it in its partition is
        read first (the fetched ones are dropped by the seek)."""
        time.sleep(self.knobs.error_backoff_ms / 1000.0)
        try:
            consumer.seek(TopicPartition(message.topic() or "", message.partition() or 0,
                                         message.offset() or 0))
        except KafkaException:
            self.stats.count("reconnects")  # revoked meanwhile: the group re-reads it

    def fail(self, consumer: RdConsumer, message: Message) -> None:  # type: ignore[override]
        """Retry in place (no policy), or the retry topic, or at the end the DLQ."""
        if not self.knobs.consumer_retries:
            self.again_later(consumer, message)
            return
        attempt = int(headers_of(message).get(ATTEMPT_HEADER, "0") or 0)
        body = message.value() or b""
        try:
            if attempt < self.knobs.consumer_retries:
                self.publisher.publish(body, key=_key(message),
                                       topic=retry_topic(self.config.name),
                                       headers={ATTEMPT_HEADER: str(attempt + 1)})
                counter = "retries_scheduled"
            else:
                self.publisher.publish(body, key=_key(message),
                                       topic=dead_letter_topic(self.config.name))
                counter = "dead_lettered"
            consumer.commit(message=message, asynchronous=False)
        except (NotDelivered, KafkaException):
            self.stats.count("forward_errors")
            self.again_later(consumer, message)
            return
        self.stats.count(counter)


def member_routes(stage: KafkaStage) -> dict[tuple[str, str], Handler]:
    """GET /admin/members: who is in the group; PUT/DELETE /admin/members?member=n: member
    n leaves / joins again."""

    def state(_: Environ) -> Reply:
        return Reply(200, {"name": stage.config.name, "members": stage.members()})

    def member(environ: Environ) -> int:
        value = parse_qs(environ.get("QUERY_STRING", "")).get("member", [""])[0]
        if not value.isdigit():
            raise ValueError("give ?member=<n>")
        return int(value)

    def leave(environ: Environ) -> Reply:
        stage.leave(member(environ))
        return state(environ)

    def rejoin(environ: Environ) -> Reply:
        stage.rejoin(member(environ))
        return state(environ)

    return {("GET", "/admin/members"): state, ("PUT", "/admin/members"): leave,
            ("DELETE", "/admin/members"): rejoin}


def _key(message: Message) -> str | None:
    key = message.key()
    return key.decode(errors="replace") if isinstance(key, bytes) else key


def run(config: ServiceConfig) -> None:
    async_consumer.run(config, KafkaStage)
