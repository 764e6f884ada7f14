"""The async edge: accept an order, store it, publish OrderPlaced (confirmed), answer 202.

On RabbitMQ (pika, below) or on Kafka (kafka_client.KafkaPublisher: a produce keyed by
the order id, waited for up to timeout_s); everything else is the same code.

Three ways to get the event out, set by knobs:
- direct (default): write the order, then publish; a failed publish is compensated (the
  order is taken back, the user gets 503 or 429), but a crash between the write and the
  publish leaves an order whose event never exists: the dual-write gap.
- ``outbox``: order and event in one local transaction; a relay publishes (outbox.py).
- ``request_reply``: publish with a reply address and wait (``timeout_s``) for the last
  stage's answer, so the caller gets a result, not just an acknowledgement.
pika connections are not thread-safe, so each worker thread of the HTTP pool keeps its
own connection and confirm-mode channel, and reconnects once if it finds it broken.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pika
import pika.exceptions

from testbed.services.amqp import PERSISTENT, connection_parameters, with_headers
from testbed.services.common import common_routes, parse_order
from testbed.services.config import ServiceConfig
from testbed.services.crash import CrashPoints
from testbed.services.kafka_client import KafkaPublisher
from testbed.services.ledger import Ledger
from testbed.services.outbox import OutboxStore, relay_forever
from testbed.services.stats import Stats
from testbed.services.tracing import OFF, Tracing, order_of, tracing_for
from testbed.services.work import ServiceTime
from testbed.services.wsgi import Environ, Reply, make_app, serve

AFTER_WRITE = "after_write"  # crash point: order stored, event not yet published
_REFUSED = (pika.exceptions.NackError, pika.exceptions.UnroutableError)


class NoReply(Exception):
    """The request-reply caller's timeout passed without an answer."""


class Publisher:
    """Per-thread confirmed publishing to the topology's exchange."""

    def __init__(self, config: ServiceConfig, tracing: Tracing = OFF) -> None:
        assert config.amqp is not None and config.publishes is not None
        self.target = config.amqp
        self.routing_key = config.publishes
        self.params = connection_parameters(config.amqp, config.knobs.heartbeat_s)
        self._local = threading.local()
        self.tracing = tracing
        self.propagate = config.knobs.trace_propagation

    def _channel(self) -> Any:
        channel = getattr(self._local, "channel", None)
        if channel is None or channel.is_closed:
            connection = pika.BlockingConnection(self.params)
            channel = connection.channel()
            channel.confirm_delivery()
            self._local.connection, self._local.channel = connection, channel
            self._local.reply_queue = None
        return channel

    def drop(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.channel = None
        if connection is not None and connection.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError):
                connection.close()

    def publish(self, body: bytes, properties: pika.BasicProperties = PERSISTENT) -> None:
        """Publish and wait for the broker's confirm; one reconnect on a stale channel.
        A refusal by the broker (NackError: a full queue) is raised at once. Traced, it
        is one producer span (reconnect included), carrying the context when told to."""
        if self.tracing.enabled:
            headers: dict[str, Any] = {}
            with self.tracing.publish(self.target.exchange, self.routing_key, headers,
                                      self.propagate, order_of(body)):
                self._publish(body, with_headers(properties, headers) if headers
                              else properties)
        else:
            self._publish(body, properties)

    def _publish(self, body: bytes, properties: pika.BasicProperties) -> None:
        for attempt in (1, 2):
            try:
                self._channel().basic_publish(self.target.exchange, self.routing_key, body,
                                              properties=properties, mandatory=True)
                return
            except _REFUSED:
                raise
            except (pika.exceptions.AMQPError, OSError):
                self.drop()
                if attempt == 2:
                    raise

    def request(self, body: bytes, timeout_s: float) -> bytes:
        """Publish with this thread's reply queue as the reply address; wait for the
        answer with the same correlation id (late answers to earlier calls are dropped)."""
        channel = self._channel()
        if self._local.reply_queue is None:
            declared = channel.queue_declare("", exclusive=True, auto_delete=True)
            self._local.reply_queue = declared.method.queue
            self._local.replies = {}
            channel.basic_consume(
                self._local.reply_queue, auto_ack=True,
                on_message_callback=lambda _c, _m, props, reply:
                    self._local.replies.__setitem__(props.correlation_id, reply))
        correlation_id = uuid.uuid4().hex
        self.publish(body, pika.BasicProperties(
            content_type="application/json", delivery_mode=2,
            reply_to=self._local.reply_queue, correlation_id=correlation_id))
        deadline = time.monotonic() + timeout_s
        while correlation_id not in self._local.replies:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NoReply(f"no reply within {timeout_s} s")
            self._local.connection.process_data_events(time_limit=min(0.05, left))
        answer: bytes = self._local.replies.pop(correlation_id)
        self._local.replies.clear()  # anything else here is a late answer nobody awaits
        return answer

    def reachable(self) -> bool:
        try:
            self._channel()
        except (pika.exceptions.AMQPError, OSError):
            self.drop()
            return False
        return True


def build_app(config: ServiceConfig):  # type: ignore[no-untyped-def]
    knobs = config.knobs
    stats = Stats(config.name, config.role, knobs.pool_size)
    tracing = tracing_for(config)
    make_publisher = Publisher if config.kafka is None else KafkaPublisher
    publisher = make_publisher(config, tracing)
    crash = CrashPoints(config.name, (AFTER_WRITE,))
    store = OutboxStore(Path(config.ledger_path + ".db")) if knobs.outbox else None
    ledger = store if store is not None else Ledger(Path(config.ledger_path))
    service_time = ServiceTime(knobs, config.name)

    def send(order: dict[str, Any], body: bytes) -> Reply:
        """Direct publish or request-reply; the reply to give the caller."""
        try:
            if knobs.request_reply:
                assert isinstance(publisher, Publisher)  # the topology refuses it on Kafka
                answer = publisher.request(body, knobs.timeout_s)
                stats.count("ok")
                return Reply(200, {"order_id": order["order_id"], "path": [config.name],
                                   "reply": json.loads(answer or b"null")})
            publisher.publish(body)
        except _REFUSED:
            # The broker refused it (a full queue with overflow=reject-publish): tell the
            # client to back off, as an edge with backpressure should.
            stats.count("rejected")
            return Reply(429, {"error": f"{config.name}: queue full, try again later"})
        except NoReply as exc:
            stats.count("reply_timeouts")
            return Reply(504, {"error": f"{config.name}: {exc}"})
        except (pika.exceptions.AMQPError, OSError) as exc:
            stats.count("publish_errors")
            return Reply(503, {"error": f"{config.name}: could not publish: "
                                        f"{type(exc).__name__}"})
        stats.count("ok")
        return Reply(202, {"order_id": order["order_id"], "path": [config.name]})

    def place_order(environ: Environ) -> Reply:
        order = parse_order(environ)
        tracing.tag_order(order["order_id"])
        stats.count("received")
        # The same work as the sync gateway spends (work_ms), so a paired flow compares
        # equal work and differs only in how the rest of the chain is reached.
        if seconds := service_time.next_seconds():
            time.sleep(seconds)
        body = json.dumps(order).encode()
        if store is not None:
            store.record_with_event(order["order_id"], body)
            crash.reached(AFTER_WRITE)
            stats.count("ok")
            return Reply(202, {"order_id": order["order_id"], "path": [config.name]})
        assert isinstance(ledger, Ledger)
        ledger.record(order["order_id"])  # the order is in our database now
        crash.reached(AFTER_WRITE)
        reply = send(order, body)
        if reply.status in (429, 503):
            ledger.forget(order["order_id"])  # compensate: no event went out
        return reply

    routes = common_routes(stats, ledger, healthy=publisher.reachable)
    routes[("POST", "/orders")] = place_order
    routes.update(crash.routes())
    if store is not None:
        relay = make_publisher(config, tracing)  # its spans start traces of their own
        threading.Thread(target=relay_forever, name="outbox-relay", daemon=True,
                         args=(store, relay.publish, relay.drop, stats.count)).start()
    return make_app(routes, stats, tracing=tracing)


def run(config: ServiceConfig) -> None:
    serve(build_app(config), config.host, config.port, config.knobs.pool_size,
          config.knobs.accept_backlog)
