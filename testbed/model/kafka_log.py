"""Kafka's side of the model: topics of partitioned logs, and the consumer groups' offsets.

As testbed/services/kafka_client.py and testbed/runtime/kafka_access.py have them:
- a topic per event (its routing key), ``partitions`` partitions each; a keyed message
  (key: its order id) goes to partition crc32(key) % partitions (librdkafka's
  "consistent" partitioner), an unkeyed one (the poison injector's) to partition 0. A
  message here is an order index (a poison message a negative one), the time it was
  appended and its attempt (the x-attempt header of a retry). Nothing is deleted.
- a retry topic ``<service>.retry`` and a dead-letter topic ``<service>.dlq``, one
  partition each; what the DLQ holds is read back as its ledger, by order id (a poison
  message as ``<unreadable>``).
- a consumer group: a committed offset per partition and, while it is formed, its
  members' positions (the next offset each reads), started from the committed offsets
  whenever the group forms again; range assignment (member k of R gets a contiguous
  block of the partitions; with R > P, R - P get none). Its lag, what the sampler
  reports as ready: the log's end minus the committed offset, summed over partitions.
  A rewind (the replay fault, on an empty group) sets every committed offset back to 0:
  the lag is then the topic's size.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable
from typing import Protocol

import simpy

from testbed.model.record import Counts
from testbed.services.kafka_settings import FETCH_WAIT_MS, partition_of

SEEK_REFETCH_S = FETCH_WAIT_MS / 2000.0  # a seek waits for the fetch in flight (mean)


def partitions_of(ids: Iterable[str], partitions: int) -> array[int] | None:
    """Each order's partition (by index), or None when there is one partition."""
    if partitions == 1:
        return None
    return array("q", (partition_of(order_id, partitions) for order_id in ids))


class Member(Protocol):
    """A consumer thread of a group: the partitions assigned to it; woken by news."""

    partitions: list[int]

    def kick(self) -> None: ...


class Partition:
    __slots__ = ("at", "attempts", "orders")

    def __init__(self) -> None:
        self.orders: array[int] = array("q")
        self.at: array[float] = array("d")  # when each message was appended
        self.attempts: array[int] = array("b")


class Topic:
    def __init__(self, env: simpy.Environment, name: str, partitions: int) -> None:
        self.env = env
        self.name = name
        self.partitions = [Partition() for _ in range(partitions)]
        self.groups: list[Group] = []  # the consumer groups reading it

    def append(self, partition: int, order: int, attempt: int = 0) -> None:
        part = self.partitions[partition]
        part.orders.append(order)
        part.at.append(self.env.now)
        part.attempts.append(attempt)
        for group in self.groups:
            group.appended(partition)

    @property
    def size(self) -> int:
        return sum(len(part.orders) for part in self.partitions)


class DeadLetters(Topic):
    """A dead-letter topic: nobody consumes it; its ledger is what a read-back finds."""

    def __init__(self, env: simpy.Environment, name: str, ledger: Counts) -> None:
        super().__init__(env, name, 1)
        self.ledger = ledger
        self.unreadable = 0  # poison messages in it

    def append(self, partition: int, order: int, attempt: int = 0) -> None:
        super().append(partition, order, attempt)
        if order >= 0:
            self.ledger[order] += 1
        else:
            self.unreadable += 1


class Group:
    """A consumer group on a topic: offsets, positions, its members' assignment."""

    def __init__(self, name: str, topic: Topic) -> None:
        n = len(topic.partitions)
        self.name = name
        self.topic = topic
        self.committed = [0] * n
        self.position = [0] * n  # the next offset its owner reads
        self.ready_from = [0.0] * n  # a fetch of the partition starts no earlier
        self.fetched: list[tuple[int, float] | None] = [None] * n  # (offset, in hand at)
        self.owner: list[Member | None] = [None] * n
        self.members: list[Member] = []
        self.active = True  # formed: the deployment is up before the load starts
        self.generation = 0  # +1 at every change: a commit of an older one fails
        self.blocked_until = -math.inf  # dead members' sessions hold a new generation
        self.joining = 0  # the join attempt that may form the group
        topic.groups.append(self)

    @property
    def lag(self) -> int:
        return sum(len(part.orders) - committed
                   for part, committed in zip(self.topic.partitions, self.committed,
                                              strict=True))

    def appended(self, partition: int) -> None:
        owner = self.owner[partition]
        if owner is not None:
            owner.kick()

    def assign(self) -> None:
        """Range assignment: member k of R takes a contiguous block, the first P % R
        members one partition more."""
        n, members = len(self.position), self.members
        each, extra = divmod(n, len(members))
        start = 0
        for k, member in enumerate(members):
            count = each + (1 if k < extra else 0)
            member.partitions = list(range(start, start + count))
            for p in member.partitions:
                self.owner[p] = member
            start += count

    def leave(self) -> None:
        """The members are out (dead, expired, the coordinator gone): nobody reads."""
        self.joining += 1
        if not self.active:
            return
        self.active = False
        self.generation += 1
        self.owner = [None] * len(self.owner)
        for member in self.members:
            member.partitions = []
            member.kick()

    def form(self, now: float) -> None:
        """A new generation: every member reads on from the committed offsets."""
        self.active = True
        self.generation += 1
        self.position = list(self.committed)
        self.refetch(now)
        self.assign()
        for member in self.members:
            member.kick()

    def refetch(self, now: float) -> None:
        """What the members hold is fetched again from ``now`` (a seek, a reconnect)."""
        n = len(self.position)
        self.ready_from = [now] * n
        self.fetched = [None] * n

    def seek(self, partition: int, offset: int, generation: int, now: float) -> None:
        """The owner reads ``offset`` next (if the group has not changed since)."""
        if generation == self.generation:
            self.position[partition] = offset
            self.ready_from[partition] = now + SEEK_REFETCH_S
            self.fetched[partition] = None

    def rewind(self) -> int:
        """Every committed offset back to 0 (the group is empty: it is not formed);
        how many messages it had committed, as the real rewind reports them."""
        assert not self.active, "a group is rewound only while it has no members"
        rewound = sum(self.committed)
        self.committed = [0] * len(self.committed)
        return rewound

    def commit(self, partition: int, offset: int, generation: int) -> bool:
        """A synchronous commit at the coordinator: refused from an older generation."""
        if generation != self.generation or not self.active:
            return False
        if offset > self.committed[partition]:
            self.committed[partition] = offset
        return True
