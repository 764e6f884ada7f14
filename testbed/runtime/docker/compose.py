"""Compose files: the same plan with fixed ports, for `docker compose up` by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from testbed.errors import TopologyError
from testbed.images.build import BROKER_SBIN
from testbed.runtime.docker.containers import (
    AMQP_PORT,
    MANAGEMENT_PORT,
    SERVICE_CONFIG_PATH,
    SERVICE_PORT,
    TOXIPROXY_API_PORT,
)
from testbed.runtime.docker.plan import broker_objects, proxy_upstream, service_config
from testbed.topology.model import Topology

# -- compose files: the same plan, with fixed ports, for `docker compose up` by hand -------

COMPOSE_SERVICE_PORTS = {"sync": 8100, "async": 8200}  # + position of the service (1, 2...)
COMPOSE_PROXY_PORTS = {"sync": 9100, "async": 9200}  # + position of the link
COMPOSE_TOXIPROXY_API = {"sync": 8474, "async": 8475}
COMPOSE_BROKER = ("testbed", "testbed", "testbed")  # vhost, user, password


def _password_hash(password: str, salt: bytes = b"tbed") -> str:
    """RabbitMQ's rabbit_password_hashing_sha256 (fixed salt: the files are reproducible)."""
    import base64
    import hashlib

    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def broker_definitions(topologies: list[Topology], vhost: str, user: str,
                       password: str) -> dict[str, Any]:
    """A RabbitMQ definitions file with the user and every topology's broker objects."""
    exchanges, queues, bindings = [], [], []
    for topology in topologies:
        found = broker_objects(topology)
        exchanges += [{"name": n, "vhost": vhost, "type": k, "durable": True,
                       "auto_delete": False, "internal": False, "arguments": {}}
                      for n, k in found[0]]
        queues += [{"name": n, "vhost": vhost, "durable": True, "auto_delete": False,
                    "arguments": a} for n, a in found[1]]
        bindings += [{"source": e, "vhost": vhost, "destination": q, "destination_type": "queue",
                      "routing_key": k, "arguments": {}} for e, q, k in found[2]]
    return {"users": [{"name": user, "password_hash": _password_hash(password),
                       "hashing_algorithm": "rabbit_password_hashing_sha256",
                       "tags": ["administrator"]}],
            "vhosts": [{"name": vhost}],
            "permissions": [{"user": user, "vhost": vhost, "configure": ".*", "write": ".*",
                             "read": ".*"}],
            "exchanges": exchanges, "queues": queues, "bindings": bindings}


def compose_project(topologies: list[Topology]) -> tuple[dict[str, Any], dict[str, str]]:
    """The compose model and its config files (relative path -> text) for topologies named
    ``sync`` / ``async``. Service configs come from :func:`service_config`, proxies from
    :func:`proxy_upstream`, broker objects from :func:`broker_objects`: the same functions
    the runtime uses, so the files cannot drift from what the controller creates."""
    on_kafka = [t.name for t in topologies if t.on_kafka]
    if on_kafka:
        raise TopologyError("broker.kind", f"compose files describe RabbitMQ topologies only "
                            f"({', '.join(on_kafka)} runs on Kafka)",
                            "deploy it with the docker runtime (--runtime docker), which runs "
                            "a Kafka container per deployment")
    services: dict[str, Any] = {}
    networks: dict[str, Any] = {}
    files: dict[str, str] = {}
    async_topologies = [t for t in topologies if t.broker is not None]
    for topology in topologies:
        net = topology.name
        networks[net] = {"driver": "bridge", "labels": {"testbed.compose": net}}
        proxy_ports = {link.name: COMPOSE_PROXY_PORTS[net] + i
                       for i, link in enumerate(topology.proxied_links, 1)}
        if proxy_ports:
            proxies = [{"name": f"{net}.{name}", "listen": f"0.0.0.0:{port}",
                        "upstream": proxy_upstream(topology, name), "enabled": True}
                       for name, port in proxy_ports.items()]
            files[f"config/{net}/toxiproxy.json"] = json.dumps(proxies, indent=2) + "\n"
            services[f"{net}-toxiproxy"] = {
                "image": "testbed/toxiproxy:latest",
                "build": recipe_build("toxiproxy"),
                "command": ["-host", "0.0.0.0", "-port", str(TOXIPROXY_API_PORT),
                            "-config", "/config/toxiproxy.json"],
                "volumes": [f"./config/{net}/toxiproxy.json:/config/toxiproxy.json:ro"],
                "networks": {net: {"aliases": ["toxiproxy"]}},
                "ports": [f"127.0.0.1:{COMPOSE_TOXIPROXY_API[net]}:{TOXIPROXY_API_PORT}",
                          *(f"127.0.0.1:{p}:{p}" for p in proxy_ports.values())],
            }
        broker = COMPOSE_BROKER if topology.broker is not None else None
        for position, spec in enumerate(topology.services, 1):
            config = service_config(topology, spec.name, proxy_ports, broker)
            files[f"config/{net}/{spec.name}.json"] = config.to_json() + "\n"
            depends = [f"{net}-toxiproxy"] if proxy_ports else []
            entry: dict[str, Any] = {
                "image": "testbed/service:latest",
                "build": recipe_build("service"),
                "init": True,
                "volumes": [f"./config/{net}/{spec.name}.json:{SERVICE_CONFIG_PATH}:ro"],
                "networks": {net: {"aliases": [spec.name]}},
                "ports": [f"127.0.0.1:{COMPOSE_SERVICE_PORTS[net] + position}:{SERVICE_PORT}"],
            }
            if topology.broker is not None:
                entry["depends_on"] = {**{d: {"condition": "service_started"} for d in depends},
                                       "broker": {"condition": "service_healthy"}}
            elif depends:
                entry["depends_on"] = depends
            services[f"{net}-{spec.name}"] = entry
    if async_topologies:
        vhost, user, password = COMPOSE_BROKER
        files["config/broker/definitions.json"] = json.dumps(
            broker_definitions(async_topologies, vhost, user, password), indent=2) + "\n"
        services["broker"] = {
            "image": "testbed/rabbitmq:latest",
            "build": recipe_build("rabbitmq"),
            "init": True,
            "hostname": "broker",
            "environment": {"TESTBED_BROKER_USER": user, "TESTBED_BROKER_PASSWORD": password},
            "volumes": ["./config/broker/definitions.json:/etc/testbed/definitions.json:ro"],
            "networks": {t.name: {"aliases": ["broker"]} for t in async_topologies},
            "ports": [f"127.0.0.1:5672:{AMQP_PORT}", f"127.0.0.1:15672:{MANAGEMENT_PORT}"],
            "healthcheck": {"test": ["CMD", f"{BROKER_SBIN}/rabbitmq-diagnostics", "-q",
                                     "check_port_connectivity"],
                            "interval": "2s", "timeout": "10s", "retries": 60},
        }
    return {"name": "testbed-" + "-".join(t.name for t in topologies), "services": services,
            "networks": networks}, files


def recipe_build(kind: str) -> dict[str, str]:
    """Compose's build section: the official-image recipe, the repository root as context
    (used by `docker compose build`/`up --build` where a registry answers; elsewhere the
    offline images from `testbed images build` carry the same tags)."""
    return {"context": "../..", "dockerfile": f"compose/images/{kind}/Dockerfile"}


def to_yaml(value: Any, indent: int = 0) -> str:
    """A small YAML writer for the compose model (mappings, lists, scalars; no PyYAML)."""
    pad = "  " * indent
    if isinstance(value, dict):
        if not value:
            return "{}"
        lines = []
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                lines.append(f"{pad}{key}:\n{to_yaml(item, indent + 1)}")
            else:
                lines.append(f"{pad}{key}: {to_yaml(item)}")
        return "\n".join(lines)
    if isinstance(value, list):
        if not value:
            return "[]"
        if all(not isinstance(v, dict | list) for v in value):
            return "\n".join(f"{pad}- {to_yaml(v)}" for v in value)
        return "\n".join(f"{pad}-\n{to_yaml(v, indent + 1)}" for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(str(value))  # a JSON string is a valid YAML scalar


def write_compose(directory: Path, topologies: list[Topology]) -> list[Path]:
    """Write compose.yaml and its config files under ``directory``; returns the paths."""
    model, files = compose_project(topologies)
    written = []
    header = ("# Generated by `python compose/generate.py` from the same code as the docker "
              "runtime;\n# do not edit by hand (a test fails on drift). Build the images "
              "first:\n# `testbed images build` (offline), or `docker compose build` where a "
              "registry answers.\n")
    for relative, text in {"compose.yaml": header + to_yaml(model) + "\n", **files}.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written
