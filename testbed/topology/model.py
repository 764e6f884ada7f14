"""The declarative topology: services, links, broker and resilience knobs.

Every dataclass validates itself on construction, so an invalid topology cannot
exist; the error names the field, the problem and the fix. Proxies are not listed
separately: every link with ``proxied=True`` gets one Toxiproxy proxy named after it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from typing import Literal

from testbed.errors import TopologyError
from testbed.topology.own import OwnService, check_own

Protocol = Literal["http", "amqp", "kafka"]
Role = Literal["http_stage", "async_gateway", "async_consumer"]
Shape = Literal["sync", "async"]

BROKER = "broker"
ROLES: tuple[str, ...] = ("http_stage", "async_gateway", "async_consumer")
PROTOCOLS: tuple[str, ...] = ("http", "amqp", "kafka")
BROKER_KINDS: tuple[str, ...] = ("rabbitmq", "kafka")
MAX_PARTITIONS = 16
# Queue policies that are RabbitMQ's: a Kafka topic has no queue type, length limit,
# overflow or delivery limit (a consumer decides what a failure does: retry topics).
RABBITMQ_ONLY_KNOBS = {"queue_type": "classic", "max_length": None, "overflow": "drop-head",
                       "delivery_limit": None, "request_reply": False, "outbox": False}
SHAPES: tuple[str, ...] = ("sync", "async")
QUEUE_TYPES: tuple[str, ...] = ("classic", "quorum")
OVERFLOWS: tuple[str, ...] = ("drop-head", "reject-publish")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,30}$")


def check_name(path: str, name: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise TopologyError(
            path,
            f"{name!r} is not a valid name",
            "use 1-31 lowercase letters, digits or underscores, starting with a letter",
        )


def _positive(path: str, value: float, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = "zero or more" if allow_zero else "greater than zero"
        raise TopologyError(path, f"{value!r} is not allowed", f"give a finite number {bound}")


def _routing_key(path: str, value: object) -> None:
    """An event's routing key, when given: text like ``order.placed``."""
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise TopologyError(path, f"{value!r} is not a routing key",
                            "give the event's name as text, e.g. 'order.placed'")


@dataclass(frozen=True)
class Knobs:
    """Resilience and capacity settings of one service (all off or modest by default)."""

    pool_size: int = 8  # sync: worker threads serving requests (pool exhaustion = cascade)
    accept_backlog: int = 64  # sync: listen() backlog of the server socket
    timeout_s: float = 2.0  # sync: timeout of the call to the downstream hop
    work_ms: float = 0.0  # simulated processing time per order
    work_jitter_ms: float = 0.0  # plus an exponential tail with this mean (seeded)
    seed: int = 1  # of everything random in the service, so a run can be replayed
    # Sync resilience (off by default):
    retries: int = 0  # extra attempts at the downstream call after a failure
    retry_backoff_ms: float = 0.0  # 0: naive, retry at once; else exponential from this
    retry_jitter: bool = False  # full jitter on the backoff
    breaker_failures: int = 0  # consecutive failures that open the breaker; 0: no breaker
    breaker_reset_s: float = 5.0  # open -> half-open after this long
    deadline: bool = False  # honour the caller's X-Request-Deadline: shed late orders
    deadline_reserve_ms: float = 0.0  # with deadline: shed when less than this is left
    prefetch: int = 10  # async: unacked deliveries a consumer may hold
    heartbeat_s: int = 10  # async: AMQP heartbeat, how fast a dead peer is noticed
    error_backoff_ms: float = 100.0  # async: pause after a handler error before the nack
    reconnect_max_s: float = 0.5  # async consumer: longest wait between reconnect attempts
    consumer_retries: int = 0  # async: retry a failed message via a delay queue, N times
    consumer_retry_delay_ms: float = 1000.0  # async: how long a failed message waits
    idempotent: bool = False  # async consumer: skip the side effect of a seen order
    replicas: int = 1  # async consumer: competing consumers on the queue (own channels)
    outbox: bool = False  # async gateway: order + event in one local transaction, relayed
    request_reply: bool = False  # async gateway: wait (timeout_s) for the last stage's reply
    # Tracing (only when the runtime traces the run): carry the trace context in AMQP
    # message headers, so a consumer's span joins the publisher's trace.
    trace_propagation: bool = False
    # Container resources (docker runtime only; the local runtime refuses them):
    cpus: float | None = None  # CPU limit of the service's container, e.g. 0.5
    memory_mb: int | None = None  # memory limit of the service's container
    # Queue policies of an async consumer's queue:
    queue_type: str = "classic"  # classic | quorum (quorum is needed for delivery_limit)
    max_length: int | None = None  # messages the queue holds at most
    overflow: str = "drop-head"  # at max_length: drop-head | reject-publish
    dead_letter: bool = False  # rejected / over-limit messages go to <queue>.dlq
    delivery_limit: int | None = None  # quorum: give up on a message after N deliveries

    def __post_init__(self) -> None:
        for name in ("pool_size", "accept_backlog", "prefetch", "heartbeat_s"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise TopologyError(f"knobs.{name}", f"{value!r} is not allowed",
                                    "give a whole number of 1 or more")
        _positive("knobs.timeout_s", self.timeout_s)
        _positive("knobs.work_ms", self.work_ms, allow_zero=True)
        _positive("knobs.error_backoff_ms", self.error_backoff_ms, allow_zero=True)
        _positive("knobs.work_jitter_ms", self.work_jitter_ms, allow_zero=True)
        _positive("knobs.retry_backoff_ms", self.retry_backoff_ms, allow_zero=True)
        _positive("knobs.breaker_reset_s", self.breaker_reset_s)
        _positive("knobs.deadline_reserve_ms", self.deadline_reserve_ms, allow_zero=True)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise TopologyError("knobs.seed", f"{self.seed!r} is not allowed",
                                "give a whole number of 0 or more")
        for name in ("retries", "breaker_failures", "consumer_retries"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10:
                raise TopologyError(f"knobs.{name}", f"{value!r} is not allowed",
                                    "give a whole number from 0 to 10")
        _positive("knobs.reconnect_max_s", self.reconnect_max_s)
        _positive("knobs.consumer_retry_delay_ms", self.consumer_retry_delay_ms)
        if isinstance(self.replicas, bool) or not isinstance(self.replicas, int) \
                or not 1 <= self.replicas <= 8:
            raise TopologyError("knobs.replicas", f"{self.replicas!r} is not allowed",
                                "give a whole number from 1 to 8")
        for name in ("idempotent", "outbox", "request_reply", "retry_jitter", "dead_letter",
                     "deadline", "trace_propagation"):
            if not isinstance(getattr(self, name), bool):
                raise TopologyError(f"knobs.{name}", f"{getattr(self, name)!r} is not allowed",
                                    "give true or false")
        if self.deadline_reserve_ms and not self.deadline:
            raise TopologyError("knobs.deadline_reserve_ms", "it has no effect without "
                                "deadline", "set deadline = true, or leave the reserve out")
        if self.cpus is not None:
            _positive("knobs.cpus", self.cpus)
        if self.memory_mb is not None and (isinstance(self.memory_mb, bool)
                                           or not isinstance(self.memory_mb, int)
                                           or self.memory_mb < 32):
            raise TopologyError("knobs.memory_mb", f"{self.memory_mb!r} is not allowed",
                                "give a whole number of megabytes, 32 or more")
        self._check_queue_policy()

    @property
    def container_limits(self) -> bool:
        return self.cpus is not None or self.memory_mb is not None

    def _check_queue_policy(self) -> None:
        if self.queue_type not in QUEUE_TYPES:
            raise TopologyError("knobs.queue_type", f"unknown queue type {self.queue_type!r}",
                                f"use one of {', '.join(QUEUE_TYPES)}")
        if self.overflow not in OVERFLOWS:
            raise TopologyError("knobs.overflow", f"unknown overflow {self.overflow!r}",
                                f"use one of {', '.join(OVERFLOWS)}")
        for name in ("max_length", "delivery_limit"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise TopologyError(f"knobs.{name}", f"{value!r} is not allowed",
                                    "give a whole number of 1 or more, or leave it out")
        if self.outbox and self.request_reply:
            raise TopologyError("knobs.request_reply", "request-reply waits for the answer "
                                "itself; an outbox relays later", "set only one of outbox, "
                                "request_reply")
        if self.consumer_retries and not self.dead_letter:
            raise TopologyError("knobs.consumer_retries",
                                "a message that fails every retry must go somewhere",
                                "set dead_letter=True as well, so it is parked in <queue>.dlq")
        if self.delivery_limit is not None and self.queue_type != "quorum":
            raise TopologyError("knobs.delivery_limit",
                                "RabbitMQ 3.10 classic queues have no delivery limit",
                                "set queue_type='quorum' as well")

    def queue_arguments(self, queue: str, dead_letter_exchange: str) -> dict[str, object]:
        """The x-arguments that put these policies on a consumer's queue."""
        arguments: dict[str, object] = {"x-queue-type": self.queue_type}
        if self.max_length is not None:
            arguments["x-max-length"] = self.max_length
            arguments["x-overflow"] = self.overflow
        if self.delivery_limit is not None:
            arguments["x-delivery-limit"] = self.delivery_limit
        if self.dead_letter:
            # Routed by the queue's name, whatever key the message was published with.
            arguments["x-dead-letter-exchange"] = dead_letter_exchange
            arguments["x-dead-letter-routing-key"] = queue
        return arguments

    def retry_queue_arguments(self, queue: str) -> dict[str, object]:
        """A delay queue: a failed message waits out the TTL, then goes back to ``queue``."""
        return {"x-message-ttl": int(self.consumer_retry_delay_ms),
                "x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue}


@dataclass(frozen=True)
class ServiceSpec:
    """One service of the system under test."""

    name: str
    role: Role
    knobs: Knobs = field(default_factory=Knobs)
    consumes: str | None = None  # async consumer: routing key of the event it handles
    publishes: str | None = None  # async: routing key of the event it emits
    port: int | None = None  # fixed listen port; None lets the runtime allocate one
    own: OwnService | None = None  # the user's own program in this role (own.py)

    def __post_init__(self) -> None:
        check_name("services[].name", self.name)
        where = f"services[{self.name}]"
        _routing_key(f"{where}.consumes", self.consumes)
        _routing_key(f"{where}.publishes", self.publishes)
        if self.role not in ROLES:
            raise TopologyError(f"{where}.role", f"unknown role {self.role!r}",
                                f"use one of {', '.join(ROLES)}")
        if self.role == "async_consumer" and not self.consumes:
            raise TopologyError(f"{where}.consumes", "an async consumer consumes nothing",
                                "name the event (routing key) it consumes")
        if self.role != "async_consumer" and self.consumes:
            raise TopologyError(f"{where}.consumes", f"a {self.role} cannot consume",
                                "remove 'consumes' or make the role async_consumer")
        if self.role == "async_gateway" and not self.publishes:
            raise TopologyError(f"{where}.publishes", "an async gateway publishes nothing",
                                "name the event (routing key) it publishes")
        if self.role == "http_stage" and self.publishes:
            raise TopologyError(f"{where}.publishes", "an http_stage does not publish",
                                "remove 'publishes' or use an async role")
        if self.port is not None and (
            not isinstance(self.port, int) or not 1024 <= self.port <= 65535
        ):
            raise TopologyError(f"{where}.port", f"{self.port!r} is not a usable port",
                                "give a port from 1024 to 65535, or leave it out")
        if not isinstance(self.knobs, Knobs):
            raise TopologyError(f"{where}.knobs", "knobs must be a Knobs object",
                                "build it with Knobs(...) or from a mapping via from_dict")
        if self.own is not None:
            defaults = Knobs()
            check_own(self.name, self.role, [f.name for f in fields(Knobs) if
                                             getattr(self.knobs, f.name)
                                             != getattr(defaults, f.name)])


@dataclass(frozen=True)
class LinkSpec:
    """A dependency: source calls target over http, or source talks amqp to the broker."""

    source: str
    target: str
    protocol: Protocol
    proxied: bool = True

    @property
    def name(self) -> str:
        """The link's (and its proxy's) name, e.g. ``orders-payments``."""
        return f"{self.source}-{self.target}"

    def __post_init__(self) -> None:
        check_name("links[].source", self.source)
        check_name(f"links[{self.source}-?].target", self.target)
        if not isinstance(self.proxied, bool):
            raise TopologyError(f"links[{self.name}].proxied", f"{self.proxied!r} is not "
                                "allowed", "give true or false")
        if self.protocol not in PROTOCOLS:
            raise TopologyError(f"links[{self.name}].protocol",
                                f"unknown protocol {self.protocol!r}",
                                "use 'http', 'amqp' (RabbitMQ) or 'kafka'")
        if self.protocol != "http" and self.target != BROKER:
            raise TopologyError(f"links[{self.name}].target",
                                f"an {self.protocol} link must point at the broker",
                                f"set target to {BROKER!r}")


@dataclass(frozen=True)
class BrokerSpec:
    """The broker of an async topology: RabbitMQ (an exchange, a queue per consumer) or
    Kafka (a topic per event with ``partitions`` partitions, a consumer group per consumer;
    ``exchange`` is unused there)."""

    exchange: str = "orders"
    kind: str = "rabbitmq"
    partitions: int = 1  # kafka: partitions of every event topic (keyed by order id)

    def __post_init__(self) -> None:
        check_name("broker.exchange", self.exchange)
        if self.kind not in BROKER_KINDS:
            raise TopologyError("broker.kind", f"unknown broker {self.kind!r}",
                                f"use one of {', '.join(BROKER_KINDS)}")
        if isinstance(self.partitions, bool) or not isinstance(self.partitions, int) \
                or not 1 <= self.partitions <= MAX_PARTITIONS:
            raise TopologyError("broker.partitions", f"{self.partitions!r} is not allowed",
                                f"give a whole number from 1 to {MAX_PARTITIONS}")
        if self.partitions != 1 and self.kind != "kafka":
            raise TopologyError("broker.partitions", "RabbitMQ queues have no partitions",
                                "set kind = 'kafka', or leave partitions out")

    @property
    def protocol(self) -> Protocol:
        """What a service's link to this broker speaks."""
        return "kafka" if self.kind == "kafka" else "amqp"


@dataclass(frozen=True)
class Topology:
    """A whole system under test: the services, who calls whom, and the broker."""

    name: str
    shape: Shape
    entry: str
    services: tuple[ServiceSpec, ...]
    links: tuple[LinkSpec, ...]
    broker: BrokerSpec | None = None

    def __post_init__(self) -> None:
        check_name("name", self.name)
        if self.shape not in SHAPES:
            raise TopologyError("shape", f"unknown shape {self.shape!r}",
                                "use 'sync' or 'async'")
        if not self.services:
            raise TopologyError("services", "no services", "add at least one service")
        names = [s.name for s in self.services]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise TopologyError("services", f"duplicate names {duplicates}",
                                "give every service its own name")
        if self.entry not in names:
            raise TopologyError("entry", f"{self.entry!r} is not a service",
                                f"use one of {names}")
        self._check_shape()
        self._check_links(set(names))
        self._check_broker()

    def _check_links(self, names: set[str]) -> None:
        seen = set()
        for link in self.links:
            if link.source not in names:
                raise TopologyError(f"links[{link.name}].source",
                                    f"{link.source!r} is not a service",
                                    f"use one of {sorted(names)}")
            if link.protocol == "http" and link.target not in names:
                raise TopologyError(f"links[{link.name}].target",
                                    f"{link.target!r} is not a service",
                                    f"use one of {sorted(names)}")
            if link.source == link.target:
                raise TopologyError(f"links[{link.name}]", "a service cannot call itself",
                                    "point the link at another service")
            if link.name in seen:
                raise TopologyError(f"links[{link.name}]", "duplicate link",
                                    "declare each link once")
            seen.add(link.name)
        for service in self.services:
            calls = [lk for lk in self.links if lk.source == service.name
                     and lk.protocol == "http"]
            if len(calls) > 1:
                raise TopologyError(f"links[{service.name}-*]",
                                    "a service calls more than one downstream",
                                    "chain the services: one http downstream per service")
            if service.role != "http_stage" and calls:
                raise TopologyError(f"links[{calls[0].name}]",
                                    f"{service.role} {service.name!r} cannot make http calls",
                                    "only http_stage services call downstream over http")
        self._check_acyclic()

    def _check_acyclic(self) -> None:
        for service in self.services:
            seen = {service.name}
            current = self.downstream(service.name)
            while current is not None:
                if current.target in seen:
                    raise TopologyError(f"links[{current.name}]", "the http links form a cycle",
                                        "make the call graph a chain without loops")
                seen.add(current.target)
                current = self.downstream(current.target)

    def _check_shape(self) -> None:
        async_services = [s.name for s in self.services if s.role != "http_stage"]
        if self.shape == "sync" and async_services:
            raise TopologyError("shape", f"a sync topology has async services {async_services}",
                                "make the shape 'async', or the services http_stage")
        if self.shape == "async" and not async_services:
            raise TopologyError("shape", "an async topology has no async service",
                                "make the shape 'sync', or add an async_gateway")

    def _check_broker(self) -> None:
        async_services = [s for s in self.services if s.role != "http_stage"]
        if async_services and self.broker is None:
            raise TopologyError("broker", "async services need a broker",
                                "add broker=BrokerSpec()")
        to_broker = [lk for lk in self.links if lk.protocol != "http"]
        if to_broker and self.broker is None:
            raise TopologyError(f"links[{to_broker[0].name}]",
                                f"an {to_broker[0].protocol} link, but no broker",
                                "add broker=BrokerSpec(), or remove the link")
        if self.broker is None:
            return
        protocol = self.broker.protocol
        for link in to_broker:
            if link.protocol != protocol:
                raise TopologyError(f"links[{link.name}].protocol",
                                    f"the broker is {self.broker.kind}, which does not speak "
                                    f"{link.protocol}", f"set protocol = {protocol!r}")
        for service in async_services:
            if self.amqp_link(service.name) is None:
                raise TopologyError(f"links[{service.name}-{BROKER}]",
                                    f"async service {service.name!r} has no {protocol} link",
                                    f"add LinkSpec({service.name!r}, {BROKER!r}, "
                                    f"{protocol!r})")
        if self.broker.kind == "kafka":
            self._check_kafka_knobs(async_services)
            own = [s.name for s in async_services if s.own is not None]
            if own:
                raise TopologyError(f"services[{own[0]}].own", "your own consumers speak "
                                    "AMQP, and the broker is kafka",
                                    "put your own consumer on RabbitMQ (the default "
                                    "broker), or use the testbed's consumer on Kafka")
        published = {s.publishes for s in self.services if s.publishes}
        for service in self.services:
            if service.consumes and service.consumes not in published:
                raise TopologyError(f"services[{service.name}].consumes",
                                    f"nothing publishes {service.consumes!r}",
                                    f"consume one of {sorted(published)}")
        self._check_event_loops()

    def _check_kafka_knobs(self, services: list[ServiceSpec]) -> None:
        for service in services:
            for knob, default in RABBITMQ_ONLY_KNOBS.items():
                if getattr(service.knobs, knob) != default:
                    raise TopologyError(
                        f"services[{service.name}].knobs.{knob}",
                        "a RabbitMQ setting, and the broker is kafka",
                        "leave it out; on Kafka a failed message is retried in place "
                        "(blocking its partition) or, with consumer_retries and "
                        "dead_letter, through <service>.retry and <service>.dlq topics")

    def _check_event_loops(self) -> None:
        """Consumers that, event by event, republish what they consume would pass every
        message around forever."""
        emits = {s.consumes: s for s in self.services if s.consumes and s.publishes}
        for start, service in emits.items():
            seen, event = {start}, service.publishes
            while event in emits:
                if event in seen:
                    raise TopologyError(f"services[{service.name}].publishes",
                                        f"the events loop back to {event!r}: messages would "
                                        "circulate forever",
                                        "end the pipeline with a consumer that publishes "
                                        "nothing new")
                seen.add(event)
                event = emits[event].publishes

    # -- queries ---------------------------------------------------------------------

    def service(self, name: str) -> ServiceSpec:
        for spec in self.services:
            if spec.name == name:
                return spec
        raise KeyError(f"no service {name!r} in topology {self.name!r}")

    def downstream(self, name: str) -> LinkSpec | None:
        """The http link a service calls, if any."""
        for link in self.links:
            if link.source == name and link.protocol == "http":
                return link
        return None

    def amqp_link(self, name: str) -> LinkSpec | None:
        """A service's link to the broker (amqp for RabbitMQ, kafka for Kafka)."""
        for link in self.links:
            if link.source == name and link.protocol != "http":
                return link
        return None

    @property
    def needs_broker(self) -> bool:
        return self.broker is not None

    @property
    def on_kafka(self) -> bool:
        return self.broker is not None and self.broker.kind == "kafka"

    @property
    def own_services(self) -> tuple[ServiceSpec, ...]:
        return tuple(s for s in self.services if s.own is not None)

    @property
    def proxied_links(self) -> tuple[LinkSpec, ...]:
        return tuple(link for link in self.links if link.proxied)


def knobs_from_dict(data: dict[str, object], path: str = "knobs") -> Knobs:
    known = {f.name for f in fields(Knobs)}
    unknown = sorted(set(data) - known, key=str)
    if unknown:
        raise TopologyError(f"{path}.{unknown[0]}", "unknown knob",
                            f"use one of {sorted(known)}")
    try:
        return Knobs(**data)  # type: ignore[arg-type]
    except TopologyError as exc:  # name the service: services[2].knobs.pool_size
        if path == "knobs":
            raise
        raise TopologyError(path + exc.field.removeprefix("knobs"), exc.problem,
                            exc.fix) from None
