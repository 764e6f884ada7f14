"""The Kafka component for real: a private KRaft node of the run, clients through their
own Toxiproxy proxies (each advertised at its proxy), a link_down that stops one client
while a direct one goes on, and the watchdog and gc removing a leftover broker.

Round-trip and boot figures are printed (run with -s to see them), never asserted.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import statistics
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from confluent_kafka import Consumer, Producer

from testbed.components.binaries import (
    JAVA,
    KAFKA_COMPLETE,
    KAFKA_LIBS_ENV,
    KAFKA_VERSION,
    find_kafka_libs,
    kafka_version,
)
from testbed.components.kafka import ClientListener, KafkaAdmin, KafkaNode
from testbed.components.toxiproxy import ToxiproxyServer
from testbed.errors import ComponentError, PortInUseError
from testbed.ports import allocate_port
from testbed.runtime.local import LocalRuntime
from testbed.runtime.sweep import collect_garbage

from .conftest import eventually, leftovers, wait_until_gone

pytestmark = [pytest.mark.local_only, pytest.mark.heavy]
LOG = logging.getLogger("tests.kafka.client")
SWEEP_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def kafka_installed() -> None:
    """The jars as `testbed setup` installs them (fetched here when missing); the tests
    skip only when they cannot be had (no java/mvn and not root, or no Maven Central)."""
    if find_kafka_libs() is not None and JAVA.find() is not None:
        return
    from testbed.components.install import install_kafka

    try:
        install_kafka()
    except ComponentError as exc:
        pytest.skip(f"Kafka cannot be installed here: {exc}")


@dataclass
class Rig:
    """A run with its Toxiproxy and Kafka node; one proxied client, ``orders``."""

    runtime: LocalRuntime
    toxiproxy: ToxiproxyServer
    node: KafkaNode
    listener: ClientListener
    proxy: str


@pytest.fixture(scope="module")
def rig(kafka_installed: None) -> Iterator[Rig]:
    with LocalRuntime() as runtime:
        run_id, run_dir = runtime.run_id, runtime.run_dir
        assert run_dir is not None
        toxiproxy = runtime.toxiproxy()
        listener = ClientListener("orders", allocate_port(run_id), allocate_port(run_id))
        node = KafkaNode(run_id, run_dir, allocate_port(run_id), allocate_port(run_id),
                         [listener])
        try:
            node.start()
            print(f"\nKafka boot (cold JVM): {node.timings}")
            proxy = f"{run_id}.kafka.orders"
            toxiproxy.client.create_proxy(proxy, listener.proxy_port, listener.upstream)
            yield Rig(runtime, toxiproxy, node, listener, proxy)
        finally:
            node.stop()
    assert leftovers(runtime.run_id) == []


def producer(bootstrap: str) -> Producer:
    return Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0,
                     "reconnect.backoff.max.ms": 500, "message.timeout.ms": 60000,
                     "logger": LOG})


def consumer(bootstrap: str, group: str) -> Consumer:
    return Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                     "auto.offset.reset": "earliest", "enable.auto.commit": False,
                     "reconnect.backoff.max.ms": 500, "logger": LOG})


class Reader:
    """A consumer in a group of its own; what it polled while waiting for its partition
    is kept for ``received``, not dropped."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = consumer(bootstrap, f"g-{uuid.uuid4().hex[:8]}")
        self.consumer.subscribe([topic])
        self._held: list[str] = []

    def _poll(self, timeout: float) -> None:
        message = self.consumer.poll(timeout)
        if message is not None and message.error() is None:
            self._held.append(message.value().decode())

    def wait_assigned(self, timeout: float = 30.0) -> None:
        def assigned() -> bool:
            self._poll(0.1)
            return bool(self.consumer.assignment())

        assert eventually(assigned, timeout), "no partition assigned"

    def received(self, wanted: set[str], timeout: float) -> set[str]:
        """Poll until every wanted value came (or time is up); the wanted ones seen."""
        deadline = time.monotonic() + timeout
        while not wanted <= set(self._held) and time.monotonic() < deadline:
            self._poll(0.05)
        seen = set(self._held) & wanted
        self._held = [value for value in self._held if value not in wanted]
        return seen


@contextlib.contextmanager
def subscribed(bootstrap: str, topic: str) -> Iterator[Reader]:
    """A Reader holding its partition, closed afterwards."""
    reader = Reader(bootstrap, topic)
    try:
        reader.wait_assigned()
        yield reader
    finally:
        reader.consumer.close()


def new_topic(node: KafkaNode) -> str:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    node.admin.create_topic(topic)
    return topic


def round_trips(bootstrap: str, topic: str, count: int) -> list[float]:
    """Seconds from produce() to the consumer holding the message, one at a time."""
    prod = producer(bootstrap)
    times = []
    with subscribed(bootstrap, topic) as cons:
        for i in range(count + 20):  # the first 20 warm the path up
            started = time.perf_counter()
            value = f"rt-{bootstrap}-{i}"  # the topic also holds the other path's
            prod.produce(topic, value=value.encode())
            prod.poll(0)
            assert cons.received({value}, 10.0) == {value}
            if i >= 20:
                times.append(time.perf_counter() - started)
    assert prod.flush(10) == 0
    return times


def summary(times: list[float]) -> str:
    ordered = sorted(times)
    p95 = ordered[round(0.95 * (len(ordered) - 1))]
    return (f"p50 {statistics.median(times) * 1e3:.2f} ms, p95 {p95 * 1e3:.2f} ms, "
            f"max {ordered[-1] * 1e3:.2f} ms (n={len(times)})")


def test_a_proxied_client_is_sent_back_to_its_proxy(rig: Rig) -> None:
    """Metadata asked through the proxy advertises the proxy; asked directly, the broker."""
    assert rig.node.admin.brokers() == {1: rig.node.bootstrap}
    assert KafkaAdmin(rig.listener.bootstrap).brokers() == {1: rig.listener.bootstrap}
    kafka = psutil.Process(rig.node.process.pid)
    listening = {c.laddr for c in kafka.net_connections("tcp") if c.status == "LISTEN"}
    assert listening and all(addr.ip == "127.0.0.1" for addr in listening), listening


def test_produce_and_consume_through_the_proxy(rig: Rig) -> None:
    topic = new_topic(rig.node)
    proxied = round_trips(rig.listener.bootstrap, topic, 200)
    direct = round_trips(rig.node.bootstrap, topic, 200)
    print(f"\nproduce -> consume round trip through Toxiproxy: {summary(proxied)}"
          f"\n                                  direct: {summary(direct)}")


def test_link_down_stops_the_proxied_client_while_a_direct_one_goes_on(rig: Rig) -> None:
    topic = new_topic(rig.node)
    proxied_out, direct_out = producer(rig.listener.bootstrap), producer(rig.node.bootstrap)
    with subscribed(rig.listener.bootstrap, topic) as proxied_in, \
            subscribed(rig.node.bootstrap, topic) as direct_in:
        proxied_out.produce(topic, value=b"before")
        assert proxied_out.flush(10) == 0
        assert proxied_in.received({"before"}, 10) == {"before"}
        assert direct_in.received({"before"}, 10) == {"before"}

        rig.toxiproxy.client.set_enabled(rig.proxy, False)  # link_down
        try:
            proxied_out.produce(topic, value=b"during-proxied")
            assert proxied_out.flush(3.0) == 1, "the cut producer still delivered"
            direct_out.produce(topic, value=b"during-direct")
            assert direct_out.flush(10) == 0, "the direct producer was cut too"
            assert direct_in.received({"during-direct"}, 10) == {"during-direct"}
            assert proxied_in.received({"during-direct"}, 2.0) == set(), (
                "the cut consumer still fetched")
        finally:
            rig.toxiproxy.client.set_enabled(rig.proxy, True)
        restored = time.monotonic()
        assert proxied_out.flush(30) == 0, "the proxied producer did not recover"
        delivered_s = time.monotonic() - restored
        both = {"during-proxied", "during-direct"}
        assert proxied_in.received(both, 30) == both
        caught_up_s = time.monotonic() - restored
        assert direct_in.received({"during-proxied"}, 10) == {"during-proxied"}
    print(f"\nafter the link came back: queued message delivered in {delivered_s:.2f} s, "
          f"cut consumer caught up in {caught_up_s:.2f} s")


def test_a_halted_broker_comes_back_with_its_data(rig: Rig) -> None:
    topic = new_topic(rig.node)
    out = producer(rig.node.bootstrap)
    out.produce(topic, value=b"kept")
    assert out.flush(10) == 0
    rig.node.halt(graceful=True)
    assert not rig.node.running()
    rebooted = rig.node.start()
    print(f"\nKafka restart (data kept): {rebooted:.2f} s {rig.node.timings}")
    with subscribed(rig.listener.bootstrap, topic) as cons:
        assert cons.received({"kept"}, 20) == {"kept"}


def test_a_taken_port_is_refused_before_anything_starts(kafka_installed: None) -> None:
    with LocalRuntime() as runtime, socket.socket() as squatter:
        assert runtime.run_dir is not None
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        node = KafkaNode(runtime.run_id, runtime.run_dir, taken, allocate_port(runtime.run_id))
        with pytest.raises(PortInUseError, match=f"port {taken}.*Kafka listener DIRECT.*Fix"):
            node.start()
        assert not node.running()
        assert "process java" not in leftovers(runtime.run_id)


def test_setup_copies_the_pinned_jars_with_their_dependencies(
        kafka_installed: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `testbed setup` does, into a directory of the test's own (from Maven's local
    cache when it holds them, else from Maven Central)."""
    from testbed.components.install import install_kafka

    libs = install_kafka(tmp_path / "kafka" / "libs")
    names = {jar.name for jar in libs.glob("*.jar")}
    assert {f"kafka_2.13-{KAFKA_VERSION}.jar", f"kafka-clients-{KAFKA_VERSION}.jar",
            f"kafka-raft-{KAFKA_VERSION}.jar", "log4j-slf4j-impl-2.24.3.jar"} <= names
    assert (libs / KAFKA_COMPLETE).is_file()
    assert [p.name for p in libs.parent.iterdir()] == ["libs"]  # no staging dir left
    monkeypatch.setenv(KAFKA_LIBS_ENV, str(libs))
    assert find_kafka_libs() == libs and kafka_version() == KAFKA_VERSION


CONTROLLER = textwrap.dedent("""
    import sys, time
    from testbed.components.kafka import KafkaNode
    from testbed.ports import allocate_port
    from testbed.runtime.local import LocalRuntime

    run_id = sys.argv[1]
    runtime = LocalRuntime(run_id=run_id)
    runtime.open()
    node = KafkaNode(run_id, runtime.run_dir, allocate_port(run_id), allocate_port(run_id))
    node.start()
    print("ready", node.process.pid, flush=True)
    time.sleep(600)
""")


def watchdogs(run_id: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "testbed.runtime.watchdog" in cmdline and run_id in cmdline:
            found.append(proc)
    return found


@pytest.mark.parametrize("cleaner", ["watchdog", "gc"])
def test_a_killed_controllers_kafka_is_swept(kafka_installed: None, cleaner: str) -> None:
    """SIGKILL the controller of a run with a live broker: the watchdog removes the
    broker, or (watchdog killed first) `testbed gc` does."""
    run_id = f"kafka{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen([sys.executable, "-c", CONTROLLER, run_id], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert line[:1] == ["ready"], f"the controller did not boot Kafka: {line}"
        kafka = psutil.Process(int(line[1]))
        if cleaner == "gc":
            for guard in watchdogs(run_id):
                guard.kill()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        if cleaner == "watchdog":
            assert wait_until_gone(run_id, SWEEP_TIMEOUT_S) == []
        else:
            assert "process java" in leftovers(run_id)
            collect_garbage()
            assert leftovers(run_id) == []
        assert eventually(lambda: not kafka.is_running(), 10.0), "the broker outlived it"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
        with contextlib.suppress(Exception):
            collect_garbage()
