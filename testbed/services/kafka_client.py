"""confluent-kafka (librdkafka) settings and the confirmed produce the Kafka services share.

A Kafka service reaches the broker at its own proxy (KafkaTarget.bootstrap), which the
broker also advertises to it (testbed.components.kafka), so every connection it makes
crosses its link. Settings chosen so the model (testbed.model.kafka) can state them:
- producer: acks=all, no linger, the ``consistent`` partitioner (CRC-32 of the key,
  modulo the partitions: kafka_settings.partition_of), and message.timeout.ms = the service's
  timeout_s: librdkafka queues and retries a message while the broker is away, and
  gives up on it (a failed delivery report) after that long, never later;
- consumer: a group per consumer service, offsets committed by hand after the work
  (at least once), from the earliest offset when the group has none, a 6 s session (the
  broker's minimum: a member that died is noticed after that long), fetches answered as
  soon as there is a message;
- both: reconnect backoff capped at the service's reconnect_max_s, as the AMQP services.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaException, Message, Producer

from testbed.services.config import ServiceConfig
from testbed.services.kafka_settings import (
    FETCH_WAIT_MS,
    HEARTBEAT_MS,
    SESSION_TIMEOUT_MS,
)
from testbed.services.tracing import OFF, Tracing, order_of

ATTEMPT_HEADER = "x-attempt"
LOG = logging.getLogger("testbed.kafka.client")


class NotDelivered(OSError):
    """The broker did not take the message within the timeout (down, link cut). An
    OSError, so callers treat it like any lost connection."""


def message_key(body: bytes) -> str | None:
    """An order's message key: its customer key when the order has one (LoadProfile.keys),
    else its order id."""
    try:
        order = json.loads(body)
    except ValueError:
        return None
    if not isinstance(order, dict):
        return None
    key = order.get("key", order.get("order_id"))
    return key if isinstance(key, str) else None


def retry_topic(service: str) -> str:
    return f"{service}.retry"


def dead_letter_topic(service: str) -> str:
    return f"{service}.dlq"


def _common(config: ServiceConfig) -> dict[str, Any]:
    assert config.kafka is not None
    backoff_max_ms = int(config.knobs.reconnect_max_s * 1000)
    return {"bootstrap.servers": config.kafka.bootstrap, "client.id": config.name,
            "reconnect.backoff.ms": min(50, backoff_max_ms),
            "reconnect.backoff.max.ms": backoff_max_ms,
            "socket.connection.setup.timeout.ms": 2000, "logger": LOG,
            # no re-bootstrap after a cut: librdkafka 2.16 would otherwise forget the broker
            # and wait ~1 s for fresh metadata before fetching again (seen in its debug log)
            "metadata.recovery.strategy": "none"}


def producer_settings(config: ServiceConfig) -> dict[str, Any]:
    return {**_common(config), "acks": "all", "linger.ms": 0,
            "partitioner": "consistent",
            "message.timeout.ms": int(config.knobs.timeout_s * 1000)}


def consumer_settings(config: ServiceConfig, group: str) -> dict[str, Any]:
    return {**_common(config), "group.id": group, "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "session.timeout.ms": SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": HEARTBEAT_MS, "fetch.wait.max.ms": FETCH_WAIT_MS,
            "enable.partition.eof": False}


def headers_of(message: Message) -> dict[str, str]:
    """A message's headers as text (trace context, attempt count)."""
    text: dict[str, str] = {}
    pairs: Any = message.headers() or []
    for key, value in pairs:
        text[key] = value.decode(errors="replace") if isinstance(value, bytes) else value or ""
    return text


class KafkaPublisher:
    """One thread-safe producer per process; ``publish`` returns once the broker has the
    message, or raises NotDelivered. A thread serves the delivery reports."""

    def __init__(self, config: ServiceConfig, tracing: Tracing = OFF,
                 topic: str | None = None) -> None:
        self.config = config
        self.topic = topic or config.publishes
        self.timeout_s = config.knobs.timeout_s
        self.tracing = tracing
        self.propagate = config.knobs.trace_propagation
        self.producer = Producer(producer_settings(config))
        threading.Thread(target=self._serve_reports, name="kafka-reports",
                         daemon=True).start()

    def _serve_reports(self) -> None:
        while True:
            self.producer.poll(0.1)

    def publish(self, body: bytes, key: str | None = None, topic: str | None = None,
                headers: Mapping[str, str] | None = None) -> None:
        """Produce ``body`` (keyed by message_key unless told) and wait for its delivery.
        Traced, one producer span, carrying the context when the knob says so."""
        topic = topic or self.topic
        assert topic is not None
        key = key if key is not None else message_key(body)
        carried: dict[str, Any] = dict(headers or {})
        if not self.tracing.enabled:
            self._produce(topic, body, key, carried)
            return
        with self.tracing.publish(topic, topic, carried, self.propagate, order_of(body)):
            self._produce(topic, body, key, carried)

    def _produce(self, topic: str, body: bytes, key: str | None,
                 headers: Mapping[str, str]) -> None:
        done = threading.Event()
        outcome: list[Any] = []

        def report(error: Any, _message: Any) -> None:
            outcome.append(error)
            done.set()

        try:
            self.producer.produce(topic, value=body, key=key, on_delivery=report,
                                  headers=[(k, v.encode()) for k, v in headers.items()])
        except (BufferError, KafkaException) as exc:
            raise NotDelivered(f"produce to {topic} refused: {exc}") from exc
        # message.timeout.ms is timeout_s: the report comes by then; the second is slack
        if not done.wait(self.timeout_s + 1.0):
            raise NotDelivered(f"no delivery report from {topic} within {self.timeout_s} s")
        if outcome[0] is not None:
            raise NotDelivered(f"not delivered to {topic}: {outcome[0].str()}")

    def drop(self) -> None:
        """Nothing to drop: librdkafka reconnects by itself (the AMQP publisher's hook)."""

    def reachable(self) -> bool:
        """Whether the broker answers a metadata request (through the link)."""
        try:
            self.producer.list_topics(timeout=1.0)
        except KafkaException:
            return False
        return True
