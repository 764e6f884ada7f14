"""An async stage: consume the previous stage's event, do its part, publish its own, ack.

Manual acks after the work and the (confirmed) publish, so a crash before the ack means
redelivery, not loss: at-least-once, as a real consumer would run. The consume loop
reconnects with capped backoff; /health reports whether it is consuming right now.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pika
import pika.exceptions

from testbed.services.amqp import PERSISTENT, connection_parameters
from testbed.services.common import common_routes
from testbed.services.config import ServiceConfig
from testbed.services.ledger import Ledger
from testbed.services.stats import Stats
from testbed.services.wsgi import Environ, Handler, Reply, make_app, serve


class Consumer:
    def __init__(self, config: ServiceConfig, stats: Stats, ledger: Ledger) -> None:
        assert config.amqp is not None and config.queue is not None
        self.config = config
        self.stats = stats
        self.ledger = ledger
        self.params = connection_parameters(config.amqp, config.knobs.heartbeat_s)
        self.consuming = False
        self.stalled = threading.Event()

    def on_message(self, channel: Any, method: Any, _props: Any, body: bytes) -> None:
        self.stats.count("received")
        if method.redelivered:
            self.stats.count("redelivered")
        with self.stats.busy():
            while self.stalled.is_set():
                # Stuck in the handler, holding its deliveries unacked; sleeping through
                # the connection keeps heartbeats going, so the broker keeps waiting too.
                channel.connection.sleep(0.05)
            try:
                order = self.handle(body)
            except (ValueError, KeyError, TypeError):
                # A message the handler cannot process (poison): give it back to the
                # broker, which redelivers it, dead-letters it or drops it per the queue's
                # policy. The backoff keeps a redelivery loop from burning a core.
                self.stats.count("handler_errors")
                time.sleep(self.config.knobs.error_backoff_ms / 1000.0)
                channel.basic_nack(method.delivery_tag, requeue=True)
                return
            # The side effect happens before the ack: a crash in between means the broker
            # redelivers and the ledger shows the duplicate (at-least-once, made visible).
            self.ledger.record(order["order_id"])
            if self.config.publishes:
                assert self.config.amqp is not None
                channel.basic_publish(self.config.amqp.exchange, self.config.publishes, body,
                                      properties=PERSISTENT, mandatory=True)
            channel.basic_ack(method.delivery_tag)
        self.stats.count("ok")

    def handle(self, body: bytes) -> dict[str, Any]:
        """The business part: parse the event and do the work."""
        order = json.loads(body)
        if not isinstance(order, dict) or not isinstance(order.get("order_id"), str):
            raise ValueError("event without an order_id")
        if self.config.knobs.work_ms:
            time.sleep(self.config.knobs.work_ms / 1000.0)
        return order

    def run_forever(self) -> None:
        failures = 0
        while True:
            try:
                connection = pika.BlockingConnection(self.params)
                channel = connection.channel()
                channel.confirm_delivery()
                channel.basic_qos(prefetch_count=self.config.knobs.prefetch)
                channel.basic_consume(self.config.queue, self.on_message)
                self.consuming = True
                failures = 0
                channel.start_consuming()
            except (pika.exceptions.AMQPError, OSError):
                self.stats.count("reconnects")
            finally:
                self.consuming = False
            failures += 1
            cap = self.config.knobs.reconnect_max_s
            time.sleep(min(cap, 0.05 * 2 ** min(failures, 8)))


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


def run(config: ServiceConfig) -> None:
    stats = Stats(config.name, config.role, config.knobs.prefetch)
    ledger = Ledger(Path(config.ledger_path))
    consumer = Consumer(config, stats, ledger)
    routes = common_routes(stats, ledger, healthy=lambda: consumer.consuming)
    routes.update(stall_routes(consumer))
    app = make_app(routes, stats)
    threading.Thread(target=serve, args=(app, config.host, config.port, 2, 16),
                     name="http", daemon=True).start()
    consumer.run_forever()
