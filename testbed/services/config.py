"""What a runtime hands a service process: one JSON file, identical under every runtime."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from testbed.topology.model import Knobs


@dataclass(frozen=True)
class AmqpTarget:
    """Where and as whom a service talks AMQP (through its proxy, not the broker directly)."""

    host: str
    port: int
    vhost: str
    user: str
    password: str
    exchange: str


@dataclass(frozen=True)
class KafkaTarget:
    """Where a service reaches Kafka (its proxy, which the broker advertises to it), and
    how many partitions the event topics have."""

    bootstrap: str
    partitions: int


@dataclass(frozen=True)
class ServiceConfig:
    """Everything one service needs to run."""

    name: str
    role: str
    host: str  # interface to listen on
    port: int
    knobs: Knobs
    ledger_path: str
    downstream_url: str | None = None  # sync: base URL of the next hop (its proxy)
    amqp: AmqpTarget | None = None
    kafka: KafkaTarget | None = None
    consumes: str | None = None
    publishes: str | None = None
    queue: str | None = None
    # Tracing (testbed.services.tracing): off unless the runtime runs a Jaeger for the run.
    otlp_endpoint: str | None = None  # OTLP/HTTP base URL, e.g. http://127.0.0.1:4318
    deployment_id: str | None = None  # put on every span's resource, beside service.name

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ServiceConfig:
        data = json.loads(text)
        data["knobs"] = Knobs(**data["knobs"])
        if data.get("amqp"):
            data["amqp"] = AmqpTarget(**data["amqp"])
        if data.get("kafka"):
            data["kafka"] = KafkaTarget(**data["kafka"])
        return cls(**data)

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json())
        return path
