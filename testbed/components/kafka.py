"""A private Apache Kafka node for one run: KRaft, one JVM as broker and controller.

It runs from the jars `testbed setup` copied from Maven Central (binaries.py finds them)
as ``java -cp <libs>/* kafka.Kafka server.properties``, after a one-off
``kafka.tools.StorageTool format`` of its data dir (KRaft refuses an unformatted log dir).
There is no ZooKeeper (Kafka 4.x has none): the quorum is this one node, a static voter
(``controller.quorum.voters``). Everything is private to the run and on 127.0.0.1: its
ports come from testbed.ports, its data, logs and JVM temp files sit under the run
directory (so the run's sweep deletes them), and the JVM is started like every other
process of the run (ManagedProcess: tagged with the run id, so the watchdog and
``testbed gc`` kill a leftover broker without knowing it is one). No JMX port is opened.

Settings are for tests, not production: replication factor 1 everywhere (offsets,
transactions, share groups), one partition per internal topic (the first consumer group
otherwise waits for 50 offsets partitions), group.initial.rebalance.delay.ms=0, and
auto.create.topics.enable=false: a topology declares its topics and the testbed creates
them (KafkaAdmin.create_topic), so a misspelt topic is an error instead of a silent new one.

Proxied clients. A Kafka client dials the bootstrap address only once: from then on it
connects to the addresses the broker *advertises* in its metadata (and its group
coordinator's, also advertised). A client pointed at a Toxiproxy would therefore leave
its proxy after the first metadata call, and a link_down on that proxy would cut nothing.
So each proxied client gets a listener of its own (ClientListener):

    CLIENT_<NAME>://127.0.0.1:<broker_port>   the broker listens here (the proxy's upstream)
    advertised as 127.0.0.1:<proxy_port>      where that client's proxy listens

The client bootstraps at its proxy; the request arrives on its own listener, and Kafka
answers every metadata and FindCoordinator request with the endpoints of the listener
the request came in on, so the client is sent back to its proxy, every connection it
makes goes through it, and cutting the proxy cuts that client alone. The DIRECT
listener (advertised as itself) is for the testbed's own admin calls and for unproxied
clients; CONTROLLER is the KRaft quorum's. Listeners are set at broker start from the
clients given: Kafka 4.1 refuses to change advertised.listeners on a running broker
("Cannot update these configs dynamically: Set(advertised.listeners)", tried), so a
client added later needs a node started with it (~3 s to boot on a quiet 2-core
machine) or a restart.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import re
import socket
import time
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    ClusterMetadata,
    NewTopic,
)

from testbed.components.binaries import JAVA, require_kafka_libs
from testbed.components.process import ManagedProcess
from testbed.components.readiness import wait_until
from testbed.errors import BrokerError, ComponentError, PortInUseError, TestbedError
from testbed.ports import port_is_free

KAFKA_MAIN = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"
NODE_ID = 1
DIRECT = "DIRECT"
CONTROLLER = "CONTROLLER"
INTERNAL = "INTERNAL"  # in a container: for unproxied clients on its network (docker runtime)
# A small heap and the serial collector: a test broker holds little, and on a 2-core
# machine G1's concurrent threads would compete with the system under test.
BROKER_JVM = ("-Xms64m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:+ExitOnOutOfMemoryError")
# The format tool runs for a second: C1 only starts faster.
TOOL_JVM = ("-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")
CLIENT_LOG = logging.getLogger("testbed.kafka.client")

_LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
logger.kafka.name = kafka.Kafka$
logger.kafka.level = INFO
"""
LOG4J2 = _LOG4J2  # what a node in a container is given too (the docker runtime)


def listener_name(client: str) -> str:
    """CLIENT_<NAME>: Kafka listener names are case-insensitive identifiers, so every
    character but a letter or digit becomes '_'."""
    if not client:
        raise TestbedError("a proxied Kafka client needs a name. Fix: name it after the "
                           "service that uses it, e.g. 'orders'")
    return "CLIENT_" + re.sub(r"[^A-Za-z0-9]", "_", client).upper()


@dataclass(frozen=True)
class ClientListener:
    """One proxied client's own listener: the broker listens on ``broker_port`` (its
    proxy's upstream) and advertises ``proxy_port`` (where the proxy listens).

    The hosts are 127.0.0.1 for a local node; in containers (the docker runtime) the
    proxy is ``toxiproxy:<port>`` and the broker ``kafka:<port>`` on the network."""

    client: str
    broker_port: int
    proxy_port: int
    proxy_host: str = "127.0.0.1"  # advertised to the client: where its proxy listens
    broker_host: str = "127.0.0.1"  # where its proxy reaches the broker

    @property
    def name(self) -> str:
        return listener_name(self.client)

    @property
    def upstream(self) -> str:
        """What the client's Toxiproxy forwards to."""
        return f"{self.broker_host}:{self.broker_port}"

    @property
    def bootstrap(self) -> str:
        """What the client is given as bootstrap.servers: its proxy."""
        return f"{self.proxy_host}:{self.proxy_port}"


def new_cluster_id() -> str:
    """A Kafka Uuid as StorageTool wants it: 16 random bytes in unpadded URL-safe base64
    (one starting with '-' is drawn again: the tool's argument parser would take it for
    an option)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def check_listeners(port: int, controller_port: int,
                    clients: Sequence[ClientListener]) -> None:
    """Refuse clashing names or ports before anything starts."""
    names = [c.name for c in clients]
    clash = {n for n in names if names.count(n) > 1}
    if clash:
        raise TestbedError(f"Kafka clients {sorted(c.client for c in clients if c.name in clash)}"
                           f" map to the same listener name {sorted(clash)}. Fix: give the "
                           "clients names that differ in letters or digits")
    ports = [port, controller_port, *(c.broker_port for c in clients)]
    ports += [c.proxy_port for c in clients]
    dup = sorted({p for p in ports if ports.count(p) > 1})
    if dup:
        raise TestbedError(f"Kafka listener and proxy ports must all differ; {dup} repeats. "
                           "Fix: allocate each with testbed.ports.allocate_port")


def render_properties(port: int, controller_port: int, data_dir: Path,
                      clients: Sequence[ClientListener], bind_host: str = "127.0.0.1",
                      internal: tuple[str, int] | None = None) -> str:
    """server.properties for a one-node KRaft broker+controller on 127.0.0.1.

    In a container (the docker runtime) the listeners clients reach bind ``bind_host``
    (0.0.0.0: the container's own interfaces; published ports bind the host's
    127.0.0.1), DIRECT is still advertised as 127.0.0.1:``port`` (the testbed on the host,
    through a port published at the same number), and ``internal`` = (host, port) adds
    an INTERNAL listener advertised as host:port, for unproxied clients on the network.
    CONTROLLER always stays on 127.0.0.1: the quorum is this one node."""
    names = [DIRECT, CONTROLLER, *([INTERNAL] if internal else []), *(c.name for c in clients)]
    listeners = [f"{DIRECT}://{bind_host}:{port}",
                 f"{CONTROLLER}://127.0.0.1:{controller_port}"]
    advertised = [f"{DIRECT}://127.0.0.1:{port}"]
    if internal is not None:
        listeners.append(f"{INTERNAL}://{bind_host}:{internal[1]}")
        advertised.append(f"{INTERNAL}://{internal[0]}:{internal[1]}")
    listeners += [f"{c.name}://{bind_host}:{c.broker_port}" for c in clients]
    advertised += [f"{c.name}://{c.bootstrap}" for c in clients]
    protocols = [f"{name}:PLAINTEXT" for name in names]
    settings = {
        "process.roles": "broker,controller",
        "node.id": str(NODE_ID),
        "controller.quorum.voters": f"{NODE_ID}@127.0.0.1:{controller_port}",
        "controller.listener.names": CONTROLLER,
        "inter.broker.listener.name": DIRECT,
        "listeners": ",".join(listeners),
        "advertised.listeners": ",".join(advertised),
        "listener.security.protocol.map": ",".join(protocols),
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # A node killed and started again registers anew; the controller (itself, after
        # the restart) first waits out the old registration's session: 9 s by default.
        "broker.session.timeout.ms": "2000",
        "broker.heartbeat.interval.ms": "500",
        "auto.create.topics.enable": "false",
        "num.network.threads": "2",
        "num.io.threads": "2",
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


class KafkaAdmin:
    """The admin calls the testbed needs, through the DIRECT listener, with deadlines and
    BrokerError at this boundary (confluent-kafka raises KafkaException and friends)."""

    def __init__(self, bootstrap: str, timeout: float = 10.0) -> None:
        self.bootstrap = bootstrap
        self.timeout = timeout
        config: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": CLIENT_LOG,
                                  "socket.connection.setup.timeout.ms": 2000}
        self._client = AdminClient(config)

    @property
    def client(self) -> AdminClient:
        """The confluent-kafka client itself, for calls this class does not wrap."""
        return self._client

    def _wait(self, what: str, futures: Iterable[Future[Any]]) -> None:
        for future in futures:
            try:
                future.result(timeout=self.timeout)
            except KafkaException as exc:
                raise BrokerError(f"Kafka refused {what}: {exc.args[0]}") from exc
            except TimeoutError as exc:
                raise BrokerError(f"Kafka at {self.bootstrap} did not answer {what} within "
                                  f"{self.timeout:.0f} s") from exc

    def _metadata(self, timeout: float | None = None) -> ClusterMetadata:
        try:
            return self._client.list_topics(timeout=timeout or self.timeout)
        except KafkaException as exc:
            raise BrokerError(f"Kafka at {self.bootstrap}: no metadata: {exc.args[0]}") from exc

    def brokers(self, timeout: float | None = None) -> dict[int, str]:
        """Node id -> advertised host:port, as the cluster metadata says."""
        return {b.id: f"{b.host}:{b.port}" for b in self._metadata(timeout).brokers.values()}

    def serving(self, node_id: int = NODE_ID, timeout: float = 2.0) -> bool:
        """The node is in the metadata and leads every partition: after a restart the
        metadata can answer before the partitions have their leader back, and a produce
        then fails."""
        metadata = self._metadata(timeout)
        return node_id in metadata.brokers and all(
            partition.leader == node_id and partition.error is None
            for topic in metadata.topics.values() for partition in topic.partitions.values())

    def topics(self) -> list[str]:
        """The topics, less Kafka's internal ones (__consumer_offsets and the like)."""
        return sorted(t for t in self._metadata().topics if not t.startswith("__"))

    def create_topic(self, name: str, partitions: int = 1) -> None:
        futures = self._client.create_topics([NewTopic(name, partitions, 1)],
                                             operation_timeout=self.timeout)
        self._wait(f"creating topic {name}", futures.values())

    def delete_topic(self, name: str) -> None:
        futures = self._client.delete_topics([name], operation_timeout=self.timeout)
        self._wait(f"deleting topic {name}", futures.values())


class KafkaNode:
    """One private Kafka node (KRaft broker + controller) for one run."""

    def __init__(self, run_id: str, run_dir: Path, port: int, controller_port: int,
                 clients: Sequence[ClientListener] = ()) -> None:
        java = JAVA.require()
        libs = require_kafka_libs()
        check_listeners(port, controller_port, clients)
        self.run_id = run_id
        self.port = port
        self.controller_port = controller_port
        self.clients: list[ClientListener] = list(clients)
        self.cluster_id = new_cluster_id()
        self.home = run_dir / "kafka"
        self.data_dir = self.home / "data"
        tmp = self.home / "tmp"  # zstd/snappy unpack native code here: swept with the run
        for directory in (self.data_dir, tmp):
            directory.mkdir(parents=True, exist_ok=True)
        self.config_path = self.home / "server.properties"
        self._write_config()
        log4j = self.home / "log4j2.properties"
        log4j.write_text(_LOG4J2)
        common = ("-XX:-UsePerfData",  # no /tmp/hsperfdata_<user>/<pid> left by a SIGKILL
                  "-Djava.net.preferIPv4Stack=true",  # plain 127.0.0.1 sockets, not ::ffff:
                  "-Djava.awt.headless=true", f"-Djava.io.tmpdir={tmp}",
                  f"-Dlog4j2.configurationFile={log4j}")
        classpath = ("-cp", f"{libs}/*")
        logs = run_dir / "logs"
        self.process = ManagedProcess(
            "kafka", [java, *BROKER_JVM, *common, *classpath, KAFKA_MAIN, str(self.config_path)],
            run_id, logs / "kafka.log", cwd=self.home)
        self._format = ManagedProcess(
            "kafka-storage-format",
            [java, *TOOL_JVM, *common, *classpath, STORAGE_TOOL, "format", "--ignore-formatted",
             "--cluster-id", self.cluster_id, "--config", str(self.config_path)],
            run_id, logs / "kafka-format.log", cwd=self.home)
        self.admin = KafkaAdmin(self.bootstrap)
        self.timings: dict[str, float] = {}
        self._formatted = False

    @property
    def bootstrap(self) -> str:
        """The DIRECT listener: for the testbed itself and unproxied clients."""
        return f"127.0.0.1:{self.port}"

    def client(self, name: str) -> ClientListener:
        for listener in self.clients:
            if listener.client == name:
                return listener
        raise TestbedError(f"Kafka has no listener for client {name!r} (it has "
                           f"{[c.client for c in self.clients]}). Fix: pass it in clients= "
                           "when the node is made")

    def _write_config(self) -> None:
        self.config_path.write_text(render_properties(self.port, self.controller_port,
                                                      self.data_dir, self.clients))

    def _listener_ports(self) -> list[tuple[int, str]]:
        return ([(self.port, f"Kafka listener {DIRECT}"),
                 (self.controller_port, f"Kafka listener {CONTROLLER}")]
                + [(c.broker_port, f"Kafka listener {c.name}") for c in self.clients])

    def _format_storage(self, timeout: float) -> float:
        """Format the data dir (``--ignore-formatted``: a formatted one is left as it is)."""
        started = time.monotonic()
        self._format.start()
        deadline = started + timeout
        while self._format.running() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._format.running():
            self._format.kill()
            raise ComponentError(f"Kafka's storage format did not finish within {timeout:.0f} s"
                                 f"\n--- last log lines ---\n{self._format.log_tail()}")
        if self._format.exit_code() != 0:
            raise ComponentError(
                f"Kafka's storage format exited {self._format.exit_code()}. Fix: read the log "
                f"below; a wrong Java (needs 17+) or a damaged jar copy (rerun `testbed "
                f"setup` after deleting it) are the usual causes\n--- last log lines ---\n"
                f"{self._format.log_tail()}")
        return time.monotonic() - started

    def start(self, timeout: float = 90.0) -> float:
        """Boot the node (again, after a halt: same data and topics); returns the seconds
        from the start (the storage format included) until its metadata answered."""
        for port, owner in self._listener_ports():
            if not port_is_free(port):
                raise PortInUseError(port, owner)
        started = time.monotonic()
        self.timings["format_s"] = 0.0  # a restart after halt() keeps the formatted dir
        if not self._formatted:
            self.timings["format_s"] = self._format_storage(timeout)
            self._formatted = True
        self.process.start()
        self.timings["broker_s"] = wait_until(self._ready, f"Kafka node on {self.bootstrap}",
                                              timeout, self.process, interval=0.1)
        self.timings["boot_s"] = time.monotonic() - started
        return self.timings["boot_s"]

    def _ready(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
            pass  # cheap first: no admin call (and its reconnect noise) before a listener
        return self.admin.serving(NODE_ID, timeout=2.0)

    def running(self) -> bool:
        return self.process.running()

    def halt(self, graceful: bool = True) -> None:
        """Take the broker down but keep its data, so start() brings it back as it was."""
        if graceful:
            self.process.stop(grace=30.0)  # SIGTERM: a controlled shutdown
        else:
            self.process.kill()

    def stop(self) -> None:
        """Throw the node away: its data dir is temporary, so no graceful shutdown."""
        with contextlib.suppress(Exception):
            self._format.kill()
        self.process.kill()

    def log_tail(self, lines: int = 25) -> str:
        return self.process.log_tail(lines)
