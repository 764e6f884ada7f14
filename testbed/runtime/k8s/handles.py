"""A service, the run's RabbitMQ and a deployment's Kafka as pods: the ServiceHandle,
BrokerControl and KafkaControl the layers above use, each reached through its forward.

The kubelet never restarts a pod (restartPolicy Never): the testbed does, as a fault
wants. The testbed's own services and the brokers keep their files across a kill or a
stop, as a stopped container does: a crash (SIGKILL), a stop (SIGTERM) or a freeze
(SIGSTOP) signals the process under the pod's supervising loop (manifests.Supervised),
which starts it again on the word; RabbitMQ's broker_down is rabbitmqctl stop_app and
start_app. An own image's pod is deleted (kill: grace 0; stop: the 3 s grace of
``docker stop -t 3``) and created again from its manifest.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Sequence

from testbed.components.kafka import NODE_ID, KafkaAdmin
from testbed.components.rabbitmq import BrokerAddress, RabbitAdmin
from testbed.components.readiness import http_ok
from testbed.errors import BrokerError, ComponentError
from testbed.images.build import BROKER_SBIN
from testbed.runtime.docker.containers import (
    BROKER_READY_TIMEOUT_S,
    SERVICE_READY_TIMEOUT_S,
)
from testbed.runtime.docker.kafka import KAFKA_READY_TIMEOUT_S, KAFKA_STOP_TIMEOUT_S, kafka_answers
from testbed.runtime.k8s.forward import PortForward
from testbed.runtime.k8s.manifests import (
    GRACE_S,
    KAFKA,
    KILL_ALL,
    RABBITMQ,
    Manifest,
    Supervised,
)
from testbed.runtime.k8s.pods import Pods, wait_until

KILLED_TIMEOUT_S = 10.0
INBOUND_TIMEOUT_S = 5.0  # after a start: the callers' path to the new pod (kube-proxy)
PAUSE_REFUSED = ("pause of an own image's service is not available on the k8s runtime: "
                 "Kubernetes has no freeze for a pod, and the testbed freezes only its own "
                 "services' processes; use kill, stop or restart")


class PodService:
    """A service in a pod of its own; implements the ServiceHandle protocol.

    The testbed's own service runs under its pod's SERVICE loop (``loop``): kill, stop
    and pause signal the process, start resumes the loop, and the pod, its IP and its
    ledger stay, as a container's do under docker. An own image (it may have no shell)
    has no loop: its pod is replaced, its ledger starting empty (``ledger_reset``)."""

    def __init__(self, name: str, pods: Pods, manifest: Manifest, forward: PortForward,
                 port: int, health: str = "/health",
                 inbound: Sequence[Callable[[], bool]] = (),
                 loop: Supervised | None = None) -> None:
        self.name = name
        # Checks of the callers' path to it through their proxies: a new pod has a new IP,
        # and kube-proxy follows its Service's endpoints about a second later.
        self.inbound = list(inbound)
        self.pods = pods
        self.manifest = manifest
        self.pod = str(manifest["metadata"]["name"])
        self.forward = forward
        self.port = port  # the forward's local port on 127.0.0.1
        self.loop = loop
        # Set once the pod was removed (kill, stop, restart without a loop): the next
        # pod's ledger starts empty, so Deployment.unaudited names it and lost/duplicated
        # say so.
        self.ledger_reset = False
        self.health = health
        self._lock = threading.Lock()  # a crash loop and a fault's removal may overlap

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def running(self) -> bool:
        """While its pod runs and its process has not exited (a crash_at ends it; a
        frozen one runs, as a SIGSTOPped process exists)."""
        if not self.pods.state(self.pod).running:
            return False
        return self.loop is None or self._exec_ok(self.loop.alive())

    def _exec_ok(self, argv: list[str]) -> bool:
        try:
            code, _ = self.pods.exec(self.pod, argv, timeout=10.0)
        except ComponentError:
            return False  # the pod is gone
        return code == 0

    def create(self) -> None:
        """Create the pod (the deploy does this once; start() again after a stop)."""
        self.pods.create(self.manifest)

    def wait_ready(self, timeout: float = SERVICE_READY_TIMEOUT_S) -> float:
        """Pod ready, forwarded, and its health route answering through the forward."""
        started = time.monotonic()
        image = self.manifest["spec"]["containers"][0]["image"]
        self.pods.wait_ready(self.pod, f"service {self.name}", timeout, image)
        self.forward.start()
        wait_until(lambda: http_ok(self.url + self.health), f"service {self.name}",
                   max(1.0, timeout - (time.monotonic() - started)),
                   lambda: self.pods.log_tail(self.pod))
        return time.monotonic() - started

    def wait_reachable(self, timeout: float = INBOUND_TIMEOUT_S) -> bool:
        """Until its callers' proxies reach it (False when they do not within ``timeout``:
        a fault may be cutting them on purpose)."""
        deadline = time.monotonic() + timeout
        while not all(_passes(check) for check in self.inbound):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def start(self) -> None:
        """The process again under its loop; without one, a new pod from the stored
        manifest (an exited one is removed first)."""
        with self._lock:
            if self.running():
                return
            if self.loop is not None:
                self._signal("CONT")  # a frozen process that was killed meanwhile: none
                if not self._exec_ok(self.loop.resume()):
                    raise ComponentError(f"service {self.name}: its pod {self.pod} did not "
                                         "take the word to start again")
            else:
                self._remove(0)
                self.create()
            self.wait_ready()
            self.wait_reachable()

    def _remove(self, grace: int) -> None:
        self.ledger_reset = True  # the pod's filesystem, its ledger with it, goes too
        self.forward.stop()
        self.pods.delete(self.pod, grace)
        self.pods.wait_gone(self.pod)

    def _signal(self, sig: str) -> bool:
        assert self.loop is not None
        return self._exec_ok(self.loop.signal(sig))

    def _wait_exited(self, timeout: float) -> bool:
        assert self.loop is not None
        deadline = time.monotonic() + timeout
        while self._exec_ok(self.loop.alive()):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def stop(self) -> None:
        """Graceful: SIGTERM (the service is not PID 1: it ends at once, as under docker's
        init), SIGKILL after 3 s, as ``docker stop -t 3``; returns once it ended."""
        with self._lock:
            if self.loop is None:
                self._remove(GRACE_S)
                return
            self.forward.stop()
            self._signal("CONT")  # a frozen process takes no SIGTERM
            if self._signal("TERM") and not self._wait_exited(GRACE_S):
                self._signal("KILL")
                self._wait_exited(KILLED_TIMEOUT_S)

    def kill(self) -> None:
        """Abrupt, like a crash: SIGKILL to the service's process; returns once it is
        gone (without a loop: to every process of the pod, then the pod deleted with no
        grace: a deletion alone is no crash, the kubelet sends SIGTERM and waits)."""
        with self._lock:
            self.forward.stop()
            if self.loop is not None:
                if self._signal("KILL") and not self._wait_exited(KILLED_TIMEOUT_S):
                    raise ComponentError(f"service {self.name} still runs in pod {self.pod} "
                                         f"{KILLED_TIMEOUT_S:.0f} s after SIGKILL")
                return
            if self._exec_ok(KILL_ALL):
                deadline = time.monotonic() + KILLED_TIMEOUT_S
                while self.pods.state(self.pod).running and time.monotonic() < deadline:
                    time.sleep(0.02)
            self._remove(0)

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        """SIGSTOP to the service's process, as the local runtime freezes one: it keeps
        its connections and answers nothing."""
        self._freeze("STOP")

    def resume(self) -> None:
        self._freeze("CONT")

    def _freeze(self, sig: str) -> None:
        if self.loop is None:
            from testbed.faults.base import FaultSpecError

            raise FaultSpecError(PAUSE_REFUSED)
        if not self._signal(sig):
            raise ComponentError(f"kill -{sig} of service {self.name} in pod {self.pod} "
                                 "failed: its process has ended")


_GREETINGS = {"http": b"GET /health HTTP/1.0\r\n\r\n", "amqp": b"AMQP\x00\x00\x09\x01"}


def path_answers(port: int, protocol: str, timeout: float = 1.0,
                 host: str = "127.0.0.1") -> bool:
    """Does what is behind a proxy's port answer (Toxiproxy accepts and then closes a
    connection whose upstream refuses, so a connect alone proves nothing)? ``host``:
    another address than the forward's, for a diagnosis that goes round the proxy."""
    if protocol == "kafka":
        return kafka_answers(port, timeout)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(_GREETINGS[protocol])
            return bool(sock.recv(16))
    except OSError:
        return False


def _passes(check: Callable[[], bool]) -> bool:
    try:
        return check()
    except Exception:
        return False


class _SupervisedBroker:
    """A broker process under its pod's loop: signal it, see it gone, start it again."""

    loop: Supervised

    def __init__(self, pods: Pods, pod: str, forward: PortForward) -> None:
        self.pods = pods
        self.pod = pod
        self.forward = forward

    def _exec(self, argv: list[str], what: str) -> str:
        code, output = self.pods.exec(self.pod, argv)
        if code != 0:
            raise BrokerError(f"{what} in pod {self.pod} exited {code}: {output.strip()[-500:]}")
        return output

    def _process_alive(self) -> bool:
        code, _ = self.pods.exec(self.pod, self.loop.alive())
        return code == 0

    def _end_process(self, sig: str, timeout: float) -> None:
        self.forward.stop()  # from now on its ports refuse, as a stopped container's do
        self._exec(self.loop.signal(sig), f"kill -{sig} of the broker")
        deadline = time.monotonic() + timeout
        while self._process_alive():
            if time.monotonic() > deadline:
                raise BrokerError(f"the broker in pod {self.pod} still runs {timeout:.0f} s "
                                  f"after SIG{sig}")
            time.sleep(0.1)

    def _start_process(self) -> None:
        self._exec(self.loop.resume(), "start of the broker")


class PodBroker(_SupervisedBroker):
    """The run's RabbitMQ in a pod; implements BrokerControl."""

    loop = RABBITMQ

    def __init__(self, pods: Pods, pod: str, forward: PortForward,
                 address: BrokerAddress) -> None:
        super().__init__(pods, pod, forward)
        self.address = address
        self.admin = RabbitAdmin(address)
        self._down: str | None = None  # "app" (stop_app) | "process" (killed) | None

    def running(self) -> bool:
        return self._down is None and self.pods.state(self.pod).running

    def wait_ready(self, timeout: float = BROKER_READY_TIMEOUT_S) -> float:
        started = time.monotonic()
        self.pods.wait_ready(self.pod, "RabbitMQ pod", timeout,
                             self._image())
        self.forward.start()
        wait_until(lambda: bool(self.admin.overview().get("rabbitmq_version")),
                   "RabbitMQ pod", max(1.0, timeout - (time.monotonic() - started)),
                   lambda: self.pods.log_tail(self.pod))
        return time.monotonic() - started

    def _image(self) -> str | None:
        pod = self.pods.read(self.pod)
        return None if pod is None else str(pod.spec.containers[0].image)

    def halt(self, graceful: bool = True) -> None:
        """Down with its data kept: ``rabbitmqctl stop_app`` (the node stays, the broker
        stops), or SIGKILL to the broker's VM as a crash."""
        if graceful:
            self.forward.stop()
            self.ctl("stop_app")
            self._down = "app"
        else:
            self._end_process("KILL", 30.0)
            self._down = "process"

    def start(self, timeout: float = 60.0) -> float:
        started = time.monotonic()
        if self._down == "app":
            self.ctl("start_app")
        elif self._down == "process":
            self._start_process()
        self._down = None
        self.forward.start()
        wait_until(lambda: bool(self.admin.overview().get("rabbitmq_version"))
                   and path_answers(self.address.amqp_port, "amqp"),
                   "RabbitMQ pod", max(timeout, 1.0), lambda: self.pods.log_tail(self.pod))
        return time.monotonic() - started

    def ctl(self, *args: str) -> str:
        """rabbitmqctl inside the pod (root, with the broker's HOME and cookie)."""
        try:
            return self._exec([f"{BROKER_SBIN}/rabbitmqctl", *args],
                              f"rabbitmqctl {' '.join(args)}")
        except ComponentError as exc:
            raise BrokerError(str(exc)) from exc

    def set_memory_high_watermark(self, fraction: float) -> None:
        self.ctl("set_vm_memory_high_watermark", f"{fraction:.10f}")

    def memory_alarm(self) -> bool:
        return any(node.get("mem_alarm") for node in self.admin.nodes())


class PodKafka(_SupervisedBroker):
    """A deployment's Kafka node in a pod; implements kafka_access.KafkaControl. Its
    DIRECT listener is forwarded at the same number on the host's 127.0.0.1 (it
    advertises 127.0.0.1:<port>)."""

    loop = KAFKA

    def __init__(self, pods: Pods, pod: str, forward: PortForward, port: int) -> None:
        super().__init__(pods, pod, forward)
        self._port = port
        self._admin = KafkaAdmin(self.bootstrap)
        self._down = False

    @property
    def port(self) -> int:
        return self._port

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self._port}"

    @property
    def admin(self) -> KafkaAdmin:
        return self._admin

    def running(self) -> bool:
        return not self._down and self.pods.state(self.pod).running

    def _ready(self) -> bool:
        return kafka_answers(self._port) and self._admin.serving(NODE_ID, timeout=2.0)

    def wait_ready(self, timeout: float = KAFKA_READY_TIMEOUT_S) -> float:
        """Seconds until the node's metadata names itself (fails at once if it exits)."""
        started = time.monotonic()
        self.pods.wait_ready(self.pod, f"Kafka pod {self.pod}", timeout)
        self.forward.start()
        wait_until(self._ready, f"Kafka pod {self.pod}",
                   max(1.0, timeout - (time.monotonic() - started)),
                   lambda: self.pods.log_tail(self.pod))
        return time.monotonic() - started

    def halt(self, graceful: bool = True) -> None:
        """Down with its data kept (the pod and its files stay; the JVM ends)."""
        self._end_process("TERM" if graceful else "KILL", KAFKA_STOP_TIMEOUT_S)
        self._down = True

    def start(self, timeout: float = KAFKA_READY_TIMEOUT_S) -> float:
        started = time.monotonic()
        if self._down:
            self._start_process()
            self._down = False
        # A fresh admin client (kafka_access.FreshAdmin says why).
        self._admin = KafkaAdmin(self.bootstrap)
        self.wait_ready(max(timeout, 1.0))
        return time.monotonic() - started

    def log_tail(self, lines: int = 25) -> str:
        return self.pods.log_tail(self.pod, lines)
