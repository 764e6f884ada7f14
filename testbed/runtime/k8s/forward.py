"""How the controller reaches a pod: ``kubectl port-forward`` on 127.0.0.1 only.

One kubectl per forwarded port (a tagged ManagedProcess, so the watchdog and `testbed gc`
find it). kubectl ends itself when a forwarded connection finds nothing listening in the
pod (kubernetes/kubectl#1169), cutting every connection it carries: one per port keeps a
probe of a disabled proxy, or a broker port not up yet, from cutting the others. A
supervisor thread starts an ended one again while the forward is wanted; stopped on
purpose (the pod is down), the local ports refuse, as a stopped container's do.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from testbed.components.process import ManagedProcess
from testbed.errors import ComponentError, StartupError
from testbed.ports import port_is_free

FORWARD_READY_TIMEOUT_S = 20.0
RESTART_PAUSE_S = 0.2  # between kubectl's exit and its next start
WATCH_PERIOD_S = 0.05


def forward_argv(kubeconfig: Path, namespace: str, pod: str,
                 ports: Mapping[int, int]) -> list[str]:
    """kubectl port-forward of ``ports`` (local -> pod port), bound to 127.0.0.1 only."""
    return ["kubectl", "--kubeconfig", str(kubeconfig), "--namespace", namespace,
            "port-forward", "--address", "127.0.0.1", f"pod/{pod}",
            *(f"{local}:{remote}" for local, remote in sorted(ports.items()))]


class PortForward:
    """A pod's ports on the host's 127.0.0.1, kept up while wanted."""

    def __init__(self, kubeconfig: Path, namespace: str, pod: str, ports: Mapping[int, int],
                 run_id: str, log_dir: Path) -> None:
        self.pod = pod
        self.ports = dict(ports)  # local -> pod port
        self.processes = [ManagedProcess(f"port-forward {pod} {local}:{remote}",
                                         forward_argv(kubeconfig, namespace, pod,
                                                      {local: remote}),
                                         run_id, log_dir / f"forward-{pod}-{remote}.log")
                          for local, remote in sorted(self.ports.items())]
        self.restarts = 0
        self._wanted = False
        self._closed = False
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def local(self, remote: int) -> int:
        """The local port that reaches the pod's ``remote`` port."""
        return next(local for local, port in self.ports.items() if port == remote)

    def start(self, timeout: float = FORWARD_READY_TIMEOUT_S) -> float:
        """Start kubectl (again) and wait until it listens on every local port."""
        started = time.monotonic()
        with self._lock:
            self._wanted = True
            for process in self.processes:
                if not process.running():
                    process.start()
            if self._thread is None:
                self._thread = threading.Thread(target=self._supervise, daemon=True,
                                                name=f"forward-{self.pod}")
                self._thread.start()
        deadline = started + timeout
        while any(port_is_free(port) for port in self.ports):
            if time.monotonic() > deadline:
                raise StartupError(f"port-forward to pod {self.pod}",
                                   f"kubectl did not listen on {sorted(self.ports)} within "
                                   f"{timeout:.0f} s", self.processes[0].log_tail())
            time.sleep(WATCH_PERIOD_S)
        return time.monotonic() - started

    def stop(self) -> None:
        """Stop forwarding: the local ports refuse from now on (start() resumes)."""
        with self._lock:
            self._wanted = False
            for process in self.processes:
                process.stop(grace=2.0)

    def close(self) -> None:
        """Stop for good, the supervisor too."""
        with self._lock:
            self._closed = True
        self.stop()

    def _supervise(self) -> None:
        """Start kubectl again whenever it ended while the forward is wanted."""
        while True:
            time.sleep(WATCH_PERIOD_S)
            with self._lock:
                if self._closed:
                    return
                if not self._wanted or all(p.running() for p in self.processes):
                    continue
            time.sleep(RESTART_PAUSE_S)
            with self._lock:
                if not self._wanted or self._closed:
                    continue
                for process in self.processes:
                    if not process.running():
                        self.restarts += 1
                        with contextlib.suppress(ComponentError):  # again next round
                            process.start()
