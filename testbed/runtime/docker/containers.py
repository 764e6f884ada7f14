"""Containers as the runtime layer sees them: services, the broker, Toxiproxy, and the
helpers that wait for them and show their logs when they fail."""

from __future__ import annotations

import contextlib
import io
import tarfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container

from testbed.components.rabbitmq import BrokerAddress, RabbitAdmin
from testbed.components.readiness import http_ok
from testbed.components.toxiproxy import ProxyInfo, ToxiproxyClient
from testbed.errors import BrokerError, ComponentError, StartupError
from testbed.images.build import BROKER_SBIN

LABEL_RUN = "testbed.run"
LABEL_CONTROLLER = "testbed.controller"  # "<pid>:<process start time>"
LABEL_DEPLOYMENT = "testbed.deployment"
LABEL_ROLE = "testbed.role"  # service | toxiproxy | broker | kafka | network
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
PARALLEL_CALLS = 8  # engine calls in flight at once for one deployment


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


class ContainerSet:
    """A deployment's containers, removed together and in parallel: one forced removal
    takes ~0.3 s, so a paired topology's eleven one after another took ~3 s."""

    def __init__(self) -> None:
        self._containers: list[Container] = []
        self._lock = threading.Lock()

    def add(self, container: Container) -> None:
        with self._lock:  # containers are created from several threads
            self._containers.append(container)

    def remove_all(self) -> None:
        with self._lock:
            containers, self._containers = self._containers, []
        remove_containers(containers)


def remove_containers(containers: list[Container]) -> list[str]:
    """Force-remove containers (and their anonymous volumes) in parallel; returns the
    names of those removed (one already gone is not an error)."""
    def remove(container: Container) -> str | None:
        try:
            container.remove(force=True, v=True)
        except docker.errors.NotFound:
            return None
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: another sweeper is removing it right now
                raise
            return None
        return str(container.name)

    with ThreadPoolExecutor(max_workers=PARALLEL_CALLS) as pool:
        futures = [pool.submit(remove, c) for c in containers]
        return [name for name in (f.result() for f in futures) if name]


def tar_one(path: str, data: bytes) -> bytes:
    return tar_files({path: data})


def tar_files(files: dict[str, bytes]) -> bytes:
    """A tar archive of files (absolute path -> content), for ``put_archive("/", ...)``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path, data in files.items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size = len(data)
            info.mode = 0o644
            info.mtime = int(time.time())
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def docker_call(what: str, fn: Callable[[], Any]) -> Any:
    """Run an SDK call, turning the engine's refusal into our error with the reason."""
    try:
        return fn()
    except docker.errors.DockerException as exc:
        raise ComponentError(f"docker engine refused {what}: {exc}") from exc


class DockerService:
    """A service running in a container; implements the ServiceHandle protocol."""

    def __init__(self, name: str, container: Container, port: int,
                 health: str = "/health") -> None:
        self.name = name
        self.container = container
        self.port = port  # published on 127.0.0.1
        self.health = health  # an own service's may be another path

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
        docker_call(f"start of {self.container.name}", self.container.start)
        self.wait_ready()

    def wait_ready(self, timeout: float = SERVICE_READY_TIMEOUT_S) -> float:
        return wait_ready(self.container, lambda: http_ok(self.url + self.health),
                          f"service {self.name}", timeout)

    def _wait_down(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self) -> None:
        docker_call(f"stop of {self.container.name}", lambda: self.container.stop(timeout=3))
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
        docker_call(f"pause of {self.container.name}", self.container.pause)

    def resume(self) -> None:
        docker_call(f"unpause of {self.container.name}", self.container.unpause)

    # Container-only knobs (the partition and resource faults build on these).

    def disconnect(self, network: str) -> None:
        """Cut the container off its deployment network (a partition)."""
        docker_call(f"network disconnect of {self.container.name}",
                     lambda: self.container.client.networks.get(network)
                     .disconnect(self.container))

    def connect(self, network: str) -> None:
        docker_call(f"network connect of {self.container.name}",
                     lambda: self.container.client.networks.get(network)
                     .connect(self.container, aliases=[self.name]))

    def partition(self) -> list[str]:
        """Cut the container off every network it is on; returns them, for heal()."""
        self.container.reload()
        networks = list(self.container.attrs["NetworkSettings"]["Networks"])
        for network in networks:
            self.disconnect(network)
        self._partitioned = networks
        return networks

    def heal(self) -> None:
        """Reconnect what partition() cut (under the service's name as alias)."""
        for network in getattr(self, "_partitioned", []):
            self.connect(network)
        self._partitioned = []

    def set_limits(self, cpus: float | None = None, memory_mb: int | None = None) -> None:
        """CPU and memory limits on the running container."""
        kwargs: dict[str, Any] = {}
        if cpus is not None:
            kwargs["cpu_period"] = 100_000
            kwargs["cpu_quota"] = int(cpus * 100_000)
        if memory_mb is not None:
            kwargs["mem_limit"] = f"{memory_mb}m"
            kwargs["memswap_limit"] = f"{memory_mb}m"
        docker_call(f"update of {self.container.name}",
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
            docker_call("broker stop", lambda: self.container.stop(timeout=30))
        else:
            with contextlib.suppress(docker.errors.APIError):
                self.container.kill()
        deadline = time.monotonic() + 30
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.05)

    def start(self, timeout: float = 60.0) -> float:
        docker_call("broker start", self.container.start)
        return self.wait_ready(max(timeout, 1.0))

    def ctl(self, *args: str) -> str:
        """rabbitmqctl inside the container (root, with the broker's HOME and cookie)."""
        result = docker_call(f"rabbitmqctl {' '.join(args)}", lambda: self.container.exec_run(
            [f"{BROKER_SBIN}/rabbitmqctl", *args]))
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
