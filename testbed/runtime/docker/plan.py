"""What the docker runtime creates for a topology, as plain data: service configs, broker
objects, proxy upstreams, and the labels that tie every object to its controller."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psutil

from testbed.runs import RunRecord
from testbed.runtime.base import (
    dead_letter_exchange,
    dead_letter_queue,
    retry_queue,
)
from testbed.runtime.docker.containers import AMQP_PORT, LEDGER_DIR, SERVICE_PORT
from testbed.services.config import AmqpTarget, ServiceConfig
from testbed.topology.model import Knobs, Topology


@dataclass
class ContainerPlan:
    """One container to create: what the runtime creates and what compose files describe."""

    name: str  # service name inside the deployment (network alias)
    role: str  # service | toxiproxy
    image_kind: str
    config: ServiceConfig | None = None
    ports: dict[int, int] = field(default_factory=dict)  # container port -> host port


def service_config(topology: Topology, name: str, proxy_ports: dict[str, int],
                   broker: tuple[str, str, str] | None) -> ServiceConfig:
    """A service's config as seen inside its network: peers by alias, fixed inner ports.

    ``proxy_ports``: link name -> the proxy's listen port; ``broker``: (vhost, user,
    password). Shared by the runtime and the compose files, so they cannot drift."""
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
    return ServiceConfig(
        name=name, role=spec.role, host="0.0.0.0", port=SERVICE_PORT, knobs=spec.knobs,
        ledger_path=f"{LEDGER_DIR}/{name}.ledger", downstream_url=downstream_url, amqp=amqp,
        consumes=spec.consumes, publishes=spec.publishes,
        queue=name if spec.consumes else None)


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
    return f"broker:{AMQP_PORT}" if link.protocol == "amqp" else f"{link.target}:{SERVICE_PORT}"


def controller_label() -> str:
    me = psutil.Process()
    return f"{me.pid}:{me.create_time()}"


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
