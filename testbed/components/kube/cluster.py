"""The testbed's own single-node Kubernetes cluster: made, started, stopped, removed.

It outlives any run (like the Docker engine: `testbed setup --k8s` starts it, `testbed
k8s down` stops it), so its processes carry no run id: `testbed gc` never takes it for a
run's leftovers. They carry ``TESTBED_K8S_CLUSTER=<home>`` instead, and their pids (with
their boot-relative start, so a recycled pid is not taken for them) are kept under the
home, so a stop finds them from any process. Stopping deletes the pods first (the
kubelet tears their sandboxes and network down), then the components in reverse order,
then what the node left on the machine: the CNI bridge and kube-proxy's iptables chains.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import requests

from testbed.components.kube.build import require_kube_bin
from testbed.components.kube.config import (
    BRIDGE,
    COMPONENTS,
    SERVICE_IP,
    ClusterPorts,
    Layout,
    command_lines,
    write_configs,
)
from testbed.components.kube.pki import NODE_NAME, make_pki
from testbed.components.process import tail
from testbed.errors import ComponentError, MissingBinaryError
from testbed.runs import process_started

CLUSTER_HOME_ENV = "TESTBED_K8S_HOME"
CLUSTER_TAG = "TESTBED_K8S_CLUSTER"
START_TIMEOUT_S = 120.0
TESTBED_NAMESPACE_LABEL = "testbed.run"  # what the k8s runtime labels its namespaces with
_SPAWNED: list[subprocess.Popen[bytes]] = []  # components started by this process


def cluster_home() -> Path:
    return Path(os.environ.get(CLUSTER_HOME_ENV)
                or os.path.join(tempfile.gettempdir(), "testbed-k8s"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class ComponentState:
    name: str
    pid: int | None  # None: not running


class Cluster:
    """One cluster home: its files, its processes, and the API they serve."""

    def __init__(self, home: Path | None = None) -> None:
        self.layout = Layout(home or cluster_home())

    @property
    def home(self) -> Path:
        return self.layout.home

    @property
    def kubeconfig(self) -> Path:
        return self.layout.kubeconfig

    def exists(self) -> bool:
        return (self.home / "cluster.json").is_file()

    def ports(self) -> ClusterPorts:
        return ClusterPorts(**json.loads((self.home / "cluster.json").read_text()))

    def api_url(self) -> str:
        return f"https://127.0.0.1:{self.ports().api}"

    # -- set-up --------------------------------------------------------------------------

    def create(self) -> None:
        """Certificates, tokens, configs and loopback ports, once; cluster.json last, so
        a half-made home is made again."""
        if self.exists():
            return
        if self.home.exists():
            shutil.rmtree(self.home)
        make_pki(self.layout.pki.directory, SERVICE_IP)
        ports = ClusterPorts(*(_free_port() for _ in range(7)))
        write_configs(self.layout, ports)
        (self.home / "cluster.json").write_text(ports.to_json())

    # -- processes -----------------------------------------------------------------------

    def _pid_file(self, name: str) -> Path:
        return self.home / "pids" / f"{name}.json"

    def pid(self, name: str) -> int | None:
        """The component's pid while that very process runs, else None."""
        try:
            record = json.loads(self._pid_file(name).read_text())
        except (OSError, ValueError):
            return None
        started = process_started(record["pid"])
        if started is None or abs(started - record["started"]) > 0.05:
            return None
        with contextlib.suppress(psutil.Error):
            if psutil.Process(record["pid"]).status() != psutil.STATUS_ZOMBIE:
                return int(record["pid"])
        return None

    def components(self) -> list[ComponentState]:
        return [ComponentState(name, self.pid(name)) for name in COMPONENTS]

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = self.layout.log(name)
        log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, CLUSTER_TAG: str(self.home)}
        env.pop("KUBECONFIG", None)
        with log.open("ab") as out:
            try:
                proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=env,
                                        start_new_session=True)
            except OSError as exc:
                raise ComponentError(f"cannot start {name} ({argv[0]}): {exc}") from exc
        _SPAWNED.append(proc)  # it outlives this process; reaped if it exits before
        self._pid_file(name).parent.mkdir(parents=True, exist_ok=True)
        self._pid_file(name).write_text(json.dumps(
            {"pid": proc.pid, "started": process_started(proc.pid) or 0.0}))

    def _wait(self, name: str, check: Callable[[], bool], timeout: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.pid(name) is None:
                raise ComponentError(f"{name} of the k8s cluster exited at start; the last "
                                     f"lines of {self.layout.log(name)}:\n"
                                     f"{tail(self.layout.log(name), 20)}")
            with contextlib.suppress(Exception):
                if check():
                    return time.monotonic() - started
            time.sleep(0.2)
        raise ComponentError(f"{name} of the k8s cluster did not get ready within "
                             f"{timeout:.0f} s; the last lines of {self.layout.log(name)}:\n"
                             f"{tail(self.layout.log(name), 20)}")

    def _api_get(self, path: str, timeout: float = 5.0) -> requests.Response:
        return requests.get(self.api_url() + path, timeout=timeout,
                            verify=str(self.layout.pki.path("ca.crt")),
                            headers={"Authorization": f"Bearer {self.layout.pki.token('admin')}"})

    def _ready_checks(self) -> dict[str, Callable[[], bool]]:
        ports = self.ports()
        socket_path = self.layout.containerd_socket
        return {
            "containerd": lambda: subprocess.run(
                ["ctr", "--address", str(socket_path), "version"], capture_output=True,
                timeout=5, check=False).returncode == 0,
            "etcd": lambda: requests.get(f"http://127.0.0.1:{ports.etcd_client}/health",
                                         timeout=2).json().get("health") == "true",
            "kube-apiserver": lambda: self._api_get("/readyz").status_code == 200,
            "kube-controller-manager": lambda: True,
            "kube-scheduler": lambda: True,
            "kubelet": lambda: requests.get(
                f"http://127.0.0.1:{ports.kubelet_healthz}/healthz", timeout=2).ok,
            "kube-proxy": lambda: True,
        }

    def start(self, timeout: float = START_TIMEOUT_S) -> dict[str, float]:
        """Start whatever is not running, in order, each ready before the next; then wait
        for the node to be Ready. Returns the seconds each took."""
        if not self.exists():
            raise ComponentError(f"no k8s cluster at {self.home}. Fix: `testbed setup --k8s`")
        containerd = shutil.which("containerd")
        if containerd is None:
            raise MissingBinaryError("containerd", "PATH", "`testbed setup --k8s` (as root: "
                                     "apt-get install containerd runc "
                                     "containernetworking-plugins iptables)")
        if all(self.pid(name) is None for name in COMPONENTS):
            # A stopped cluster starts on this testbed's configs (a pod range widened
            # since it was made, say); its certificates and ports stay.
            write_configs(self.layout, self.ports())
        argv = command_lines(self.layout, self.ports(), require_kube_bin(), containerd)
        checks = self._ready_checks()
        timings: dict[str, float] = {}
        _enable_forwarding()
        for name in COMPONENTS:
            if self.pid(name) is None:
                self._spawn(name, argv[name])
                timings[name] = self._wait(name, checks[name], timeout)
        since = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
        timings["node_ready"] = self._wait("kubelet", lambda: self.node_ready(since), timeout)
        return timings

    def node_ready(self, since: datetime | None = None) -> bool:
        """The node reports Ready (``since``: in a heartbeat of the kubelet started
        then, not one an earlier kubelet left in etcd)."""
        node = self._api_get(f"/api/v1/nodes/{NODE_NAME}").json()
        for condition in node.get("status", {}).get("conditions", []):
            if condition.get("type") == "Ready" and condition.get("status") == "True":
                beat = datetime.fromisoformat(condition["lastHeartbeatTime"])
                return since is None or beat >= since
        return False

    def running(self) -> bool:
        return all(state.pid is not None for state in self.components())

    # -- tear-down -----------------------------------------------------------------------

    def _delete_testbed_namespaces(self, timeout: float = 60.0) -> None:
        """Every namespace a run made, and wait until their pods are gone: the kubelet
        then has torn their sandboxes and veths down through CNI."""
        kubectl = shutil.which("kubectl")
        if kubectl is None or self.pid("kube-apiserver") is None:
            return
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        subprocess.run([kubectl, "delete", "namespace", "-l", TESTBED_NAMESPACE_LABEL,
                        "--wait=true", f"--timeout={int(timeout)}s"], env=env,
                       capture_output=True, timeout=timeout + 10, check=False)
        subprocess.run([kubectl, "delete", "pods", "--all", "--all-namespaces",
                        "--grace-period=0", "--force", "--wait=true",
                        f"--timeout={int(timeout)}s"],
                       env=env, capture_output=True, timeout=timeout + 10, check=False)

    def _stop_component(self, name: str, grace: float = 10.0) -> None:
        pid = self.pid(name)
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.pid(name) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.pid(name) is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        self._pid_file(name).unlink(missing_ok=True)

    def stop(self) -> list[str]:
        """Stop every component and undo what the node did to the machine; returns what
        could not be undone (empty when all is clean)."""
        if not self.exists():
            return []
        self._delete_testbed_namespaces()
        for name in reversed(COMPONENTS):
            if name == "containerd":
                self._remove_containers()
            self._stop_component(name)
        problems = self._left_processes()
        self._clean_network(problems)
        self._unmount_all(problems)
        return problems

    def _remove_containers(self) -> None:
        """Containers the kubelet did not get to remove (it was stopped): kill their
        tasks, so the shims exit and nothing keeps running past the cluster."""
        address = str(self.layout.containerd_socket)
        listed = subprocess.run(["ctr", "--address", address, "-n", "k8s.io", "tasks", "ls",
                                 "-q"], capture_output=True, text=True, timeout=15, check=False)
        for task in listed.stdout.split():
            subprocess.run(["ctr", "--address", address, "-n", "k8s.io", "tasks", "kill",
                            "-s", "SIGKILL", task], capture_output=True, timeout=15,
                           check=False)
        time.sleep(0.5)
        for task in listed.stdout.split():
            for verb in (["tasks", "delete", "-f"], ["containers", "delete"]):
                subprocess.run(["ctr", "--address", address, "-n", "k8s.io", *verb, task],
                               capture_output=True, timeout=15, check=False)

    def _left_processes(self) -> list[str]:
        """Processes still tagged with this cluster (a shim, a container), killed."""
        left = []
        for proc in psutil.process_iter(["pid", "name"]):
            with contextlib.suppress(psutil.Error):
                if proc.pid != os.getpid() and \
                        proc.environ().get(CLUSTER_TAG) == str(self.home):
                    left.append(f"{proc.pid} {proc.name()}")
                    proc.kill()
        return [f"killed left process {p}" for p in left]

    def _clean_network(self, problems: list[str]) -> None:
        subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True, timeout=15,
                       check=False)
        with contextlib.suppress(MissingBinaryError):
            proxy = require_kube_bin() / "kube-proxy"
            done = subprocess.run([str(proxy), "--cleanup"], capture_output=True, text=True,
                                  timeout=60, check=False)
            if done.returncode != 0:
                problems.append(f"kube-proxy --cleanup: {done.stdout[-300:]}")

    def _unmount_all(self, problems: list[str]) -> None:
        """Volume and sandbox mounts under the home (a kubelet stopped mid-way leaves
        some), deepest first."""
        home = str(self.home)
        mounts = [part.mountpoint for part in psutil.disk_partitions(all=True)
                  if part.mountpoint.startswith(home + "/")]
        for mountpoint in sorted(mounts, key=len, reverse=True):
            done = subprocess.run(["umount", "-l", mountpoint], capture_output=True,
                                  timeout=15, check=False)
            if done.returncode != 0:
                problems.append(f"umount {mountpoint}: {done.stderr!r}")

    def remove(self) -> list[str]:
        """Stop, then delete the home: nothing of the cluster is left."""
        problems = self.stop()
        if self.home.exists():
            shutil.rmtree(self.home, ignore_errors=True)
        if self.home.exists():
            problems.append(f"could not delete {self.home}")
        return problems


def _enable_forwarding() -> None:
    """Pods reach Services through the node's routing and iptables: forwarding on, and
    bridged traffic through iptables (Docker sets the same)."""
    for key in ("net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables"):
        path = Path("/proc/sys") / key
        with contextlib.suppress(OSError):
            if path.read_text().strip() != "1":
                path.write_text("1\n")


def require_kubeconfig() -> Path:
    """KUBECONFIG when set (a cluster of the user's), else the testbed cluster's, which
    must be running; a ComponentError with the fix otherwise."""
    explicit = os.environ.get("KUBECONFIG")
    if explicit:
        path = Path(explicit.split(os.pathsep)[0])
        if not path.is_file():
            raise ComponentError(f"KUBECONFIG={explicit}: no such file. Fix: point it at a "
                                 "kubeconfig, or unset it and run `testbed setup --k8s`")
        return path
    cluster = Cluster()
    if not cluster.exists():
        raise ComponentError("no Kubernetes cluster: KUBECONFIG is not set and the testbed's "
                             f"own cluster is not set up ({cluster.home}). Fix: `testbed setup "
                             "--k8s` (builds and starts a single-node cluster), or set "
                             "KUBECONFIG")
    if not cluster.running():
        down = [s.name for s in cluster.components() if s.pid is None]
        raise ComponentError(f"the testbed's k8s cluster at {cluster.home} is not running "
                             f"({', '.join(down)} down). Fix: `testbed setup --k8s` starts it")
    return cluster.kubeconfig


def is_own_cluster(kubeconfig: Path) -> bool:
    """Is this kubeconfig the testbed cluster's (whose containerd we can load images into)?"""
    return kubeconfig.resolve() == Cluster().kubeconfig.resolve()


def describe_cluster() -> str:
    """One line for `testbed doctor` and `testbed k8s status`."""
    from testbed.components.kube.build import KUBE_VERSION, find_kube_bin

    cluster = Cluster()
    if find_kube_bin() is None:
        return "not built; `testbed setup --k8s` builds and starts it"
    if not cluster.exists():
        return f"built (kubernetes {KUBE_VERSION}), not set up; `testbed setup --k8s`"
    down = [s.name for s in cluster.components() if s.pid is None]
    if down:
        return (f"set up at {cluster.home}, {', '.join(down)} down; `testbed k8s start` "
                "starts it")
    try:
        ready = "node Ready" if cluster.node_ready() else "node not Ready"
    except (requests.RequestException, ValueError) as exc:
        ready = f"API not answering ({exc.__class__.__name__})"
    return (f"running, kubernetes {KUBE_VERSION} at {cluster.api_url()}, {ready}; "
            f"KUBECONFIG={cluster.kubeconfig}")
