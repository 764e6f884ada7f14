"""The Kafka node's pure logic: its server.properties, listener names, and the errors a
missing java or missing jars give (no JVM starts here)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from testbed.components import binaries
from testbed.components.kafka import (
    ClientListener,
    KafkaNode,
    check_listeners,
    listener_name,
    new_cluster_id,
    render_properties,
)
from testbed.errors import MissingBinaryError, TestbedError


def parse(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines())


def test_each_proxied_client_is_advertised_at_its_proxy() -> None:
    clients = [ClientListener("orders", 21001, 22001), ClientListener("pay-ments", 21002, 22002)]
    props = parse(render_properties(20001, 20002, Path("/data"), clients))
    assert props["listeners"] == ("DIRECT://127.0.0.1:20001,CONTROLLER://127.0.0.1:20002,"
                                  "CLIENT_ORDERS://127.0.0.1:21001,"
                                  "CLIENT_PAY_MENTS://127.0.0.1:21002")
    assert props["advertised.listeners"] == ("DIRECT://127.0.0.1:20001,"
                                             "CLIENT_ORDERS://127.0.0.1:22001,"
                                             "CLIENT_PAY_MENTS://127.0.0.1:22002")
    assert props["listener.security.protocol.map"] == (
        "DIRECT:PLAINTEXT,CONTROLLER:PLAINTEXT,CLIENT_ORDERS:PLAINTEXT,CLIENT_PAY_MENTS:PLAINTEXT")
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:20002"
    assert props["auto.create.topics.enable"] == "false"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert "zookeeper.connect" not in props


def test_every_listener_binds_loopback() -> None:
    props = parse(render_properties(20001, 20002, Path("/d"), [ClientListener("a", 3, 4)]))
    for key in ("listeners", "advertised.listeners"):
        for endpoint in props[key].split(","):
            assert endpoint.split("://")[1].startswith("127.0.0.1:"), endpoint


def test_listener_names_and_clashes_are_refused_clearly() -> None:
    assert listener_name("orders.v2") == "CLIENT_ORDERS_V2"
    with pytest.raises(TestbedError, match="needs a name"):
        listener_name("")
    with pytest.raises(TestbedError, match=r"same listener name.*Fix"):
        check_listeners(1, 2, [ClientListener("a-b", 3, 4), ClientListener("a.b", 5, 6)])
    with pytest.raises(TestbedError, match=r"\[3\] repeats"):
        check_listeners(1, 2, [ClientListener("a", 3, 4), ClientListener("b", 3, 6)])


def test_cluster_ids_are_kafka_uuids() -> None:
    for _ in range(200):
        cluster_id = new_cluster_id()
        assert len(cluster_id) == 22 and not cluster_id.startswith("-")
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_missing_java_names_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TESTBED_JAVA", str(tmp_path / "no-java"))
    with pytest.raises(MissingBinaryError, match=r"java not found.*openjdk-17-jre-headless"):
        KafkaNode("r1", tmp_path, 20001, 20002)
    assert not (tmp_path / "kafka").exists()


def test_missing_jars_name_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "java").write_text("#!/bin/sh\n")
    (tmp_path / "java").chmod(0o755)
    monkeypatch.setenv("TESTBED_JAVA", str(tmp_path / "java"))
    monkeypatch.setenv(binaries.KAFKA_LIBS_ENV, str(tmp_path))
    with pytest.raises(MissingBinaryError, match=r"Kafka jars not found.*testbed setup"):
        KafkaNode("r1", tmp_path, 20001, 20002)
    monkeypatch.delenv(binaries.KAFKA_LIBS_ENV)
    monkeypatch.setattr(binaries.sys, "prefix", str(tmp_path / "venv"))
    with pytest.raises(MissingBinaryError, match=r"kafka-4\.\d+\.\d+/libs"):
        binaries.require_kafka_libs()
    assert binaries.kafka_version() is None


def test_an_unfinished_jar_copy_does_not_count(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    monkeypatch.setattr(binaries.sys, "prefix", str(tmp_path))
    libs = binaries.kafka_install_dir()
    libs.mkdir(parents=True)
    (libs / f"kafka_2.13-{binaries.KAFKA_VERSION}.jar").write_bytes(b"")
    assert binaries.find_kafka_libs() is None  # no marker: setup was interrupted
    (libs / binaries.KAFKA_COMPLETE).write_text("done\n")
    assert binaries.find_kafka_libs() == libs
    assert binaries.kafka_version() == binaries.KAFKA_VERSION


def test_the_pom_takes_its_version_from_the_pin() -> None:
    pom = binaries.KAFKA_POM.read_text()
    assert "<version>${kafka.version}</version>" in pom
    assert f"<kafka.version>{binaries.KAFKA_VERSION}</kafka.version>" in pom


def test_setup_without_java_or_mvn_names_the_fix(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    """Not root: no apt-get, a ComponentError that says what to install (nothing made)."""
    from testbed.components import install
    from testbed.errors import ComponentError

    monkeypatch.setattr(install.os, "geteuid", lambda: 1000)
    monkeypatch.setenv("TESTBED_JAVA", str(tmp_path / "no-java"))
    with pytest.raises(ComponentError, match=r"java, which runs them, is missing.*"
                                             r"apt-get install -y openjdk-17-jre-headless"):
        install.install_kafka(tmp_path / "libs")
    monkeypatch.setenv("TESTBED_JAVA", "/bin/true")
    monkeypatch.setenv("TESTBED_MVN", str(tmp_path / "no-mvn"))
    with pytest.raises(ComponentError, match=r"mvn.*is missing.*apt-get install -y maven"):
        install.install_kafka(tmp_path / "libs")
    assert list(tmp_path.iterdir()) == []
