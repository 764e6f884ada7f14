"""Removing a run's docker objects: its own teardown, its watchdog, and `testbed gc`."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import docker
import docker.errors
from docker.models.networks import Network

from testbed.components.docker_engine import engine
from testbed.errors import ComponentError
from testbed.runs import RUN_ID_ENV
from testbed.runtime.docker.containers import LABEL_CONTROLLER, LABEL_RUN, remove_containers
from testbed.runtime.docker.plan import controller_alive

# -- cleanup: the run's own teardown, its watchdog, and `testbed gc` ----------------------

def remove_run_objects(client: docker.DockerClient, run_id: str | None = None,
                       only: Callable[[dict[str, str]], bool] | None = None) -> list[str]:
    """Remove containers (with their anonymous volumes), networks and volumes labelled
    with ``run_id`` (any run when None) and accepted by ``only``; returns what it removed."""
    selector = f"{LABEL_RUN}={run_id}" if run_id else LABEL_RUN
    removed: list[str] = []
    chosen = [c for c in client.containers.list(all=True, filters={"label": selector},
                                                ignore_removed=True)
              if only is None or only(c.labels)]
    removed += [f"container {name}" for name in remove_containers(chosen)]
    for network in client.networks.list(filters={"label": selector}):
        if (only is None or only(network.attrs.get("Labels") or {})) and _remove_network(network):
            removed.append(f"network {network.name}")
    for volume in client.volumes.list(filters={"label": selector}):
        if only is None or only(volume.attrs.get("Labels") or {}):
            with contextlib.suppress(docker.errors.NotFound):
                volume.remove(force=True)
                removed.append(f"volume {volume.name}")
    return removed


def _remove_network(network: Network, attempts: int = 10) -> bool:
    """Detach what is still attached (e.g. a live run's broker) and remove the network.
    Another sweeper (the run's watchdog, a second gc) may be removing its containers at
    the same moment: the engine then says it still has endpoints, so try again shortly."""
    for attempt in range(attempts):
        try:
            network.reload()
            for attached in network.containers:
                with contextlib.suppress(docker.errors.APIError):
                    network.disconnect(attached, force=True)
            network.remove()
            return True
        except docker.errors.NotFound:
            return False
        except docker.errors.APIError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5)
    return False


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


def watch(run_id: str) -> int:
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
