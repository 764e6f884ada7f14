"""The async edge: accept an order, publish OrderPlaced (confirmed), answer 202.

pika connections are not thread-safe, so each worker thread of the HTTP pool keeps its
own connection and confirm-mode channel, and reconnects once if it finds it broken.
"""

from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path
from typing import Any

import pika
import pika.exceptions

from testbed.services.amqp import PERSISTENT, connection_parameters
from testbed.services.common import common_routes, parse_order
from testbed.services.config import ServiceConfig
from testbed.services.ledger import Ledger
from testbed.services.stats import Stats
from testbed.services.wsgi import Environ, Reply, make_app, serve


class Publisher:
    """Per-thread confirmed publishing to the topology's exchange."""

    def __init__(self, config: ServiceConfig) -> None:
        assert config.amqp is not None and config.publishes is not None
        self.target = config.amqp
        self.routing_key = config.publishes
        self.params = connection_parameters(config.amqp, config.knobs.heartbeat_s)
        self._local = threading.local()

    def _channel(self) -> Any:
        channel = getattr(self._local, "channel", None)
        if channel is None or channel.is_closed:
            connection = pika.BlockingConnection(self.params)
            channel = connection.channel()
            channel.confirm_delivery()
            self._local.connection, self._local.channel = connection, channel
        return channel

    def _drop(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.channel = None
        if connection is not None and connection.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError):
                connection.close()

    def publish(self, body: bytes) -> None:
        """Publish and wait for the broker's confirm; one reconnect on a stale channel."""
        for attempt in (1, 2):
            try:
                self._channel().basic_publish(self.target.exchange, self.routing_key, body,
                                              properties=PERSISTENT, mandatory=True)
                return
            except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError,
                    pika.exceptions.StreamLostError, OSError):
                self._drop()
                if attempt == 2:
                    raise

    def reachable(self) -> bool:
        try:
            self._channel()
        except (pika.exceptions.AMQPError, OSError):
            self._drop()
            return False
        return True


def build_app(config: ServiceConfig):  # type: ignore[no-untyped-def]
    stats = Stats(config.name, config.role, config.knobs.pool_size)
    ledger = Ledger(Path(config.ledger_path))
    publisher = Publisher(config)

    def place_order(environ: Environ) -> Reply:
        order = parse_order(environ)
        stats.count("received")
        try:
            publisher.publish(json.dumps(order).encode())
        except pika.exceptions.NackError:
            # The broker refused it (a full queue with overflow=reject-publish): tell the
            # client to back off, as an edge with backpressure should.
            stats.count("rejected")
            return Reply(429, {"error": f"{config.name}: queue full, try again later"})
        except (pika.exceptions.AMQPError, OSError) as exc:
            stats.count("publish_errors")
            return Reply(503, {"error": f"{config.name}: could not publish: "
                                        f"{type(exc).__name__}"})
        ledger.record(order["order_id"])
        stats.count("ok")
        return Reply(202, {"order_id": order["order_id"], "path": [config.name]})

    routes = common_routes(stats, ledger, healthy=publisher.reachable)
    routes[("POST", "/orders")] = place_order
    return make_app(routes, stats)


def run(config: ServiceConfig) -> None:
    serve(build_app(config), config.host, config.port, config.knobs.pool_size,
          config.knobs.accept_backlog)
