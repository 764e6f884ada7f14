"""Helpers for integration tests: every test here uses real processes, Toxiproxy, RabbitMQ."""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import Callable, Iterator

import docker
import psutil
import pytest

from testbed.components.docker_engine import ensure_engine
from testbed.errors import BrokerError, ComponentError
from testbed.ports import reservations
from testbed.runs import run_dir, tagged_processes
from testbed.runtime import Deployment

# The `deploy` fixture: deploy(topology) -> Deployment, torn down after the test.
Deploy = Callable[..., Deployment]


def process_names(run_id: str) -> set[str]:
    """Names of a run's processes (short-lived helpers may vanish while we look)."""
    names = set()
    for proc in tagged_processes(run_id):
        with contextlib.suppress(psutil.Error):
            names.add(proc.name())
    return names


def leftovers(run_id: str) -> list[str]:
    """What of a run still exists: processes, run directory, port reservations."""
    found = [f"process {name}" for name in sorted(process_names(run_id))]
    if run_dir(run_id).exists():
        found.append(f"directory {run_dir(run_id)}")
    found += [f"port {port}" for port, owner in reservations().items() if owner == run_id]
    return found


def wait_until_gone(run_id: str, timeout: float) -> list[str]:
    """Poll until nothing of the run is left; returns what is left at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        left = leftovers(run_id)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def labelled_objects(client: docker.DockerClient, label: str) -> list[str]:
    """Every container, network and volume carrying a label (``key=value``)."""
    selector = {"label": label}
    return ([f"container {c.name}" for c in client.containers.list(
                all=True, filters=selector, ignore_removed=True)]
            + [f"network {n.name}" for n in client.networks.list(filters=selector)]
            + [f"volume {v.name}" for v in client.volumes.list(filters=selector)])


def place(deployment: Deployment, prefix: str, count: int) -> list[str]:
    """Place ``count`` orders one by one; each must be accepted (202: an async edge)."""
    ids = [f"{prefix}-{i}" for i in range(count)]
    for order_id in ids:
        response = deployment.place_order(order_id)
        assert response.status_code == 202, response.text
    return ids


def processed(deployment: Deployment, service: str) -> set[str]:
    return set(deployment.ledger(service))


def eventually(predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
    """Poll a condition of a real, asynchronous system until it holds or time is up. A
    broker too busy to answer one poll in time (two Kafka JVMs on two loaded cores: a 2 s
    admin call timed out in CI) is a poll that did not hold yet, not the answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except BrokerError as exc:
            if "did not answer in time" not in str(exc):
                raise
        time.sleep(0.05)
    return predicate()


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """An engine, started when none answers (installing docker.io if needed, as `testbed
    setup --docker` does); the test skips only when none can be started."""
    try:
        ensure_engine()
    except ComponentError as exc:
        pytest.skip(f"no Docker engine could be started here: {exc}")
    engine = docker.from_env()
    yield engine
    engine.close()


# What the k8s runtime cannot do, by what a test's code asks for: pods share no network
# it could cut (partition).
K8S_CANNOT = {
    '"partition"': "needs partition: the k8s runtime has no networks to cut",
}


def k8s_cannot(item: pytest.Item) -> str | None:
    """Why a test cannot run on the k8s runtime, read from its code (None: it can)."""
    function = getattr(item, "function", None)
    if function is None:
        return None
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        return None
    return next((why for needle, why in K8S_CANNOT.items() if needle in source), None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the integration tests; under another runtime than local, skip the ones about
    the local runtime itself (the rest run through ``deploy`` on the runtime chosen); the
    k8s runtime's own tests run only on it, and on it whatever needs what it cannot do
    is skipped, saying what."""
    runtime = config.getoption("--runtime")
    for item in items:
        if "tests/integration" in str(item.path):
            item.add_marker(pytest.mark.integration)
        if runtime != "local" and item.get_closest_marker("local_only"):
            item.add_marker(pytest.mark.skip(reason=f"about the local runtime, not {runtime}"))
        if runtime != "k8s" and item.get_closest_marker("k8s"):
            item.add_marker(pytest.mark.skip(reason="about the k8s runtime: run with "
                                                    "--runtime k8s"))
        elif runtime == "k8s" and not item.get_closest_marker("k8s") and (
                why := k8s_cannot(item)):
            item.add_marker(pytest.mark.skip(reason=f"on k8s: {why}"))
        elif runtime == "k8s" and item.get_closest_marker("own_ledger_survives_restart"):
            item.add_marker(pytest.mark.skip(reason="on k8s: a killed or stopped own image "
                                                    "comes back as a new pod with an empty "
                                                    "ledger (the audit says unaudited)"))
        elif runtime == "k8s" and item.get_closest_marker("kills_by_process"):
            item.add_marker(pytest.mark.skip(reason="on k8s: kills its component as a "
                                                    "process or container, not as a pod"))
