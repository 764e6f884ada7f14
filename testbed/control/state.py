"""What `testbed up` tells other tools: every address of a running run, as one JSON file.

Written to the run's directory (up.json) and printed by `up` and `status --json`, so
Chaos Toolkit, toxiproxy-cli, vegeta or curl find the Toxiproxy API, each proxy (a stable
name per link: ``sync.orders-payments``), the broker and each service without a log file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from testbed.runtime.base import Deployment
from testbed.services.contract import amqp_uri

UP_STATE = "up.json"


@dataclass(frozen=True)
class ProxyView:
    """One link's proxy: its Toxiproxy name, where it listens, what it forwards to."""

    name: str
    link: str
    protocol: str
    listen: str
    upstream: str


@dataclass(frozen=True)
class BrokerView:
    """The async topology's broker, as a client reaches it directly (not proxied)."""

    kind: str
    amqp_url: str | None = None  # RabbitMQ: with the deployment's vhost
    management_url: str | None = None
    vhost: str | None = None
    bootstrap: str | None = None  # Kafka
    queues: tuple[str, ...] = ()


@dataclass(frozen=True)
class TopologyView:
    name: str
    deployment: str
    orders_url: str  # POST a JSON {"order_id": "..."} here
    services: dict[str, str]
    own: tuple[str, ...]
    toxiproxy_url: str | None
    proxies: tuple[ProxyView, ...]
    broker: BrokerView | None


@dataclass(frozen=True)
class UpState:
    run_id: str
    pid: int
    runtime: str
    control_url: str  # the controller's API: faults by name, probes (testbed.chaostoolkit)
    topologies: dict[str, TopologyView]
    jaeger_url: str | None = None
    toxiproxy_url: str | None = None  # when every topology shares one (the local runtime)
    log: str | None = field(default=None)  # `up --detach`: where its output goes

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def write(self, directory: Path) -> Path:
        """Written aside, then renamed: a reader never sees half of it."""
        path = directory / UP_STATE
        staged = directory / f".{UP_STATE}.new"
        staged.write_text(self.to_json())
        staged.replace(path)
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UpState:
        topologies = {}
        for name, raw in data["topologies"].items():
            broker = BrokerView(**{**raw["broker"], "queues": tuple(raw["broker"]["queues"])}) \
                if raw.get("broker") else None
            topologies[name] = TopologyView(
                **{**raw, "own": tuple(raw["own"]), "broker": broker,
                   "proxies": tuple(ProxyView(**p) for p in raw["proxies"])})
        return cls(**{**data, "topologies": topologies})

    @classmethod
    def read(cls, path: Path) -> UpState:
        return cls.from_dict(json.loads(path.read_text()))


def _broker(deployment: Deployment) -> BrokerView | None:
    if deployment.kafka is not None:
        return BrokerView("kafka", bootstrap=deployment.kafka.bootstrap,
                          queues=tuple(deployment.kafka.queues))
    access = deployment.broker
    if access is None:
        return None
    address = access.address
    return BrokerView(
        "rabbitmq",
        amqp_url=amqp_uri(address.user, address.password, address.host, address.amqp_port,
                          access.vhost),
        management_url=address.management_url, vhost=access.vhost, queues=access.queues)


def describe(deployment: Deployment) -> TopologyView:
    """Every address of one deployment."""
    proxies = tuple(ProxyView(p.proxy_name, name, p.link.protocol,
                              f"127.0.0.1:{p.listen_port}", p.upstream)
                    for name, p in deployment.proxies.items())
    return TopologyView(
        name=deployment.topology.name, deployment=deployment.id,
        orders_url=f"{deployment.entry_url}/orders", services=deployment.endpoints(),
        own=tuple(s.name for s in deployment.topology.own_services),
        toxiproxy_url=deployment.toxiproxy.url if deployment.toxiproxy else None,
        proxies=proxies, broker=_broker(deployment))


def shared_toxiproxy(views: dict[str, TopologyView]) -> str | None:
    urls = {v.toxiproxy_url for v in views.values() if v.toxiproxy_url}
    return urls.pop() if len(urls) == 1 else None
