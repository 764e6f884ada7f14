"""A deployment's Kafka node in a container: the docker runtime's KafkaControl.

One container per deployment (as the local runtime has a node per deployment: its
advertised listeners are fixed at boot, one per proxied client, see plan.KafkaPlan), on
the deployment's network under the alias ``kafka``, from the ``kafka`` image (Debian's
OpenJDK 17 and the jars `testbed setup` copied). Its command formats the data dir on the
first start and execs the broker; the data dir is inside the container, so broker_down
(a ``docker stop`` or ``kill``, then ``docker start``) brings it back with its topics and
committed offsets. The testbed reaches it on the host through its DIRECT listener,
published on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import socket
import time

import docker.errors
from docker.models.containers import Container

from testbed.components.binaries import require_kafka_libs
from testbed.components.kafka import NODE_ID, KafkaAdmin
from testbed.errors import ComponentError, MissingBinaryError, TopologyError
from testbed.runtime.docker.containers import container_state, docker_call, log_tail, wait_ready
from testbed.topology.model import Topology

KAFKA_READY_TIMEOUT_S = 90.0
KAFKA_STOP_TIMEOUT_S = 30  # a controlled shutdown takes a few seconds
# ApiVersions v0 (key 18), correlation id 1, client id "ready": every broker answers it.
_API_VERSIONS = b"\x00\x00\x00\x0f\x00\x12\x00\x00\x00\x00\x00\x01\x00\x05ready"


def kafka_answers(port: int, timeout: float = 1.0) -> bool:
    """Does a Kafka broker answer on 127.0.0.1:port? (A published port of a container
    accepts connections while nothing listens inside, so a connect proves nothing.)"""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(_API_VERSIONS)
            return bool(sock.recv(4))
    except OSError:
        return False


class ContainerKafka:
    """A Kafka node in a container; implements kafka_access.KafkaControl."""

    def __init__(self, container: Container, port: int) -> None:
        self.container = container
        self._port = port
        self._admin = KafkaAdmin(self.bootstrap)

    @property
    def port(self) -> int:
        """DIRECT, published on the host's 127.0.0.1 at the same number."""
        return self._port

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self._port}"

    @property
    def admin(self) -> KafkaAdmin:
        return self._admin

    def running(self) -> bool:
        return container_state(self.container) in ("running", "paused")

    def _ready(self) -> bool:
        """It answers, names itself, and leads every partition (after a restart the
        metadata can answer before the partitions have their leader back)."""
        return kafka_answers(self._port) and self._admin.serving(NODE_ID, timeout=2.0)

    def wait_ready(self, timeout: float = KAFKA_READY_TIMEOUT_S) -> float:
        """Seconds until the node's metadata names itself (fails at once if it exits)."""
        return wait_ready(self.container, self._ready, f"Kafka container {self.container.name}",
                          timeout)

    def halt(self, graceful: bool = True) -> None:
        """Down with its data kept (the container's filesystem stays)."""
        if graceful:
            docker_call(f"stop of {self.container.name}",
                        lambda: self.container.stop(timeout=KAFKA_STOP_TIMEOUT_S))
        else:
            with contextlib.suppress(docker.errors.APIError):  # already down
                self.container.kill()
        deadline = time.monotonic() + KAFKA_STOP_TIMEOUT_S
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.05)

    def start(self, timeout: float = KAFKA_READY_TIMEOUT_S) -> float:
        """Start it (the first time, or again after halt: same data and topics); returns
        the seconds until it answered."""
        started = time.monotonic()
        docker_call(f"start of {self.container.name}", self.container.start)
        # A fresh admin client: one whose requests timed out while the node was down was
        # seen to keep timing out after it came back (kafka_access.FreshAdmin).
        self._admin = KafkaAdmin(self.bootstrap)
        self.wait_ready(max(timeout, 1.0))
        return time.monotonic() - started

    def log_tail(self, lines: int = 25) -> str:
        return log_tail(self.container, lines)


def require_kafka_image(topology: Topology, images: dict[str, str]) -> None:
    """A topology on Kafka needs the kafka image, which needs Kafka's jars: say which is
    missing, and the fix, before anything is created."""
    if not topology.on_kafka or "kafka" in images:
        return
    try:
        require_kafka_libs()
    except MissingBinaryError as exc:
        raise ComponentError(f"a topology on Kafka runs in the kafka image, which cannot "
                             f"be built without Kafka's jars: {exc}. Fix: `testbed setup` "
                             "(then open the runtime again: it builds the image)") from exc
    raise TopologyError("broker.kind", "the official image source has no kafka image",
                        "build the offline images (`testbed images build --source "
                        "offline`, or set TESTBED_IMAGE_SOURCE=offline), or run it with "
                        "--runtime local")
