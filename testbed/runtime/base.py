"""The runtime protocol, and the Deployment handle every runtime returns.

A runtime turns a Topology into running things and back. Layers above see only
``Runtime.deploy() -> Deployment`` and the ServiceHandle protocol, so a new backend
(docker, later Kubernetes) slots in without touching them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import requests

from testbed.components.rabbitmq import BrokerAddress, QueueState, RabbitAdmin
from testbed.components.toxiproxy import ToxiproxyClient
from testbed.errors import StateError
from testbed.topology.model import LinkSpec, Topology

if TYPE_CHECKING:
    from testbed.runtime.kafka_access import KafkaAccess

LEDGER_TIMEOUT_S = 60.0  # a ledger read after a trial waits behind queued abandoned orders


@runtime_checkable
class ServiceHandle(Protocol):
    """One running service, with the process-level controls faults need."""

    name: str

    @property
    def url(self) -> str: ...
    def running(self) -> bool: ...
    def start(self) -> None: ...  # start again after stop/kill, and wait until ready
    def stop(self) -> None: ...  # graceful
    def kill(self) -> None: ...  # abrupt, like a crash
    def restart(self) -> None: ...
    def pause(self) -> None: ...  # freeze (SIGSTOP / docker pause)
    def resume(self) -> None: ...


@dataclass(frozen=True)
class ProxyEndpoint:
    """The Toxiproxy proxy in front of one link."""

    link: LinkSpec
    proxy_name: str  # name on the Toxiproxy server (prefixed with the deployment id)
    listen_port: int
    upstream: str


class BrokerControl(Protocol):
    """What broker faults need from the broker, whatever runs it (process, container)."""

    def running(self) -> bool: ...
    def halt(self, graceful: bool = True) -> None: ...  # down, data kept
    def start(self, timeout: float = 60.0) -> float: ...  # back up, as it was
    def set_memory_high_watermark(self, fraction: float) -> None: ...
    def memory_alarm(self) -> bool: ...


def dead_letter_exchange(exchange: str) -> str:
    return f"{exchange}.dlx"


def dead_letter_queue(queue: str) -> str:
    """Where a consumer queue's dead letters go (routed by the queue's name)."""
    return f"{queue}.dlq"


def retry_queue(queue: str) -> str:
    """Where a consumer puts a failed message to wait before its next attempt."""
    return f"{queue}.retry"


@dataclass(frozen=True)
class BrokerAccess:
    """A deployment's slice of the broker: its vhost, exchange and queues, and the broker's
    controls (shared by every deployment of the run: taking it down hits them all)."""

    address: BrokerAddress
    vhost: str
    exchange: str
    queues: tuple[str, ...]
    admin: RabbitAdmin
    control: BrokerControl

    def queue_state(self, queue: str) -> QueueState:
        return self.admin.queue(self.vhost, queue)


class Deployment:
    """A topology brought up by a runtime: endpoints, handles, and teardown."""

    def __init__(self, deployment_id: str, topology: Topology, runtime: str,
                 services: dict[str, ServiceHandle], proxies: dict[str, ProxyEndpoint],
                 broker: BrokerAccess | None, toxiproxy: ToxiproxyClient | None,
                 teardown: Callable[[], None], kafka: KafkaAccess | None = None,
                 traces_url: str | None = None) -> None:
        self.id = deployment_id
        self.topology = topology
        self.runtime = runtime
        self.services = services
        self.proxies = proxies
        self.broker = broker  # RabbitMQ
        self.kafka = kafka  # or Kafka (an async topology has one of the two)
        self.traces_url = traces_url  # traced: the query API of the Jaeger it exports to
        self.toxiproxy = toxiproxy
        self._teardown = teardown
        self.closed = False
        self._http = requests.Session()

    # -- endpoints -------------------------------------------------------------------

    def service(self, name: str) -> ServiceHandle:
        try:
            return self.services[name]
        except KeyError:
            raise KeyError(f"no service {name!r} in {self.id}; "
                           f"known: {sorted(self.services)}") from None

    def url(self, name: str) -> str:
        return self.service(name).url

    @property
    def entry_url(self) -> str:
        return self.url(self.topology.entry)

    def endpoints(self) -> dict[str, str]:
        return {name: handle.url for name, handle in self.services.items()}

    # -- convenience for demos and tests -----------------------------------------------

    def place_order(self, order_id: str | None = None, timeout: float = 10.0) -> requests.Response:
        """Send one order to the entry service, as a user would."""
        self._require_open()
        order = {"order_id": order_id or uuid.uuid4().hex}
        return self._http.post(f"{self.entry_url}/orders", json=order, timeout=timeout)

    def ledger(self, name: str) -> dict[str, int]:
        """Order id -> times processed, as the service itself reports it. Read after a
        trial, the request waits its turn behind whatever the service still has queued
        (a sync stage serves the orders of users who gave up, too): a long timeout."""
        return dict(self._get(name, "/ledger", timeout_s=LEDGER_TIMEOUT_S)["processed"])

    def ledgers(self) -> dict[str, dict[str, int]]:
        """Every ledger there is: an own service without one is left out (unaudited)."""
        return {name: self.ledger(name) for name in self.services if name not in
                self.unaudited}

    @property
    def unaudited(self) -> tuple[str, ...]:
        """The services whose ledger cannot be audited: own services that offer no
        /ledger, and services whose ledger restarted empty (on k8s a killed or stopped
        own image comes back as a new pod, with a new filesystem): only the edge sees
        their orders."""
        own = [s.name for s in self.topology.own_services
               if s.own is not None and not s.own.ledger]
        return tuple(own + self.ledger_resets)

    @property
    def ledger_resets(self) -> list[str]:
        """Services whose handle says their ledger started over (``ledger_reset``)."""
        return [name for name, handle in self.services.items()
                if getattr(handle, "ledger_reset", False)]

    @property
    def instrumented(self) -> tuple[str, ...]:
        """The testbed's own services: they serve /stats and the /admin fault routes."""
        return tuple(s.name for s in self.topology.services if s.own is None)

    def stats(self, name: str) -> dict[str, Any]:
        return self._get(name, "/stats")

    def _get(self, name: str, path: str, timeout_s: float = 5.0) -> dict[str, Any]:
        self._require_open()
        response = self._http.get(self.url(name) + path, timeout=timeout_s)
        response.raise_for_status()
        return dict(response.json())

    def _require_open(self) -> None:
        if self.closed:
            raise StateError(f"deployment {self.id} is closed")

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Tear the deployment down; safe to call twice."""
        if self.closed:
            return
        self.closed = True
        self._http.close()
        self._teardown()

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


@runtime_checkable
class Runtime(Protocol):
    """A backend that runs topologies: ``local`` processes, ``docker`` containers, ..."""

    name: str
    run_id: str

    def open(self) -> None: ...
    def deploy(self, topology: Topology) -> Deployment: ...
    def close(self) -> None: ...
    def __enter__(self) -> Runtime: ...
    def __exit__(self, *exc: object) -> None: ...
