"""What every runtime does the same way: a run (id, directory, watchdog), deployments that
are undone completely when they fail half-way, and a close that tears everything down
even when one part of it fails. Runtimes fill in their components through small hooks.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Self

from testbed.errors import StateError, TestbedError
from testbed.ports import release_ports
from testbed.runs import create_run, new_run_id, remove_run_dir
from testbed.runtime.base import Deployment
from testbed.topology.model import Topology


class Undo:
    """A stack of undo actions for a partial start; every action runs even if one fails."""

    def __init__(self) -> None:
        self._actions: list[Callable[[], object]] = []

    def push(self, action: Callable[[], object]) -> None:
        self._actions.append(action)

    def run(self) -> list[str]:
        failures = []
        while self._actions:
            action = self._actions.pop()
            try:
                action()
            except Exception as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
        return failures


def stop_watchdog(watchdog: subprocess.Popen[bytes] | None) -> None:
    """Close its pipe (the controller's "I am done") and wait for it to finish."""
    if watchdog is None:
        return
    with contextlib.suppress(OSError):
        watchdog.stdin.close()  # type: ignore[union-attr]
    try:
        watchdog.wait(15)
    except subprocess.TimeoutExpired:
        watchdog.kill()


class RunLifecycle:
    """open / deploy / close, shared by the runtimes. Hooks: ``_prepare`` (before the run
    exists), ``_spawn_watchdog``, ``_deploy``, ``_preflight``, ``_close_components``."""

    name = ""

    def __init__(self, run_id: str | None = None) -> None:
        self.run_id = run_id or new_run_id()
        self.state = "new"
        self.run_dir: Path | None = None
        self.timings: dict[str, float] = {}
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._deployments: list[Deployment] = []
        self._lock = threading.Lock()
        self._counter = 0
        self._proxy_names: set[str] = set()

    def open(self) -> None:
        if self.state != "new":
            raise StateError(f"runtime {self.run_id} cannot be opened: it is {self.state}")
        self._prepare()
        self.run_dir = create_run(self.run_id, self.name)
        (self.run_dir / "logs").mkdir()
        self._watchdog = self._spawn_watchdog(self.run_dir / "logs" / "watchdog.log")
        self.state = "open"

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Tear down every deployment, then the runtime's own components; delete the
        run's files. Every step runs; what failed is reported together at the end."""
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
        self._close_components(problems)
        release_ports(self.run_id)
        remove_run_dir(self.run_id)
        stop_watchdog(self._watchdog)
        self.state = "closed"
        if problems:
            raise TestbedError("teardown had problems: " + "; ".join(problems))

    def _require_open(self) -> Path:
        if self.state != "open" or self.run_dir is None:
            raise StateError(f"runtime {self.run_id} is {self.state}; use it inside "
                             f"`with get_runtime({self.name!r}) as runtime:` or call open() "
                             "first")
        return self.run_dir

    def deploy(self, topology: Topology) -> Deployment:
        """Bring a topology up and return its handle; on failure nothing of it is left."""
        self._require_open()
        with self._lock:
            self._counter += 1
            deployment_id = f"{topology.name}{self._counter}"
        self._preflight(topology)
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

    def proxy_name(self, topology: Topology, deployment_id: str, link: str,
                   undo: Undo) -> str:
        """A link's proxy name that an external tool can write down: ``sync.gateway-orders``
        (the topology and the link; the Toxiproxy server is the run's own). A second live
        deployment of the same topology gets its deployment id instead (``sync2.``)."""
        with self._lock:
            name = f"{topology.name}.{link}"
            if name in self._proxy_names:
                name = f"{deployment_id}.{link}"
            self._proxy_names.add(name)
        undo.push(lambda: self._proxy_names.discard(name))
        return name

    def _forget(self, deployment_id: str) -> None:
        """Drop a torn-down deployment from the run's list (its teardown calls this)."""
        self._deployments[:] = [d for d in self._deployments if d.id != deployment_id]

    # -- hooks ----------------------------------------------------------------------------

    def _prepare(self) -> None:
        """Before the run exists: check or fetch what the runtime needs."""

    def _spawn_watchdog(self, log_path: Path) -> subprocess.Popen[bytes]:
        raise NotImplementedError

    def _preflight(self, topology: Topology) -> None:
        """Refuse a topology this runtime cannot run, before anything starts."""

    def _deploy(self, topology: Topology, deployment_id: str, undo: Undo) -> Deployment:
        raise NotImplementedError

    def _close_components(self, problems: list[str]) -> None:
        """Stop the runtime's shared components; append what failed to ``problems``."""
