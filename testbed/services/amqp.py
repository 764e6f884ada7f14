"""pika connection parameters shared by the async services."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pika

from testbed.services.config import AmqpTarget


def connection_parameters(target: AmqpTarget, heartbeat_s: int) -> pika.ConnectionParameters:
    return pika.ConnectionParameters(
        host=target.host, port=target.port, virtual_host=target.vhost,
        credentials=pika.PlainCredentials(target.user, target.password),
        heartbeat=heartbeat_s, blocked_connection_timeout=30,
        connection_attempts=1, socket_timeout=5, stack_timeout=10)


PERSISTENT = pika.BasicProperties(content_type="application/json", delivery_mode=2)


def with_headers(properties: pika.BasicProperties,
                 extra: Mapping[str, Any]) -> pika.BasicProperties:
    """A copy of ``properties`` with ``extra`` added to its headers (a copy, because
    PERSISTENT is shared by every publish of the process)."""
    fields = dict(vars(properties))
    fields["headers"] = {**(properties.headers or {}), **extra}
    return pika.BasicProperties(**fields)
