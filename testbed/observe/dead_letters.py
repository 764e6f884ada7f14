"""What sits in the dead-letter queues at the end of a trial, by order id.

Read without consuming (basic_get without ack; the channel's close puts every message
back), so the audit can say which accepted orders were dead-lettered rather than lost,
and the queues stay as they were for anyone who looks after the trial.
"""

from __future__ import annotations

import json
from collections import Counter

from testbed.errors import TestbedError
from testbed.faults.base import FaultError
from testbed.faults.broker import broker_connection
from testbed.runtime.base import Deployment, dead_letter_queue
from testbed.runtime.kafka_access import KafkaAccess

UNREADABLE = "<unreadable>"  # a message without an order id (a poison message)
MAX_READ = 10_000


def order_id_of(body: bytes) -> str:
    try:
        order = json.loads(body)
    except ValueError:
        return UNREADABLE
    if isinstance(order, dict) and isinstance(order.get("order_id"), str):
        return str(order["order_id"])
    return UNREADABLE


def dead_letters(deployment: Deployment) -> dict[str, dict[str, int]]:
    """``{"<queue>.dlq": {order_id: copies}}`` for every consumer with a DLQ."""
    broker = deployment.broker
    queues = [dead_letter_queue(s.name) for s in deployment.topology.services
              if s.consumes and s.knobs.dead_letter]
    if deployment.kafka is not None and queues:
        return kafka_dead_letters(deployment.kafka, queues)
    if broker is None or not queues:
        return {}
    found: dict[str, dict[str, int]] = {}
    try:
        connection = broker_connection(broker)
    except FaultError:
        return {}  # a broker that is down has nothing to show; the samples say so
    try:
        for queue in queues:
            channel = connection.channel()
            ids: Counter[str] = Counter()
            for _ in range(MAX_READ):
                method, _props, body = channel.basic_get(queue, auto_ack=False)
                if method is None:
                    break
                ids[order_id_of(body)] += 1
            channel.close()  # unacked: every message goes back to the queue
            found[queue] = dict(ids)
    finally:
        connection.close()
    return found


def kafka_dead_letters(kafka: KafkaAccess, topics: list[str]) -> dict[str, dict[str, int]]:
    """The same read-back from the dead-letter topics (named as the queues are)."""
    found: dict[str, dict[str, int]] = {}
    for topic in topics:
        try:
            found[topic] = dict(Counter(order_id_of(v) for v in kafka.read_topic(topic)))
        except TestbedError:
            return {}  # a broker that is down has nothing to show; the samples say so
    return found
