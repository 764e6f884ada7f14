"""A deployment's Kafka: its node, topics and consumer groups, read as "queues".

The layers above (samplers, metrics, faults) think in queues: ``queue:<consumer>`` with
ready / unacked / consumers. On a log the same quantities are defined once, here:
- ready: the group's lag, the messages in its topic past the group's committed offsets
  (the one in a handler counts: it is committed after the work), summed over partitions;
- unacked: 0 (Kafka holds no per-message delivery state);
- consumers: the members of the group;
- ``<consumer>.retry``: the lag of the retry worker's group on the retry topic;
- ``<consumer>.dlq``: the messages in the dead-letter topic (nobody consumes it).
Each deployment has a node of its own (its listeners are fixed at boot, one per proxied
client), so taking this broker down hits this deployment only. The node is whatever runs
it, behind the KafkaControl protocol: a local JVM (testbed.components.kafka.KafkaNode) or
a container (testbed.runtime.docker.kafka.ContainerKafka).
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import Consumer as RdConsumer
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from testbed.components.kafka import CLIENT_LOG, KafkaAdmin
from testbed.components.rabbitmq import QueueState
from testbed.errors import BrokerError
from testbed.services.kafka_client import dead_letter_topic, retry_topic

TIMEOUT_S = 2.0


class KafkaControl(Protocol):
    """What the testbed needs of a deployment's Kafka node, whatever runs it: the
    samplers and admin calls on the host, and broker_down (halt, start)."""

    @property
    def port(self) -> int: ...  # the testbed's own listener, on the host's 127.0.0.1
    @property
    def bootstrap(self) -> str: ...  # "127.0.0.1:<port>"
    @property
    def admin(self) -> KafkaAdmin: ...  # admin calls through that listener
    def running(self) -> bool: ...
    def halt(self, graceful: bool = True) -> None: ...  # down, data kept
    def start(self, timeout: float = 90.0) -> float: ...  # back up; seconds until ready


@dataclass(frozen=True)
class GroupTopic:
    """A consumer group on a topic, reported as the queue ``queue``."""

    queue: str
    group: str | None  # None: a topic nobody consumes (a DLQ): ready = its size
    topic: str
    partitions: int = 1


class FreshAdmin:
    """An admin client made anew after any failure: one whose requests timed out while
    the broker was down was seen to keep timing out after it came back."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._client: AdminClient | None = None

    def client(self) -> AdminClient:
        if self._client is None:
            settings: dict[str, Any] = {"bootstrap.servers": self.bootstrap,
                                        "logger": CLIENT_LOG,
                                        "socket.connection.setup.timeout.ms": 1000}
            self._client = AdminClient(settings)
        return self._client

    def reset(self) -> None:
        self._client = None


@dataclass(frozen=True)
class KafkaAccess:
    """A deployment's Kafka node and what lives on it."""

    node: KafkaControl
    partitions: int
    groups: tuple[GroupTopic, ...]
    kind: str = "kafka"
    admin: FreshAdmin = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "admin", FreshAdmin(self.node.bootstrap))

    @property
    def control(self) -> KafkaControl:
        return self.node

    @property
    def bootstrap(self) -> str:
        return self.node.bootstrap

    @property
    def queues(self) -> tuple[str, ...]:
        """The consumers' queues (fault targets), not their retry and DLQ topics."""
        return tuple(g.queue for g in self.groups if g.group == g.queue)

    def topic_of(self, queue: str) -> str:
        for group in self.groups:
            if group.queue == queue:
                return group.topic
        raise KeyError(queue)

    def queue_states(self) -> list[QueueState]:
        """Every queue's ready / consumers now (BrokerError when the node does not answer)."""
        try:  # a broker that is down refuses at once; librdkafka would retry for seconds
            socket.create_connection(("127.0.0.1", self.node.port), TIMEOUT_S).close()
        except OSError as exc:
            raise BrokerError(f"Kafka at {self.bootstrap} refuses connections") from exc
        client = self.admin.client()
        try:
            ends = self._end_offsets(client, {(g.topic, g.partitions) for g in self.groups})
            states = []
            for group in self.groups:
                ready = sum(end for (topic, _), end in ends.items() if topic == group.topic)
                members = 0
                if group.group is not None:
                    ready -= sum(self._committed(client, group.group, group.topic).values())
                    members = self._members(client, group.group)
                states.append(QueueState(group.queue, ready, ready, 0, members))
            return states
        except KafkaException as exc:
            self.admin.reset()
            raise BrokerError(f"Kafka at {self.bootstrap}: {exc.args[0]}") from exc
        except TimeoutError as exc:
            self.admin.reset()
            raise BrokerError(f"Kafka at {self.bootstrap} did not answer in time") from exc

    def rewind(self, queue: str, wait_s: float = 10.0) -> int:
        """Set ``queue``'s group back to the first offset of every partition (the group
        must be empty: its consumer stopped); how many messages it will read again."""
        group = next(g for g in self.groups if g.queue == queue and g.group is not None)
        client = self.admin.client()
        deadline = time.monotonic() + wait_s
        try:
            while self._members(client, queue) and time.monotonic() < deadline:
                time.sleep(0.1)
            committed = self._committed(client, queue, group.topic)
            starts = [TopicPartition(group.topic, p, 0) for p in range(group.partitions)]
            futures = client.alter_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(queue, starts)], request_timeout=TIMEOUT_S)
            futures[queue].result(TIMEOUT_S)
        except KafkaException as exc:
            self.admin.reset()
            raise BrokerError(f"Kafka at {self.bootstrap}: rewinding group {queue}: "
                              f"{exc.args[0]} (is its consumer still in the group?)") from exc
        return sum(committed.values())

    def read_topic(self, topic: str, limit: int = 10_000) -> list[bytes]:
        """Every message of a one-partition topic (a DLQ), read by a throwaway consumer
        that commits nothing, so what it reads stays for anyone else."""
        reader = RdConsumer({"bootstrap.servers": self.bootstrap, "logger": CLIENT_LOG,
                             "group.id": f"testbed-audit-{uuid.uuid4().hex}",
                             "enable.auto.commit": False})
        try:
            low, high = reader.get_watermark_offsets(TopicPartition(topic, 0), TIMEOUT_S)
            reader.assign([TopicPartition(topic, 0, low)])
            values: list[bytes] = []
            deadline = time.monotonic() + 10 * TIMEOUT_S
            while low + len(values) < min(high, low + limit) and time.monotonic() < deadline:
                message = reader.poll(0.2)
                if message is not None and not message.error():
                    values.append(message.value() or b"")
            return values
        except KafkaException as exc:
            raise BrokerError(f"Kafka at {self.bootstrap}: reading {topic}: "
                              f"{exc.args[0]}") from exc
        finally:
            reader.close()

    def _end_offsets(self, client: Any,
                     topics: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        partitions = {}
        for topic, count in topics:
            for index in range(count):
                partitions[TopicPartition(topic, index)] = OffsetSpec.latest()
        futures = client.list_offsets(partitions, request_timeout=TIMEOUT_S)
        return {(tp.topic, tp.partition): future.result(TIMEOUT_S).offset
                for tp, future in futures.items()}

    def _committed(self, client: Any, group: str, topic: str) -> dict[int, int]:
        request = [ConsumerGroupTopicPartitions(group)]
        futures = client.list_consumer_group_offsets(request, request_timeout=TIMEOUT_S)
        result = futures[group].result(TIMEOUT_S)
        return {tp.partition: max(tp.offset, 0) for tp in result.topic_partitions
                if tp.topic == topic}

    def _members(self, client: Any, group: str) -> int:
        futures = client.describe_consumer_groups([group], request_timeout=TIMEOUT_S)
        return len(futures[group].result(TIMEOUT_S).members)


def group_topics(consumers: Iterable[tuple[str, str, bool, bool]],
                 partitions: int) -> tuple[GroupTopic, ...]:
    """The queues of ``(service, topic it consumes, has retries, has a DLQ)``; the event
    topics have ``partitions`` partitions, the retry and DLQ topics one."""
    groups = []
    for service, topic, retries, dlq in consumers:
        groups.append(GroupTopic(service, service, topic, partitions))
        if retries:
            groups.append(GroupTopic(retry_topic(service), retry_topic(service),
                                     retry_topic(service)))
        if dlq:
            groups.append(GroupTopic(dead_letter_topic(service), None,
                                     dead_letter_topic(service)))
    return tuple(groups)
