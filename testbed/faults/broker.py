"""Broker faults: the broker down and back, publishers blocked by a resource alarm,
poison messages, queue purge. (The AMQP link cut is LinkDown on a ``<svc>-broker`` link.)

The RabbitMQ node is shared by every deployment of a run, so BrokerDown and MemoryAlarm
hit all of them; the paired experiments rely on exactly that (the sync side never
notices). A deployment on Kafka has a node of its own: BrokerDown, PoisonMessage and
ConsumerStall work on it (for a consumer group), MemoryAlarm and QueuePurge are
RabbitMQ's and refuse a Kafka deployment by name.
The injector talks to the broker directly, not through the proxies, since it is not
part of the system under test.
"""

from __future__ import annotations

import time
from typing import Any

import pika
import pika.exceptions
import requests
from confluent_kafka import Producer

from testbed.components.kafka import CLIENT_LOG
from testbed.faults.base import Fault, FaultError, FaultSpecError, Verification
from testbed.faults.probes import probe
from testbed.runtime.base import BrokerAccess, BrokerControl, Deployment
from testbed.runtime.kafka_access import KafkaAccess, KafkaControl

DEFAULT_WATERMARK = 0.4  # RabbitMQ's default vm_memory_high_watermark
POISON = b"\x00this is not an order{"


def broker_of(deployment: Deployment) -> BrokerAccess:
    """The deployment's RabbitMQ, for the faults only RabbitMQ has."""
    if deployment.broker is None:
        if deployment.kafka is not None:
            raise FaultSpecError(f"deployment {deployment.id} runs on Kafka, which has no "
                                 "such thing; this fault is RabbitMQ's (broker_down, poison, "
                                 "consumer_stall and the link faults work on Kafka)")
        raise FaultSpecError(f"deployment {deployment.id} has no broker; broker faults need "
                             "an async topology")
    return deployment.broker


def _queue_of(queues: tuple[str, ...], queue: str) -> str:
    if queue not in queues:
        raise FaultSpecError(f"unknown queue {queue!r}; queues: {sorted(queues)}")
    return queue


def queues_of(deployment: Deployment) -> tuple[str, ...]:
    """The consumers' queues (RabbitMQ) or consumer groups (Kafka)."""
    if deployment.kafka is not None:
        return deployment.kafka.queues
    return broker_of(deployment).queues


def broker_connection(access: BrokerAccess,
                      blocked_timeout: float = 60) -> pika.BlockingConnection:
    address = access.address
    params = pika.ConnectionParameters(
        host=address.host, port=address.amqp_port, virtual_host=access.vhost,
        credentials=pika.PlainCredentials(address.user, address.password),
        connection_attempts=1, socket_timeout=5, blocked_connection_timeout=blocked_timeout)
    try:
        return pika.BlockingConnection(params)
    except pika.exceptions.AMQPError as exc:
        raise FaultError(f"cannot reach the broker for the injector: {exc!r}") from exc


def admin_call(kind: str, method: str, url: str,
               params: dict[str, Any] | None = None) -> dict[str, Any]:
    """A service's admin route (stall, members): its JSON answer, or FaultError."""
    try:
        response = requests.request(method, url, params=params, timeout=5)
        response.raise_for_status()
    except requests.RequestException as exc:
        raise FaultError(f"{kind}: {method} {url} failed: {exc}") from exc
    return dict(response.json())


def ready_count(access: BrokerAccess, queue: str) -> int:
    """Messages ready in a queue right now (a passive declare: exact, no stats lag)."""
    connection = broker_connection(access)
    try:
        frame = connection.channel().queue_declare(queue, passive=True)
        return int(frame.method.message_count)
    finally:
        connection.close()


class BrokerDown(Fault):
    """The broker process goes away (gracefully, or SIGKILL as a crash) and comes back."""

    kind = "broker_down"

    def __init__(self, deployment: Deployment, graceful: bool = True) -> None:
        super().__init__(f"broker of {deployment.id}")
        self.control: BrokerControl | KafkaControl
        if deployment.kafka is not None:  # the deployment's own Kafka node
            self.control, self.port, self.protocol = (deployment.kafka.control,
                                                      deployment.kafka.control.port, "kafka")
        else:
            access = broker_of(deployment)
            self.control, self.port, self.protocol = (access.control,
                                                      access.address.amqp_port, "amqp")
        if not isinstance(graceful, bool):
            raise FaultSpecError(f"broker_down graceful={graceful!r}; give True (a clean stop) "
                                 "or False (SIGKILL, as a crash)")
        self.graceful = graceful

    def describe(self) -> str:
        return f"broker_down({'stop' if self.graceful else 'kill'}) on {self.target}"

    def inject(self) -> None:
        self.control.halt(self.graceful)

    def remove(self) -> None:
        if not self.control.running():
            self.control.start()

    def verify(self) -> Verification:
        seen = probe(self.port, self.protocol, 2.0)
        return Verification(seen.outcome == "refused", f"{self.protocol} connect "
                                                       f"{seen.outcome}; expected refused")


class MemoryAlarm(Fault):
    """A memory alarm: the broker blocks every publishing connection until it clears."""

    kind = "memory_alarm"

    def __init__(self, deployment: Deployment) -> None:
        super().__init__(f"broker of {deployment.id}")
        self.access = broker_of(deployment)

    def inject(self) -> None:
        self.access.control.set_memory_high_watermark(0.0000001)

    def remove(self) -> None:
        self.access.control.set_memory_high_watermark(DEFAULT_WATERMARK)
        deadline = time.monotonic() + 15
        while self.access.control.memory_alarm():
            if time.monotonic() > deadline:
                raise FaultError("the memory alarm did not clear within 15 s")
            time.sleep(0.1)

    def verify(self) -> Verification:
        """Publish once and see the broker answer with connection.blocked."""
        blocked: list[Any] = []
        # A blocked connection cannot even close cleanly (the broker stops reading it),
        # so the probe lets pika's blocked-connection timeout end it after a few seconds.
        connection = broker_connection(self.access, blocked_timeout=3)
        try:
            connection.add_on_connection_blocked_callback(lambda *_: blocked.append(1))
            channel = connection.channel()
            channel.basic_publish("", "testbed.alarm-probe", b"probe")
            deadline = time.monotonic() + 5
            while not blocked and time.monotonic() < deadline:
                connection.process_data_events(time_limit=0.1)
            connection.close()
        except pika.exceptions.AMQPError:
            pass  # the blocked-connection timeout closing the probe: expected
        return Verification(bool(blocked), "publisher got connection.blocked" if blocked
                            else "publisher was not blocked within 5 s")


class PoisonMessage(Fault):
    """Messages the consumer cannot process, published straight into its queue (one-shot:
    what happens to them afterwards is up to the queue's policy and the consumer)."""

    kind = "poison"

    def __init__(self, deployment: Deployment, queue: str, count: int = 1) -> None:
        super().__init__(f"{deployment.id}/{queue}")
        self.deployment = deployment
        self.queue = _queue_of(queues_of(deployment), queue)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise FaultSpecError(f"poison count={count!r}; give a whole number of 1 or more")
        self.count = count
        self._errors_before = 0

    def _handler_errors(self) -> int:
        counters = self.deployment.stats(self.queue)["counters"]
        return int(counters.get("handler_errors", 0))

    def inject(self) -> None:
        self._errors_before = self._handler_errors()
        if self.deployment.kafka is not None:
            self._produce(self.deployment.kafka)
            return
        connection = broker_connection(broker_of(self.deployment))
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            for _ in range(self.count):
                channel.basic_publish("", self.queue, POISON,
                                      pika.BasicProperties(delivery_mode=2))
        finally:
            connection.close()

    def _produce(self, kafka: KafkaAccess) -> None:
        """Into the topic the consumer reads, partition 0 (as an unkeyed message lands
        with the consistent partitioner); every group on that topic will meet it."""
        producer = Producer({"bootstrap.servers": kafka.bootstrap, "acks": "all",
                             "logger": CLIENT_LOG})
        for _ in range(self.count):
            producer.produce(kafka.topic_of(self.queue), value=POISON, partition=0)
        if producer.flush(10.0):
            raise FaultError(f"poison: Kafka at {kafka.bootstrap} did not take the "
                             "messages within 10 s")

    def remove(self) -> None:
        """Nothing to take back: the messages are in the system now, as in real life."""

    def verify(self) -> Verification:
        deadline = time.monotonic() + 5
        errors = self._handler_errors() - self._errors_before
        while errors < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
            errors = self._handler_errors() - self._errors_before
        return Verification(errors >= 1, f"consumer {self.queue} failed {errors} time(s) on "
                                         "the poison")


class QueuePurge(Fault):
    """Every ready message in a queue is thrown away (one-shot)."""

    kind = "purge"

    def __init__(self, deployment: Deployment, queue: str) -> None:
        super().__init__(f"{deployment.id}/{queue}")
        self.access = broker_of(deployment)
        self.queue = _queue_of(self.access.queues, queue)
        self.before = 0

    def inject(self) -> None:
        self.before = ready_count(self.access, self.queue)
        self.access.admin.purge(self.access.vhost, self.queue)

    def remove(self) -> None:
        """A purge cannot be undone; removal has nothing to do."""

    def verify(self) -> Verification:
        after = ready_count(self.access, self.queue)
        return Verification(after < self.before or self.before == 0,
                            f"{self.before} ready before the purge, {after} after")


class ConsumerStall(Fault):
    """The consumer's handler hangs (process alive, heartbeats going): it holds what it
    was delivered, unacked, while the backlog grows behind it. Unlike pause, the broker
    sees a healthy connection, as with a consumer stuck on a slow dependency."""

    kind = "consumer_stall"

    def __init__(self, deployment: Deployment, queue: str) -> None:
        super().__init__(f"{deployment.id}/{queue}")
        _queue_of(queues_of(deployment), queue)
        self.url = deployment.url(queue) + "/admin/stall"

    def _call(self, method: str) -> bool:
        return bool(admin_call(self.kind, method, self.url)["stalled"])

    def inject(self) -> None:
        self._call("PUT")

    def remove(self) -> None:
        self._call("DELETE")

    def verify(self) -> Verification:
        stalled = self._call("GET")
        return Verification(stalled, f"consumer reports stalled={stalled}")


class Replay(Fault):
    """Kafka only: read a consumer group's topic again from its first offset, the
    recovery a log allows ("pause, then replay the entire queue"). One-shot: the
    consumer is stopped gracefully (it leaves its group at once), the group's committed
    offsets are set back to the start of every partition, and the consumer is started
    again: it reads every message the topic holds once more. A queue cannot do this
    (what it delivered is gone), so on RabbitMQ the fault is refused."""

    kind = "replay"

    def __init__(self, deployment: Deployment, queue: str) -> None:
        super().__init__(f"{deployment.id}/{queue}")
        if deployment.kafka is None and deployment.broker is None:
            raise FaultSpecError(f"replay on {deployment.id}: it has no broker; replay needs "
                                 "an async topology on Kafka")
        if deployment.kafka is None:
            raise FaultSpecError(f"replay on {deployment.id}: a RabbitMQ queue keeps nothing "
                                 "it has delivered, so there is nothing to replay; run the "
                                 "topology on Kafka (broker kind 'kafka')")
        self.kafka = deployment.kafka
        self.queue = _queue_of(self.kafka.queues, queue)
        self.service = deployment.service(queue)
        self.rewound = 0  # messages the group will read again

    def inject(self) -> None:
        self.service.stop()
        try:
            self.rewound = self.kafka.rewind(self.queue)
        finally:
            self.service.start()

    def remove(self) -> None:
        """One-shot: what it re-read stays re-read."""

    def verify(self) -> Verification:
        return Verification(self.rewound > 0 and self.service.running(),
                            f"{self.queue} rewound by {self.rewound} message(s), running "
                            "again")


class MemberLeave(Fault):
    """Kafka only: one member of a consumer group (``member``, 1 or more: 0 is the
    service's main thread) leaves the group and, at removal, joins again: two
    rebalances, its partitions moving to the other members and back. A graceful leave
    (the consumer is closed, as a pod scaled down or rolled is); a killed process is
    ``kill`` (its members wait out the 6 s session)."""

    kind = "member_leave"

    def __init__(self, deployment: Deployment, queue: str, member: int = 1) -> None:
        super().__init__(f"{deployment.id}/{queue}")
        if deployment.kafka is None:
            raise FaultSpecError(f"member_leave on {deployment.id}: consumer groups are "
                                 "Kafka's; run the topology on Kafka (broker kind 'kafka')")
        self.kafka = deployment.kafka
        self.queue = _queue_of(self.kafka.queues, queue)
        replicas = deployment.topology.service(queue).knobs.replicas
        if isinstance(member, bool) or not isinstance(member, int) \
                or not 1 <= member < replicas:
            raise FaultSpecError(f"member_leave member={member!r}: {queue} has {replicas} "
                                 f"member(s); give 1-{replicas - 1} (0 is its main thread; "
                                 "set replicas to 2 or more)")
        self.member = member
        self.url = deployment.url(queue) + "/admin/members"

    def describe(self) -> str:
        return f"member_leave({self.member}) on {self.target}"

    def _call(self, method: str) -> list[int]:
        return list(admin_call(self.kind, method, self.url, {"member": self.member})["members"])

    def inject(self) -> None:
        self._call("PUT")

    def remove(self) -> None:
        self._call("DELETE")

    def verify(self) -> Verification:
        deadline = time.monotonic() + 10
        members = self._call("GET")
        while self.member in members and time.monotonic() < deadline:
            time.sleep(0.05)
            members = self._call("GET")
        return Verification(self.member not in members,
                            f"members in the group: {members}")
