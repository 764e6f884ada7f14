"""Pods as the k8s runtime uses them: create, wait until ready (failing at once, with
the reason, when one cannot run), delete and wait until gone, exec, log tails."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from testbed.errors import ComponentError, StartupError
from testbed.runtime.k8s.api import Cluster
from testbed.runtime.k8s.manifests import Manifest

POLL_S = 0.1
GONE_TIMEOUT_S = 30.0
LOG_TAIL_LINES = 30
# A container waiting for one of these never starts: say so at once, naming the image.
IMAGE_PROBLEMS = ("ErrImageNeverPull", "ErrImagePull", "ImagePullBackOff", "InvalidImageName")
CONFIG_PROBLEMS = ("CreateContainerConfigError", "CreateContainerError", "RunContainerError")


@dataclass(frozen=True)
class PodState:
    """What the controller needs to know of a pod, read from its status."""

    phase: str  # Pending | Running | Succeeded | Failed | Gone
    ready: bool
    waiting: str | None = None  # a container's waiting reason (ErrImageNeverPull, ...)
    message: str = ""
    exit_code: int | None = None  # a terminated container's
    unschedulable: str | None = None

    @property
    def running(self) -> bool:
        return self.phase == "Running" and self.exit_code is None


def pod_state(pod: Any) -> PodState:
    """The PodState of a V1Pod (None: gone)."""
    if pod is None:
        return PodState("Gone", False)
    status = pod.status
    ready = any(c.type == "Ready" and c.status == "True" for c in status.conditions or [])
    unschedulable = next((c.message or c.reason for c in status.conditions or []
                          if c.type == "PodScheduled" and c.status == "False"), None)
    waiting, message, exit_code = None, "", None
    for container in status.container_statuses or []:
        state = container.state
        if state.waiting is not None and state.waiting.reason not in (None, "ContainerCreating"):
            waiting, message = state.waiting.reason, state.waiting.message or ""
        if state.terminated is not None:
            exit_code = state.terminated.exit_code
            message = state.terminated.reason or ""
    return PodState(status.phase or "Pending", ready, waiting, message, exit_code,
                    unschedulable)


class Pods:
    """The pods of one namespace."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster = cluster
        self.namespace = namespace

    def create(self, manifest: Manifest) -> None:
        name = manifest["metadata"]["name"]
        self.cluster.call(f"creating pod {name}", lambda: (
            self.cluster.core.create_namespaced_pod(self.namespace, manifest)))

    def read(self, name: str) -> Any:
        return self.cluster.call(f"reading pod {name}", lambda: (
            self.cluster.core.read_namespaced_pod_status(name, self.namespace)), ok=(404,))

    def state(self, name: str) -> PodState:
        return pod_state(self.read(name))

    def wait_ready(self, name: str, what: str, timeout: float,
                   image: str | None = None) -> float:
        """Seconds until the pod is Ready (its readiness probe passed); StartupError at
        once when it cannot get there (its image is missing, it exited), with the reason
        and its last log lines."""
        started = time.monotonic()
        deadline = started + timeout
        while True:
            state = self.state(name)
            if state.ready and state.running:
                return time.monotonic() - started
            if state.waiting in IMAGE_PROBLEMS:
                raise ComponentError(
                    f"{what}: the cluster has no image {image or '(see the pod)'} "
                    f"({state.waiting}: {state.message}); no registry is reached, so "
                    "images must be on the node. Fix: `testbed images build`, then open "
                    "the runtime again (it loads them into the testbed cluster); on another "
                    "cluster load the image into its nodes' container runtime")
            if state.waiting in CONFIG_PROBLEMS:
                raise StartupError(what, f"pod {name}: {state.waiting}: {state.message}",
                                   self.log_tail(name))
            if state.phase in ("Failed", "Succeeded", "Gone") or state.exit_code is not None:
                raise StartupError(what, f"pod {name} is {state.phase} (exit code "
                                   f"{state.exit_code}, {state.message})", self.log_tail(name))
            if time.monotonic() > deadline:
                why = (f"not scheduled: {state.unschedulable}" if state.unschedulable
                       else f"pod {name} is {state.phase}, not ready")
                raise StartupError(what, f"{why} within {timeout:.0f} s", self.log_tail(name))
            time.sleep(POLL_S)

    def delete(self, name: str, grace: int) -> None:
        """Delete the pod (gone already: fine)."""
        self.cluster.call(f"deleting pod {name}", lambda: self.cluster.core.delete_namespaced_pod(
            name, self.namespace, grace_period_seconds=grace), ok=(404,))

    def wait_gone(self, name: str, timeout: float = GONE_TIMEOUT_S) -> float:
        started = time.monotonic()
        while self.read(name) is not None:
            if time.monotonic() - started > timeout:
                raise ComponentError(f"pod {name} was still there {timeout:.0f} s after its "
                                     "deletion (is the node's kubelet running?)")
            time.sleep(POLL_S)
        return time.monotonic() - started

    def log_tail(self, name: str, lines: int = LOG_TAIL_LINES) -> str:
        try:
            return str(self.cluster.core.read_namespaced_pod_log(
                name, self.namespace, tail_lines=lines, _request_timeout=5)).rstrip()
        except Exception as exc:
            return f"(logs unavailable: {exc})"

    def exec(self, name: str, argv: list[str], timeout: float = 30.0) -> tuple[int, str]:
        """Run a command in the pod's container: (exit code, stdout and stderr)."""
        from kubernetes.stream import stream

        def run() -> tuple[int, str]:
            client = stream(self.cluster.core.connect_get_namespaced_pod_exec, name,
                            self.namespace, command=argv, stderr=True, stdin=False,
                            stdout=True, tty=False, _preload_content=False)
            try:
                client.run_forever(timeout=timeout)
                output = client.read_stdout() + client.read_stderr()
                code = client.returncode
            finally:
                client.close()
                # A socket the server already closed is left open by close(): shut it.
                if getattr(client, "sock", None) is not None:
                    client.sock.shutdown()
            return (code if code is not None else -1), output

        result = self.cluster.call(f"exec of {argv[0]} in pod {name}", run)
        assert result is not None
        return result


def wait_until(check: Callable[[], bool], what: str, timeout: float,
               tail: Callable[[], str] = lambda: "") -> float:
    """Poll ``check`` (an exception counts as not yet) until it passes or time is up."""
    started = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - started
        except Exception:
            pass
        if time.monotonic() - started > timeout:
            raise StartupError(what, f"no answer within {timeout:.0f} s", tail())
        time.sleep(0.05)
