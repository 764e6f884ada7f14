"""Removing a run's docker objects: its own teardown, its watchdog, and `testbed gc`."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container
from docker.models.networks import Network
from docker.models.volumes import Volume

from testbed.components.docker_engine import engine
from testbed.errors import ComponentError
from testbed.runs import RUN_ID_ENV
from testbed.runtime.docker.containers import LABEL_CONTROLLER, LABEL_RUN, remove_containers
from testbed.runtime.docker.plan import controller_alive

# -- cleanup: the run's own teardown, its watchdog, and `testbed gc` ----------------------

Labels = dict[str, str]


@dataclass(frozen=True)
class Labelled:
    """The containers, networks and volumes carrying the run label that a sweep chose."""

    containers: list[Container]
    networks: list[Network]
    volumes: list[Volume]

    def names(self) -> list[str]:
        return ([f"container {c.name}" for c in self.containers]
                + [f"network {n.name}" for n in self.networks]
                + [f"volume {v.name}" for v in self.volumes])


def _labels(obj: Container | Network | Volume) -> Labels:
    if isinstance(obj, Container):
        return dict(obj.labels)
    return dict(obj.attrs.get("Labels") or {})


def labelled(client: docker.DockerClient, run_id: str | None = None,
             only: Callable[[Labels], bool] | None = None) -> Labelled:
    """Objects labelled with ``run_id`` (any run when None) and accepted by ``only``."""
    selector = {"label": f"{LABEL_RUN}={run_id}" if run_id else LABEL_RUN}

    def chosen(objects: list[Any]) -> list[Any]:
        return [o for o in objects if only is None or only(_labels(o))]

    return Labelled(chosen(client.containers.list(all=True, filters=selector,
                                                  ignore_removed=True)),
                    chosen(client.networks.list(filters=selector)),
                    chosen(client.volumes.list(filters=selector)))


def remove_run_objects(client: docker.DockerClient, run_id: str | None = None,
                       only: Callable[[Labels], bool] | None = None,
                       remove: bool = True) -> list[str]:
    """Remove containers (with their anonymous volumes), networks and volumes labelled
    with ``run_id`` (any run when None) and accepted by ``only``; returns what it removed
    (with ``remove=False``, what it would remove, touching nothing)."""
    found = labelled(client, run_id, only)
    if not remove:
        return found.names()
    removed = [f"container {name}" for name in remove_containers(found.containers)]
    removed += [f"network {n.name}" for n in found.networks if remove_network(n)]
    for volume in found.volumes:
        try:
            volume.remove(force=True)
            removed.append(f"volume {volume.name}")
        except docker.errors.APIError as exc:
            if not already_gone(exc):
                raise
    return removed


def already_gone(exc: docker.errors.APIError) -> bool:
    """True when the engine refused a removal because the object is gone (404) or being
    removed by someone else (409 "removal ... already in progress"): either way it is
    done. A signal that stops a controller lets its watchdog, or a gc, race its teardown."""
    if isinstance(exc, docker.errors.NotFound):
        return True
    return exc.status_code == 409 and "in progress" in str(exc.explanation or exc)


def remove_network(network: Network, attempts: int = 10) -> bool:
    """Detach what is still attached (e.g. a live run's broker) and remove the network;
    True when this call removed it, False when it was gone already (not an error).
    Another sweeper (the run's watchdog, a second gc) may be removing its containers at
    the same moment: the engine then says it still has endpoints, so try again shortly."""
    for attempt in range(attempts):
        try:
            network.reload()
            # By id: a container removed meanwhile must not read as the network gone.
            for container_id in network.attrs.get("Containers") or {}:
                with contextlib.suppress(docker.errors.APIError):
                    network.disconnect(container_id, force=True)
            network.remove()
            return True
        except docker.errors.APIError as exc:
            if already_gone(exc):
                return False
            if attempt == attempts - 1:
                raise
            time.sleep(0.5)
    return False


def _dead_controller(labels: Labels) -> bool:
    return not controller_alive(labels.get(LABEL_CONTROLLER, ""))


@contextlib.contextmanager
def _engine_or_none(client: docker.DockerClient | None) -> Iterator[docker.DockerClient | None]:
    """The client given, or one of the engine's (closed afterwards), or None: no engine."""
    if client is not None:
        yield client
        return
    try:
        own = engine(5.0)
    except ComponentError:
        yield None
        return
    try:
        yield own
    finally:
        own.close()


def collect_docker_garbage(client: docker.DockerClient | None = None,
                           remove: bool = True) -> list[str]:
    """What ``testbed gc`` calls: remove every labelled container, network and volume whose
    run's controller is dead (judged by the ``testbed.controller`` label, the same pid +
    start-time test sweep.py applies to run records); with ``remove=False`` only list
    them (``gc --check``). No engine: nothing to collect."""
    with _engine_or_none(client) as found:
        return [] if found is None else remove_run_objects(found, None, _dead_controller,
                                                           remove)


def dead_run_objects(client: docker.DockerClient | None = None) -> dict[str, list[str]]:
    """Run id -> the labelled objects of that run whose controller is dead (what
    ``testbed status`` lists and gc would remove). No engine: none."""
    with _engine_or_none(client) as own:
        if own is None:
            return {}
        found = labelled(own, None, _dead_controller)
    by_run: dict[str, list[str]] = {}
    for obj, name in zip([*found.containers, *found.networks, *found.volumes],
                         found.names(), strict=True):
        by_run.setdefault(_labels(obj).get(LABEL_RUN, "?"), []).append(name)
    return by_run


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
