"""What the docker runtime creates for a topology, as plain data: service configs, broker
objects, proxy upstreams, a deployment's Kafka listeners, and the labels that tie every
object to its controller."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.components.kafka import ClientListener, check_listeners, render_properties
from testbed.errors import TestbedError
from testbed.runs import RunRecord, process_started
from testbed.runtime.base import (
    BrokerAccess,
    dead_letter_exchange,
    dead_letter_queue,
    retry_queue,
)
from testbed.runtime.docker.containers import AMQP_PORT, LEDGER_DIR, SERVICE_PORT
from testbed.services.config import AmqpTarget, KafkaTarget, ServiceConfig
from testbed.topology.model import Knobs, LinkSpec, Topology

# A deployment's Kafka container, alias ``kafka`` on its network. Inside it: INTERNAL for
# unproxied clients on the network, CONTROLLER for the quorum (never leaves the
# container), and a listener per proxied client at KAFKA_CLIENT_PORT_BASE + its position,
# which that client's proxy forwards to. DIRECT (the testbed on the host) listens on the
# number it is published at on 127.0.0.1, so 127.0.0.1:<port> means the node inside the
# container too (it is also the inter-broker listener).
KAFKA_ALIAS = "kafka"
KAFKA_INTERNAL_PORT = 9092
KAFKA_CONTROLLER_PORT = 9093
KAFKA_CLIENT_PORT_BASE = 9100
KAFKA_DATA_DIR = "/var/lib/kafka/data"


@dataclass
class ContainerPlan:
    """One container to create: what the runtime creates and what compose files describe."""

    name: str  # service name inside the deployment (network alias)
    role: str  # service | toxiproxy
    image_kind: str
    config: ServiceConfig | None = None
    ports: dict[int, int] = field(default_factory=dict)  # container port -> host port


def service_config(topology: Topology, name: str, proxy_ports: dict[str, int],
                   broker: tuple[str, str, str] | None,
                   kafka: KafkaPlan | None = None) -> ServiceConfig:
    """A service's config as seen inside its network: peers by alias, fixed inner ports.

    ``proxy_ports``: link name -> the proxy's listen port; ``broker``: (vhost, user,
    password) on RabbitMQ; ``kafka``: the deployment's Kafka listeners on Kafka. Shared
    by the runtime and the compose files, so they cannot drift."""
    spec = topology.service(name)
    downstream_url = None
    link = topology.downstream(name)
    if link is not None:
        downstream_url = (f"http://toxiproxy:{proxy_ports[link.name]}" if link.proxied
                          else f"http://{link.target}:{SERVICE_PORT}")
    amqp = None
    amqp_link = topology.amqp_link(name)
    if amqp_link is not None and broker is not None and topology.broker is not None:
        vhost, user, password = broker
        host, port = (("toxiproxy", proxy_ports[amqp_link.name]) if amqp_link.proxied
                      else ("broker", AMQP_PORT))
        amqp = AmqpTarget(host, port, vhost, user, password, topology.broker.exchange)
    to_kafka = kafka.target(amqp_link) if kafka is not None and amqp_link is not None else None
    return ServiceConfig(
        name=name, role=spec.role, host="0.0.0.0", port=SERVICE_PORT, knobs=spec.knobs,
        ledger_path=f"{LEDGER_DIR}/{name}.ledger", downstream_url=downstream_url, amqp=amqp,
        consumes=spec.consumes, publishes=spec.publishes,
        queue=name if spec.consumes else None, kafka=to_kafka)


def kafka_links(topology: Topology) -> list[LinkSpec]:
    """The proxied links to Kafka, in order: each client's listener port is its place."""
    return [link for link in topology.proxied_links if link.protocol == "kafka"]


def kafka_client_port(topology: Topology, link_name: str) -> int:
    """The port, inside the Kafka container, of the listener a proxied client has."""
    names = [link.name for link in kafka_links(topology)]
    return KAFKA_CLIENT_PORT_BASE + names.index(link_name)


@dataclass(frozen=True)
class KafkaPlan:
    """A deployment's Kafka node in its container: the published DIRECT port and the
    listener of each proxied client (advertised as ``toxiproxy:<its proxy port>``)."""

    port: int  # DIRECT: inside the container, and published on the host's 127.0.0.1
    listeners: dict[str, ClientListener]  # link name -> its client's listener
    partitions: int

    def properties(self) -> str:
        """server.properties: components/kafka.py's own, with container addresses."""
        return render_properties(self.port, KAFKA_CONTROLLER_PORT, Path(KAFKA_DATA_DIR),
                                 list(self.listeners.values()), bind_host="0.0.0.0",
                                 internal=(KAFKA_ALIAS, KAFKA_INTERNAL_PORT))

    def target(self, link: LinkSpec) -> KafkaTarget:
        """Where a service bootstraps: its proxy, or the INTERNAL listener unproxied."""
        bootstrap = (self.listeners[link.name].bootstrap if link.proxied
                     else f"{KAFKA_ALIAS}:{KAFKA_INTERNAL_PORT}")
        return KafkaTarget(bootstrap, self.partitions)


def kafka_plan(topology: Topology, port: int, proxy_ports: dict[str, int]) -> KafkaPlan:
    """The Kafka listeners of a deployment: ``port`` is DIRECT's (allocated on the host),
    ``proxy_ports`` the proxies' listen ports (link name -> port)."""
    assert topology.broker is not None
    listeners = {link.name: ClientListener(link.source, kafka_client_port(topology, link.name),
                                           proxy_ports[link.name], proxy_host="toxiproxy",
                                           broker_host=KAFKA_ALIAS)
                 for link in kafka_links(topology)}
    check_listeners(port, KAFKA_CONTROLLER_PORT, list(listeners.values()))
    inner = {KAFKA_INTERNAL_PORT, KAFKA_CONTROLLER_PORT,
             *(c.broker_port for c in listeners.values())}
    if port in inner:
        raise TestbedError(f"Kafka's host port {port} is one of its container-inner ports "
                           f"{sorted(inner)}. Fix: set $TESTBED_PORT_RANGE above "
                           f"{KAFKA_CLIENT_PORT_BASE + len(listeners)}")
    return KafkaPlan(port, listeners, topology.broker.partitions)


def broker_objects(topology: Topology) -> tuple[list[tuple[str, str]],
                                                list[tuple[str, dict[str, Any]]],
                                                list[tuple[str, str, str]]]:
    """Exchanges (name, kind), queues (name, arguments) and bindings (exchange, queue, key)
    of an async topology: what the runtime declares and the compose definitions load
    (the same as the local runtime declares: dead-letter and retry queues included)."""
    if topology.broker is None:
        return [], [], []
    exchange = topology.broker.exchange
    dead_letters = dead_letter_exchange(exchange)
    exchanges = [(exchange, "topic"), (dead_letters, "direct")]
    queues: list[tuple[str, dict[str, Any]]] = []
    bindings: list[tuple[str, str, str]] = []
    for spec in topology.services:
        if not spec.consumes:
            continue
        queues.append((spec.name, spec.knobs.queue_arguments(spec.name, dead_letters)))
        bindings.append((exchange, spec.name, spec.consumes))
        if spec.knobs.dead_letter:
            queues.append((dead_letter_queue(spec.name), {}))
            bindings.append((dead_letters, dead_letter_queue(spec.name), spec.name))
        if spec.knobs.consumer_retries:
            queues.append((retry_queue(spec.name), spec.knobs.retry_queue_arguments(spec.name)))
    return exchanges, queues, bindings


def proxy_upstream(topology: Topology, link_name: str) -> str:
    link = next(lk for lk in topology.proxied_links if lk.name == link_name)
    if link.protocol == "kafka":  # the client's own listener (see KafkaPlan)
        return f"{KAFKA_ALIAS}:{kafka_client_port(topology, link_name)}"
    return f"broker:{AMQP_PORT}" if link.protocol == "amqp" else f"{link.target}:{SERVICE_PORT}"


def controller_label() -> str:
    me = os.getpid()
    return f"{me}:{process_started(me)}"


def controller_alive(label: str) -> bool:
    """Is the controller a ``testbed.controller`` label names still running?"""
    try:
        pid, started = label.split(":", 1)
        return RunRecord("", int(pid), float(started), "docker").controller_alive()
    except ValueError:
        return False


def resource_limits(knobs: Knobs) -> dict[str, Any]:
    """docker create arguments for a service's cpus / memory_mb knobs (none when unset)."""
    limits: dict[str, Any] = {}
    if knobs.cpus is not None:
        limits["nano_cpus"] = int(knobs.cpus * 1e9)
    if knobs.memory_mb is not None:
        limits["mem_limit"] = f"{knobs.memory_mb}m"
        limits["memswap_limit"] = f"{knobs.memory_mb}m"
    return limits


def declare_vhost(topology: Topology, broker: Any, vhost: str,
                  on_teardown: Callable[[Callable[[], object]], None]) -> BrokerAccess:
    """A deployment's vhost on the run's broker (a container's or a pod's: ``admin``,
    ``address``, ``running()``), with its exchanges, queues and bindings; deleted at
    teardown while the broker lives (one that died took its vhosts with it)."""
    assert topology.broker is not None
    admin = broker.admin
    admin.create_vhost(vhost)
    on_teardown(lambda: admin.delete_vhost(vhost) if broker.running() else None)
    exchanges, queues, bindings = broker_objects(topology)
    for name, kind in exchanges:
        admin.declare_exchange(vhost, name, kind=kind)
    for name, arguments in queues:
        admin.declare_queue(vhost, name, arguments)
    for exchange_name, queue, key in bindings:
        admin.bind(vhost, exchange_name, queue, key)
    consumed = tuple(spec.name for spec in topology.services if spec.consumes)
    return BrokerAccess(broker.address, vhost, topology.broker.exchange, consumed, admin,
                        broker)
