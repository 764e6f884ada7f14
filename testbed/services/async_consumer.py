"""An async stage: consume the previous stage's event, do its part, publish its own, ack.

Manual acks after the work and the (confirmed) publish, so a crash before the ack means
redelivery, not loss: at-least-once, as a real consumer would run. The consume loop
reconnects with capped backoff; /health reports whether every replica is consuming.

Knobs decide what a failing message does (nack and requeue at once, or wait in the
retry queue ``consumer_retries`` times, then the dead-letter queue), whether a redelivered
order is charged again (``idempotent``), and how many competing consumers share the
queue (``replicas``, one connection each). The last stage answers a request-reply.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pika
import pika.exceptions

from testbed.services.amqp import connection_parameters
from testbed.services.chaos import AppChaos
from testbed.services.common import common_routes
from testbed.services.config import ServiceConfig
from testbed.services.crash import CrashPoints
from testbed.services.ledger import Ledger
from testbed.services.stats import Stats
from testbed.services.tracing import OFF, Tracing, order_of, tracing_for
from testbed.services.work import ServiceTime
from testbed.services.wsgi import Environ, Handler, Reply, make_app, serve

ATTEMPT_HEADER = "x-attempt"
AFTER_PROCESS = "after_process"  # crash point: side effect done, not yet acked


class HandlerFailure(Exception):
    """The handler could not process this message (poison, or an injected failure)."""


class Consumer:
    def __init__(self, config: ServiceConfig, stats: Stats, ledger: Ledger,
                 chaos: AppChaos, crash: CrashPoints, tracing: Tracing = OFF) -> None:
        assert config.queue is not None
        self.config = config
        self.knobs = config.knobs
        self.stats = stats
        self.ledger = ledger
        self.chaos = chaos
        self.crash = crash
        self.params = (connection_parameters(config.amqp, config.knobs.heartbeat_s)
                       if config.amqp is not None else None)
        self._consuming: set[int] = set()
        self._lock = threading.Lock()
        self.stalled = threading.Event()
        self.service_time = ServiceTime(config.knobs, config.name)
        self.tracing = tracing

    @property
    def consuming(self) -> bool:
        with self._lock:
            return len(self._consuming) == self.knobs.replicas

    def on_message(self, channel: Any, method: Any, props: Any, body: bytes) -> None:
        """One delivery; traced, a consumer span (a new trace unless the context came in
        the message's headers and trace_propagation is on)."""
        if not self.tracing.enabled:
            self.process(channel, method, props, body)
            return
        with self.tracing.consume(self.config.queue or "", props.headers,
                                  self.knobs.trace_propagation) as span:
            span.set("messaging.rabbitmq.redelivered", bool(method.redelivered))
            self.process(channel, method, props, body)

    def process(self, channel: Any, method: Any, props: Any, body: bytes) -> None:
        self.stats.count("received")
        if method.redelivered:
            self.stats.count("redelivered")
        with self.stats.busy():
            # Holding its deliveries unacked; sleeping through the connection keeps
            # heartbeats going, so the broker keeps waiting too.
            self.wait_while_stalled(channel.connection.sleep)
            try:
                order = self.handle(body)
            except HandlerFailure as exc:
                self.stats.count("handler_errors")
                self.tracing.fail_current(f"handler failed: {exc}")
                self.fail(channel, method, props, body)
                return
            self.tracing.tag_order(order["order_id"])
            self.side_effect(order["order_id"])
            self.crash.reached(AFTER_PROCESS)
            self.forward(channel, props, body)
            channel.basic_ack(method.delivery_tag)
        self.stats.count("ok")

    def handle(self, body: bytes) -> dict[str, Any]:
        """The business part: parse the event and do the work."""
        if self.chaos.check("CONSUME", f"/{self.config.queue}") is not None:
            self.stats.count("injected_errors")
            raise HandlerFailure("injected failure")
        try:
            order = json.loads(body)
        except ValueError as exc:
            raise HandlerFailure("not JSON") from exc
        if not isinstance(order, dict) or not isinstance(order.get("order_id"), str):
            raise HandlerFailure("event without an order_id")
        seconds = self.service_time.next_seconds()  # one sequence for all replicas
        if seconds:
            time.sleep(seconds)
        return order

    def side_effect(self, order_id: str) -> None:
        """The charge. It happens before the ack: a crash in between means the broker
        redelivers; a naive consumer charges again, an idempotent one skips it."""
        if not self.knobs.idempotent:
            self.ledger.record(order_id)
        elif not self.ledger.record_once(order_id):
            self.stats.count("duplicates_skipped")

    def forward(self, channel: Any, props: Any, body: bytes) -> None:
        """Publish this stage's event (carrying any reply address on), or, at the last
        stage, answer the request-reply caller."""
        assert self.config.amqp is not None
        if self.config.publishes:
            properties = pika.BasicProperties(
                content_type="application/json", delivery_mode=2,
                reply_to=props.reply_to, correlation_id=props.correlation_id)
            self.publish(channel, self.config.amqp.exchange, self.config.publishes, body,
                         properties, mandatory=True)
        elif props.reply_to:
            self.publish(channel, "", props.reply_to, body, pika.BasicProperties(
                content_type="application/json", correlation_id=props.correlation_id))
            self.stats.count("replies")

    def publish(self, channel: Any, exchange: str, routing_key: str, body: bytes,
                properties: pika.BasicProperties, mandatory: bool = False) -> None:
        """basic_publish; traced, inside a producer span that, with trace_propagation,
        puts the trace context into the message's headers."""
        if not self.tracing.enabled:
            channel.basic_publish(exchange, routing_key, body, properties=properties,
                                  mandatory=mandatory)
            return
        headers: dict[str, Any] = {}
        with self.tracing.publish(exchange, routing_key, headers,
                                  self.knobs.trace_propagation, order_of(body)):
            if headers:
                properties.headers = {**(properties.headers or {}), **headers}
            channel.basic_publish(exchange, routing_key, body, properties=properties,
                                  mandatory=mandatory)

    def fail(self, channel: Any, method: Any, props: Any, body: bytes) -> None:
        """What a failed message does next, per the knobs. The backoff keeps a requeue
        loop from burning a core."""
        attempt = int((props.headers or {}).get(ATTEMPT_HEADER, 0))
        if attempt < self.knobs.consumer_retries:
            # Park it in the delay queue; its TTL sends it back to this queue later.
            headers = {**(props.headers or {}), ATTEMPT_HEADER: attempt + 1}
            retry = pika.BasicProperties(
                content_type="application/json", delivery_mode=2, headers=headers,
                reply_to=props.reply_to, correlation_id=props.correlation_id)
            self.publish(channel, "", f"{self.config.queue}.retry", body, retry,
                         mandatory=True)
            channel.basic_ack(method.delivery_tag)
            self.stats.count("retries_scheduled")
            return
        if self.knobs.consumer_retries:
            channel.basic_reject(method.delivery_tag, requeue=False)  # to the DLQ
            self.stats.count("dead_lettered")
            return
        # No retry policy: give it back to the broker, which redelivers it, dead-letters
        # it or drops it per the queue's policy (delivery limit, DLX).
        time.sleep(self.knobs.error_backoff_ms / 1000.0)
        channel.basic_nack(method.delivery_tag, requeue=True)

    def start_side_workers(self) -> None:
        """Threads besides the replicas (none here; Kafka's retry worker)."""

    def admin_routes(self) -> dict[tuple[str, str], Handler]:
        """Routes of this consumer's own (Kafka's: its group's members)."""
        return {}

    def start_replica(self, replica: int) -> None:
        threading.Thread(target=self.run_forever, args=(replica,), name=f"replica{replica}",
                         daemon=True).start()

    def wait_while_stalled(self, sleep: Callable[[float], object] = time.sleep) -> None:
        """Stuck in the handler while a consumer_stall lasts, holding what it has."""
        while self.stalled.is_set():
            sleep(0.05)

    def run_forever(self, replica: int) -> None:
        failures = 0
        while True:
            try:
                connection = pika.BlockingConnection(self.params)
                channel = connection.channel()
                channel.confirm_delivery()
                channel.basic_qos(prefetch_count=self.knobs.prefetch)
                channel.basic_consume(self.config.queue, self.on_message)
                with self._lock:
                    self._consuming.add(replica)
                failures = 0
                channel.start_consuming()
            except (pika.exceptions.AMQPError, OSError):
                self.stats.count("reconnects")
            finally:
                with self._lock:
                    self._consuming.discard(replica)
            failures += 1
            time.sleep(min(self.knobs.reconnect_max_s, 0.05 * 2 ** min(failures, 8)))


def stall_routes(consumer: Consumer) -> dict[tuple[str, str], Handler]:
    """PUT /admin/stall freezes message handling (not the process); DELETE ends it."""

    def state(_: Environ) -> Reply:
        return Reply(200, {"name": consumer.config.name, "stalled": consumer.stalled.is_set()})

    def stall(environ: Environ) -> Reply:
        consumer.stalled.set()
        return state(environ)

    def unstall(environ: Environ) -> Reply:
        consumer.stalled.clear()
        return state(environ)

    return {("GET", "/admin/stall"): state, ("PUT", "/admin/stall"): stall,
            ("DELETE", "/admin/stall"): unstall}


def run(config: ServiceConfig, kind: type[Consumer] = Consumer) -> None:
    """Serve the admin routes and consume, on RabbitMQ (Consumer) or Kafka (the
    KafkaStage subclass, kafka_consumer.py, which passes itself as ``kind``)."""
    slots = config.knobs.prefetch if config.kafka is None else 1
    stats = Stats(config.name, config.role, slots * config.knobs.replicas)
    ledger = Ledger(Path(config.ledger_path))
    chaos = AppChaos(config.name)
    crash = CrashPoints(config.name, (AFTER_PROCESS,))
    tracing = tracing_for(config)
    consumer = kind(config, stats, ledger, chaos, crash, tracing)
    routes = common_routes(stats, ledger, healthy=lambda: consumer.consuming)
    routes.update(stall_routes(consumer))
    routes.update(consumer.admin_routes())
    routes.update(crash.routes())
    app = make_app(routes, stats, chaos, tracing)
    threading.Thread(target=serve, args=(app, config.host, config.port, 2, 16),
                     name="http", daemon=True).start()
    consumer.start_side_workers()
    for replica in range(1, config.knobs.replicas):
        consumer.start_replica(replica)
    consumer.run_forever(0)
