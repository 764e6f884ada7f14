"""The ``docker`` runtime: every service, the broker and Toxiproxy in containers.

Layout of one run (one DockerRuntime):
- one broker container per run, on a network of its own and attached (alias ``broker``)
  to every async deployment's network. Per run, not per deployment, for the same reason
  as the local runtime: broker faults hit every deployment of a run, and the paired
  experiments rely on the sync side not noticing while the async side does; it also saves
  the ~10 s broker boot per deployment. Deployments are isolated by vhost, as locally.
- per deployment: a private bridge network, one container per service (alias = the
  service's name, listening on 0.0.0.0:8080 inside), and one Toxiproxy container (alias
  ``toxiproxy``). Toxiproxy is per deployment, not per run, because a container's
  published ports are fixed when it is created and a deployment's proxies are only known
  when it is deployed; its listen ports inside equal the published ports on the host,
  so one number names a proxy everywhere.
- on the host, every published port binds 127.0.0.1 only: services' HTTP ports, the
  broker's AMQP and management ports, Toxiproxy's API and every proxy's listen port, so
  probes, samplers and the load generator work from the host as with the local runtime.

Every container and network carries the labels ``testbed.run`` and ``testbed.controller``
(pid and start time of the controlling process), so :func:`collect_docker_garbage` can
tell an orphan from a live run without any state file. A watchdog process (like the
local runtime's) removes the run's objects when the controller dies, even by SIGKILL.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import psutil
from docker.models.containers import Container
from docker.models.networks import Network

from testbed.components.docker_engine import engine
from testbed.components.rabbitmq import BrokerAddress, RabbitAdmin
from testbed.components.readiness import http_ok
from testbed.components.toxiproxy import ProxyInfo, ToxiproxyClient
from testbed.errors import BrokerError, ComponentError, StartupError, StateError, TestbedError
from testbed.ports import allocate_port, claim_fixed_port, release_ports
from testbed.runs import RUN_ID_ENV, RunRecord, create_run, new_run_id, remove_run_dir
from testbed.runtime.base import (
    BrokerAccess,
    Deployment,
    ProxyEndpoint,
    dead_letter_exchange,
    dead_letter_queue,
    retry_queue,
)
from testbed.runtime.local import Undo
from testbed.services.config import AmqpTarget, ServiceConfig
from testbed.topology.model import Topology

LABEL_RUN = "testbed.run"
LABEL_CONTROLLER = "testbed.controller"  # "<pid>:<process start time>"
LABEL_DEPLOYMENT = "testbed.deployment"
LABEL_ROLE = "testbed.role"  # service | toxiproxy | broker
LABEL_SERVICE = "testbed.service"
SERVICE_PORT = 8080  # inside a service container
TOXIPROXY_API_PORT = 8474
AMQP_PORT = 5672
MANAGEMENT_PORT = 15672
SERVICE_CONFIG_PATH = "/etc/testbed/service.json"
LEDGER_DIR = "/var/lib/testbed"
SERVICE_READY_TIMEOUT_S = 30.0
BROKER_READY_TIMEOUT_S = 90.0
TOXIPROXY_READY_TIMEOUT_S = 15.0
LOG_TAIL_LINES = 30


# -- container helpers -----------------------------------------------------------------

def log_tail(container: Container, lines: int = LOG_TAIL_LINES) -> str:
    """The container's last log lines (what a readiness error shows)."""
    try:
        return bytes(container.logs(tail=lines)).decode(errors="replace").rstrip()
    except docker.errors.DockerException as exc:
        return f"(logs unavailable: {exc})"


def container_state(container: Container) -> str:
    """created | running | paused | restarting | exited | dead | removed."""
    try:
        container.reload()
    except docker.errors.NotFound:
        return "removed"
    return str(container.attrs.get("State", {}).get("Status", container.status))


def wait_ready(container: Container, check: Callable[[], bool], what: str,
               timeout: float) -> float:
    """Poll ``check`` until it passes; fail at once when the container exits, and with
    its last log lines either way."""
    started = time.monotonic()
    deadline = started + timeout
    next_state_check = started
    while True:
        try:
            if check():
                return time.monotonic() - started
        except Exception:
            pass
        now = time.monotonic()
        if now >= next_state_check:
            state = container_state(container)
            if state not in ("running", "created", "restarting"):
                exit_code = container.attrs.get("State", {}).get("ExitCode")
                raise StartupError(what, f"its container {container.name} is {state} "
                                   f"(exit code {exit_code})", log_tail(container))
            next_state_check = now + 0.5
        if now >= deadline:
            raise StartupError(what, f"no answer within {timeout:.0f} s from container "
                               f"{container.name}", log_tail(container))
        time.sleep(0.05)


def _tar_one(path: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo(path.lstrip("/"))
        info.size = len(data)
        info.mode = 0o644
        info.mtime = int(time.time())
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _docker_call(what: str, fn: Callable[[], Any]) -> Any:
    """Run an SDK call, turning the engine's refusal into our error with the reason."""
    try:
        return fn()
    except docker.errors.DockerException as exc:
        raise ComponentError(f"docker engine refused {what}: {exc}") from exc


class DockerService:
    """A service running in a container; implements the ServiceHandle protocol."""

    def __init__(self, name: str, container: Container, port: int) -> None:
        self.name = name
        self.container = container
        self.port = port  # published on 127.0.0.1

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def state(self) -> str:
        return container_state(self.container)

    def running(self) -> bool:
        """True while the process exists (a paused one too, as with a SIGSTOPped process)."""
        return self.state() in ("running", "paused")

    def start(self) -> None:
        if self.state() == "paused":
            self.resume()
        _docker_call(f"start of {self.container.name}", self.container.start)
        self.wait_ready()

    def wait_ready(self, timeout: float = SERVICE_READY_TIMEOUT_S) -> float:
        return wait_ready(self.container, lambda: http_ok(f"{self.url}/health"),
                          f"service {self.name}", timeout)

    def _wait_down(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self) -> None:
        _docker_call(f"stop of {self.container.name}", lambda: self.container.stop(timeout=3))
        self._wait_down()

    def kill(self) -> None:
        """SIGKILL, like a crash (the container keeps its files: the ledger survives)."""
        with contextlib.suppress(docker.errors.APIError):  # already dead: nothing to kill
            self.container.kill()
        self._wait_down()

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        _docker_call(f"pause of {self.container.name}", self.container.pause)

    def resume(self) -> None:
        _docker_call(f"unpause of {self.container.name}", self.container.unpause)

    # Container-only knobs (the partition and resource faults build on these).

    def disconnect(self, network: str) -> None:
        """Cut the container off its deployment network (a partition)."""
        _docker_call(f"network disconnect of {self.container.name}",
                     lambda: self.container.client.networks.get(network)
                     .disconnect(self.container))

    def connect(self, network: str) -> None:
        _docker_call(f"network connect of {self.container.name}",
                     lambda: self.container.client.networks.get(network)
                     .connect(self.container, aliases=[self.name]))

    def set_limits(self, cpus: float | None = None, memory_mb: int | None = None) -> None:
        """CPU and memory limits on the running container."""
        kwargs: dict[str, Any] = {}
        if cpus is not None:
            kwargs["cpu_period"] = 100_000
            kwargs["cpu_quota"] = int(cpus * 100_000)
        if memory_mb is not None:
            kwargs["mem_limit"] = f"{memory_mb}m"
            kwargs["memswap_limit"] = f"{memory_mb}m"
        _docker_call(f"update of {self.container.name}",
                     lambda: self.container.update(**kwargs))


class ContainerBroker:
    """The run's RabbitMQ container; implements BrokerControl."""

    def __init__(self, container: Container, address: BrokerAddress) -> None:
        self.container = container
        self.address = address
        self.admin = RabbitAdmin(address)

    def running(self) -> bool:
        return container_state(self.container) in ("running", "paused")

    def wait_ready(self, timeout: float = BROKER_READY_TIMEOUT_S) -> float:
        return wait_ready(self.container, lambda: bool(
            self.admin.overview().get("rabbitmq_version")), "RabbitMQ container", timeout)

    def halt(self, graceful: bool = True) -> None:
        """Down with its data kept (the container's filesystem stays), like a node stop."""
        if graceful:
            _docker_call("broker stop", lambda: self.container.stop(timeout=30))
        else:
            with contextlib.suppress(docker.errors.APIError):
                self.container.kill()
        deadline = time.monotonic() + 30
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.05)

    def start(self, timeout: float = 60.0) -> float:
        _docker_call("broker start", self.container.start)
        return self.wait_ready(max(timeout, 1.0))

    def ctl(self, *args: str) -> str:
        """rabbitmqctl inside the container (root, with the broker's HOME and cookie)."""
        result = _docker_call(f"rabbitmqctl {' '.join(args)}", lambda: self.container.exec_run(
            ["/usr/lib/rabbitmq/bin/rabbitmqctl", *args]))
        output = bytes(result.output or b"").decode(errors="replace")
        if result.exit_code != 0:
            raise BrokerError(f"rabbitmqctl {' '.join(args)} exited {result.exit_code} in "
                              f"{self.container.name}: {output.strip()[-500:]}")
        return output

    def set_memory_high_watermark(self, fraction: float) -> None:
        self.ctl("set_vm_memory_high_watermark", f"{fraction:.10f}")

    def memory_alarm(self) -> bool:
        return any(node.get("mem_alarm") for node in self.admin.nodes())


class DockerToxiproxyClient(ToxiproxyClient):
    """Proxies listen on every interface of the Toxiproxy container: other containers and
    the port published on the host's 127.0.0.1 reach them there."""

    def create_proxy(self, name: str, listen_port: int, upstream: str) -> ProxyInfo:
        import toxiproxy

        proxy = self._call(f"create proxy {name}", lambda: toxiproxy.Toxiproxy().create(
            upstream=upstream, name=name, listen=f"0.0.0.0:{listen_port}"))
        return ProxyInfo(proxy.name, proxy.listen, proxy.upstream, bool(proxy.enabled))


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


class DockerRuntime:
    """Runs topologies as containers on private bridge networks, with real Toxiproxy and
    RabbitMQ containers; images come from ``testbed images build`` (built when missing)."""

    name = "docker"

    def __init__(self, run_id: str | None = None, build_missing_images: bool = True) -> None:
        self.run_id = run_id or new_run_id()
        self.state = "new"
        self.run_dir: Path | None = None
        self.timings: dict[str, float] = {}
        self.build_missing_images = build_missing_images
        self._client: docker.DockerClient | None = None
        self._images: dict[str, str] = {}
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._broker: ContainerBroker | None = None
        self._broker_network: Network | None = None
        self._deployments: list[Deployment] = []
        self._lock = threading.Lock()
        self._broker_lock = threading.Lock()
        self._counter = 0
        self._controller = controller_label()

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            raise StateError(f"runtime {self.run_id} is {self.state}; open it first")
        return self._client

    def open(self) -> None:
        if self.state != "new":
            raise StateError(f"runtime {self.run_id} cannot be opened: it is {self.state}")
        client = engine()
        if self.build_missing_images:
            from testbed.images import image_refs

            started = time.monotonic()
            self._images = image_refs(client)
            self.timings["images_s"] = time.monotonic() - started
        else:
            from testbed.images import recipes
            from testbed.images.build import current

            missing = [r.ref for r in recipes().values() if current(client, r) is None]
            if missing:
                raise ComponentError(f"images missing: {', '.join(missing)}. Fix: run "
                                     "`testbed images build`")
            self._images = {kind: r.ref for kind, r in recipes().items()}
        self._client = client
        self.run_dir = create_run(self.run_id, self.name)
        (self.run_dir / "logs").mkdir()
        self._watchdog = spawn_watchdog(self.run_id, self.run_dir / "logs" / "watchdog.log")
        self.state = "open"

    def __enter__(self) -> DockerRuntime:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove every deployment, the broker and the run's networks; delete its files."""
        if self.state in ("new", "closed"):
            self.state = "closed"
            return
        self.state = "closing"
        problems = []
        for deployment in list(self._deployments):
            try:
                deployment.close()
            except Exception as exc:
                problems.append(f"deployment {deployment.id}: {exc}")
        if self._broker is not None:
            self._broker.admin.close()
        # Whatever is still labelled with the run (the broker, anything a failure left).
        try:
            remove_run_objects(self.client, self.run_id)
        except Exception as exc:
            problems.append(f"removing containers/networks: {exc}")
        release_ports(self.run_id)
        remove_run_dir(self.run_id)
        if self._watchdog is not None:
            with contextlib.suppress(OSError):
                self._watchdog.stdin.close()  # type: ignore[union-attr]
            try:
                self._watchdog.wait(15)
            except subprocess.TimeoutExpired:
                self._watchdog.kill()
        self.client.close()
        self.state = "closed"
        if problems:
            raise TestbedError("teardown had problems: " + "; ".join(problems))

    def _require_open(self) -> None:
        if self.state != "open":
            raise StateError(f"runtime {self.run_id} is {self.state}; use it inside "
                             "`with DockerRuntime() as runtime:` or call open() first")

    def labels(self, role: str, deployment: str | None = None,
               service: str | None = None) -> dict[str, str]:
        labels = {LABEL_RUN: self.run_id, LABEL_CONTROLLER: self._controller, LABEL_ROLE: role}
        if deployment:
            labels[LABEL_DEPLOYMENT] = deployment
        if service:
            labels[LABEL_SERVICE] = service
        return labels

    # -- the run's broker ------------------------------------------------------------------

    def broker(self) -> ContainerBroker:
        """The run's RabbitMQ container, started on first use (about 10 s)."""
        self._require_open()
        with self._broker_lock:
            if self._broker is None:
                self._broker = self._start_broker()
            return self._broker

    def _start_broker(self) -> ContainerBroker:
        client = self.client
        network_name = f"tb-{self.run_id}-broker"
        self._broker_network = _docker_call(f"create network {network_name}", lambda: (
            client.networks.create(network_name, driver="bridge",
                                   labels=self.labels("network"))))
        amqp, management = allocate_port(self.run_id), allocate_port(self.run_id)
        address = BrokerAddress("127.0.0.1", amqp, management, f"testbed-{self.run_id}",
                                secrets.token_urlsafe(16))
        container = _docker_call("create the broker container", lambda: client.containers.run(
            self._images["rabbitmq"], name=f"tb-{self.run_id}-broker", hostname="broker",
            detach=True, init=True, labels=self.labels("broker"), network=network_name,
            environment={"TESTBED_BROKER_USER": address.user,
                         "TESTBED_BROKER_PASSWORD": address.password},
            ports={f"{AMQP_PORT}/tcp": ("127.0.0.1", amqp),
                   f"{MANAGEMENT_PORT}/tcp": ("127.0.0.1", management)}))
        broker = ContainerBroker(container, address)
        self.timings["broker_boot_s"] = broker.wait_ready()
        return broker

    # -- deploy ----------------------------------------------------------------------------

    def deploy(self, topology: Topology) -> Deployment:
        """Bring a topology up and return its handle; on failure nothing of it is left."""
        self._require_open()
        with self._lock:
            self._counter += 1
            deployment_id = f"{topology.name}{self._counter}"
        undo = Undo()
        try:
            deployment = self._deploy(topology, deployment_id, undo)
        except BaseException as exc:
            failures = undo.run()
            if failures:
                exc.add_note("cleanup after the failed deploy also failed: "
                             + "; ".join(failures))
            raise
        self._deployments.append(deployment)
        return deployment

    def _deploy(self, topology: Topology, deployment_id: str, undo: Undo) -> Deployment:
        started = time.monotonic()
        client = self.client
        prefix = f"tb-{self.run_id}-{deployment_id}"
        host_ports: dict[str, int] = {}
        for spec in topology.services:
            if spec.port is not None:
                host_ports[spec.name] = claim_fixed_port(
                    spec.port, self.run_id, f"service {topology.name}.{spec.name}")
        for spec in topology.services:
            host_ports.setdefault(spec.name, allocate_port(self.run_id))

        network = _docker_call(f"create network {prefix}", lambda: client.networks.create(
            prefix, driver="bridge", labels=self.labels("network", deployment_id)))
        undo.push(network.remove)

        access = self._setup_broker(topology, deployment_id, network, undo)

        toxiproxy: DockerToxiproxyClient | None = None
        proxies: dict[str, ProxyEndpoint] = {}
        proxy_ports = {link.name: allocate_port(self.run_id) for link in topology.proxied_links}
        if topology.proxied_links:
            toxiproxy = self._start_toxiproxy(prefix, deployment_id, network, proxy_ports,
                                              undo)
            for link in topology.proxied_links:
                upstream = proxy_upstream(topology, link.name)
                proxy_name = f"{self.run_id}.{deployment_id}.{link.name}"
                info = toxiproxy.create_proxy(proxy_name, proxy_ports[link.name], upstream)
                proxies[link.name] = ProxyEndpoint(link, proxy_name, info.port, upstream)

        services: dict[str, DockerService] = {}
        broker_creds = ((access.vhost, access.address.user, access.address.password)
                        if access else None)
        for spec in topology.services:
            config = service_config(topology, spec.name, proxy_ports, broker_creds)
            services[spec.name] = self._create_service(prefix, deployment_id, spec.name, config,
                                                       network, host_ports[spec.name], undo)
        for service in services.values():
            _docker_call(f"start of {service.container.name}", service.container.start)
        with ThreadPoolExecutor(max_workers=len(services)) as pool:
            for future in [pool.submit(s.wait_ready) for s in services.values()]:
                future.result()
        self.timings[f"deploy_{deployment_id}_s"] = time.monotonic() - started

        def teardown() -> None:
            failures = undo.run()
            if toxiproxy is not None:
                toxiproxy.close()
            self._deployments[:] = [d for d in self._deployments if d.id != deployment_id]
            if failures:
                raise TestbedError(f"teardown of {deployment_id} failed: {failures}")

        return Deployment(deployment_id, topology, self.name, dict(services), proxies, access,
                          toxiproxy, teardown)

    def _remover(self, container: Container) -> Callable[[], None]:
        def remove() -> None:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)
        return remove

    def _create_service(self, prefix: str, deployment_id: str, name: str,
                        config: ServiceConfig, network: Network, host_port: int,
                        undo: Undo) -> DockerService:
        client = self.client
        container = _docker_call(f"create container {prefix}-{name}", lambda: (
            client.containers.create(
                self._images["service"], name=f"{prefix}-{name}", hostname=name, init=True,
                labels=self.labels("service", deployment_id, name),
                network=network.name, networking_config=self._aliases(network, name),
                ports={f"{SERVICE_PORT}/tcp": ("127.0.0.1", host_port)},
                stop_signal="SIGTERM")))
        undo.push(self._remover(container))
        archive = _tar_one(SERVICE_CONFIG_PATH, config.to_json().encode())
        _docker_call(f"copy config into {container.name}",
                     lambda: container.put_archive("/", archive))
        return DockerService(name, container, host_port)

    def _aliases(self, network: Network, alias: str) -> dict[str, Any]:
        """Attach a container to the network under an alias (its peers' name for it)."""
        return {str(network.name): self.client.api.create_endpoint_config(aliases=[alias])}

    def _start_toxiproxy(self, prefix: str, deployment_id: str, network: Network,
                         proxy_ports: dict[str, int], undo: Undo) -> DockerToxiproxyClient:
        client = self.client
        api_port = allocate_port(self.run_id)
        ports: dict[str, Any] = {f"{TOXIPROXY_API_PORT}/tcp": ("127.0.0.1", api_port)}
        for port in proxy_ports.values():
            ports[f"{port}/tcp"] = ("127.0.0.1", port)
        container = _docker_call(f"create container {prefix}-toxiproxy", lambda: (
            client.containers.create(
                self._images["toxiproxy"], name=f"{prefix}-toxiproxy", hostname="toxiproxy",
                labels=self.labels("toxiproxy", deployment_id), network=network.name,
                networking_config=self._aliases(network, "toxiproxy"), ports=ports)))
        undo.push(self._remover(container))
        _docker_call(f"start of {container.name}", container.start)
        proxy = DockerToxiproxyClient("127.0.0.1", api_port)
        seconds = wait_ready(container, lambda: http_ok(f"{proxy.url}/version"),
                             f"toxiproxy of {deployment_id}", TOXIPROXY_READY_TIMEOUT_S)
        self.timings[f"toxiproxy_{deployment_id}_s"] = seconds
        return proxy

    def _setup_broker(self, topology: Topology, deployment_id: str, network: Network,
                      undo: Undo) -> BrokerAccess | None:
        if topology.broker is None:
            return None
        broker = self.broker()
        _docker_call("attach the broker to the deployment network",
                     lambda: network.connect(broker.container, aliases=["broker"]))

        def detach() -> None:
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                network.disconnect(broker.container, force=True)

        undo.push(detach)
        admin = broker.admin
        vhost = f"{self.run_id}.{deployment_id}"
        admin.create_vhost(vhost)
        undo.push(lambda: admin.delete_vhost(vhost) if broker.running() else None)
        exchanges, queues, bindings = broker_objects(topology)
        for name, kind in exchanges:
            admin.declare_exchange(vhost, name, kind=kind)
        for name, arguments in queues:
            admin.declare_queue(vhost, name, arguments)
        for exchange_name, queue, key in bindings:
            admin.bind(vhost, exchange_name, queue, key)
        exchange = topology.broker.exchange
        consumed = tuple(spec.name for spec in topology.services if spec.consumes)
        return BrokerAccess(broker.address, vhost, exchange, consumed, admin, broker)


# -- cleanup: the run's own teardown, its watchdog, and `testbed gc` ----------------------

def remove_run_objects(client: docker.DockerClient, run_id: str | None = None,
                       only: Callable[[dict[str, str]], bool] | None = None) -> list[str]:
    """Remove containers (with their anonymous volumes), networks and volumes labelled
    with ``run_id`` (any run when None) and accepted by ``only``; returns what it removed."""
    selector = f"{LABEL_RUN}={run_id}" if run_id else LABEL_RUN
    removed: list[str] = []
    for container in client.containers.list(all=True, filters={"label": selector}):
        if only is None or only(container.labels):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)
                removed.append(f"container {container.name}")
    for network in client.networks.list(filters={"label": selector}):
        if only is None or only(network.attrs.get("Labels") or {}):
            with contextlib.suppress(docker.errors.NotFound):
                network.reload()
                for attached in network.containers:  # e.g. a broker of a live run
                    with contextlib.suppress(docker.errors.APIError):
                        network.disconnect(attached, force=True)
                network.remove()
                removed.append(f"network {network.name}")
    for volume in client.volumes.list(filters={"label": selector}):
        if only is None or only(volume.attrs.get("Labels") or {}):
            with contextlib.suppress(docker.errors.NotFound):
                volume.remove(force=True)
                removed.append(f"volume {volume.name}")
    return removed


def collect_docker_garbage(client: docker.DockerClient | None = None) -> list[str]:
    """What ``testbed gc`` calls: remove every labelled container, network and volume whose
    run's controller is dead (judged by the ``testbed.controller`` label, the same pid +
    start-time test sweep.py applies to run records). No engine: nothing to collect."""
    if client is None:
        try:
            client = engine(5.0)
        except ComponentError:
            return []
    return remove_run_objects(client, None, lambda labels: not controller_alive(
        labels.get(LABEL_CONTROLLER, "")))


def spawn_watchdog(run_id: str, log_path: Path) -> subprocess.Popen[bytes]:
    """Start the run's watchdog (see testbed.runtime.watchdog): on the controller's death it
    removes the run's containers and networks, then sweeps its files and ports."""
    env = {k: v for k, v in os.environ.items() if k != RUN_ID_ENV}
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "testbed.runtime.docker", "watch", run_id],
            stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)


def _watch(run_id: str) -> int:
    from testbed.runtime.sweep import sweep_run
    from testbed.runtime.watchdog import wait_for_controller

    wait_for_controller(run_id)
    try:
        removed = remove_run_objects(engine(10.0), run_id)
    except ComponentError as exc:
        removed = [f"(engine unreachable: {exc})"]
    report = sweep_run(run_id)
    if removed or not report.empty():
        print(f"watchdog swept run {run_id}: {removed} {report}", flush=True)
    return 0


def main(argv: list[str]) -> int:
    """``python -m testbed.runtime.docker watch RUN_ID`` (the watchdog) or ``gc``."""
    if len(argv) == 2 and argv[0] == "watch":
        return _watch(argv[1])
    if argv == ["gc"]:
        for line in collect_docker_garbage():
            print(f"removed {line}")
        return 0
    print("usage: python -m testbed.runtime.docker watch RUN_ID | gc", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


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
            "init": True,
            "hostname": "broker",
            "environment": {"TESTBED_BROKER_USER": user, "TESTBED_BROKER_PASSWORD": password},
            "volumes": ["./config/broker/definitions.json:/etc/testbed/definitions.json:ro"],
            "networks": {t.name: {"aliases": ["broker"]} for t in async_topologies},
            "ports": [f"127.0.0.1:5672:{AMQP_PORT}", f"127.0.0.1:15672:{MANAGEMENT_PORT}"],
            "healthcheck": {"test": ["CMD", "/usr/lib/rabbitmq/bin/rabbitmq-diagnostics", "-q",
                                     "check_port_connectivity"],
                            "interval": "2s", "timeout": "10s", "retries": 60},
        }
    return {"name": "testbed-" + "-".join(t.name for t in topologies), "services": services,
            "networks": networks}, files


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
              "first: `testbed images build`.\n")
    for relative, text in {"compose.yaml": header + to_yaml(model) + "\n", **files}.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written
