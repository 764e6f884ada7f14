"""Teardown against a real engine when something else got there first: a network or a
container already gone (the watchdog or a gc swept it while the controller was being
stopped by a signal) is done, not an error; and gc's dry run touches nothing."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import docker
import docker.errors
import pytest
from docker.models.networks import Network

from testbed.images import image_refs
from testbed.runs import new_run_id
from testbed.runtime import get_runtime
from testbed.runtime.docker import collect_docker_garbage, dead_run_objects
from testbed.runtime.docker.cleanup import already_gone, remove_network, remove_run_objects
from testbed.runtime.docker.containers import (
    LABEL_CONTROLLER,
    LABEL_ROLE,
    LABEL_RUN,
    remove_containers,
)
from testbed.runtime.docker.plan import controller_label
from testbed.topology import sync_chain

from .conftest import labelled_objects

pytestmark = pytest.mark.docker

DEAD_CONTROLLER = "999999999:1.0"  # no such pid: a controller that is gone


@pytest.fixture
def network(docker_client: docker.DockerClient) -> Iterator[Network]:
    """A labelled bridge network of a run of its own (removed afterwards either way)."""
    run_id = new_run_id()
    created = docker_client.networks.create(
        f"tb-{run_id}-test", driver="bridge",
        labels={LABEL_RUN: run_id, LABEL_CONTROLLER: controller_label(), LABEL_ROLE: "network"})
    yield created
    remove_run_objects(docker_client, run_id)


def test_removing_a_network_already_removed_is_done(docker_client: docker.DockerClient,
                                                    network: Network) -> None:
    docker_client.networks.get(network.id).remove()  # behind the teardown's back
    assert remove_network(network) is False  # gone already: no error, not ours
    assert remove_run_objects(docker_client, network.attrs["Labels"][LABEL_RUN]) == []


def test_a_deployment_whose_objects_were_swept_tears_down_cleanly(
        docker_client: docker.DockerClient) -> None:
    with get_runtime("docker") as runtime:
        deployment = runtime.deploy(sync_chain(1))
        swept = [f"container {c.name}" for c in docker_client.containers.list(
            all=True, filters={"label": f"{LABEL_RUN}={runtime.run_id}"})]
        for container in docker_client.containers.list(
                all=True, filters={"label": f"{LABEL_RUN}={runtime.run_id}"}):
            container.remove(force=True)  # what a watchdog or gc does meanwhile
        for found in docker_client.networks.list(
                filters={"label": f"{LABEL_RUN}={runtime.run_id}"}):
            found.remove()
        assert swept and labelled_objects(docker_client, f"{LABEL_RUN}={runtime.run_id}") == []
        deployment.close()  # once raised docker.errors.NotFound on the network


def test_gc_check_lists_a_dead_runs_objects_and_removes_nothing(
        docker_client: docker.DockerClient) -> None:
    run_id = new_run_id()
    name = f"tb-{run_id}-dead"
    docker_client.networks.create(name, driver="bridge", labels={
        LABEL_RUN: run_id, LABEL_CONTROLLER: DEAD_CONTROLLER, LABEL_ROLE: "network"})
    try:
        assert f"network {name}" in collect_docker_garbage(docker_client, remove=False)
        assert dead_run_objects(docker_client)[run_id] == [f"network {name}"]
        assert docker_client.networks.list(names=[name])  # still there
    finally:
        remove_run_objects(docker_client, run_id)  # (gc would: not other runs' here)
    assert not docker_client.networks.list(names=[name])


def test_a_removal_already_in_progress_is_done(docker_client: docker.DockerClient) -> None:
    """Sweepers racing for one container: the engine answers all but one with 409
    "removal ... already in progress" (seen here every time with four at once)."""
    run_id = new_run_id()
    image = image_refs(docker_client)["toxiproxy"]
    labels = {LABEL_RUN: run_id, LABEL_CONTROLLER: controller_label(), LABEL_ROLE: "probe"}
    try:
        raced = docker_client.containers.run(image, name=f"tb-{run_id}-raw", detach=True,
                                             labels=labels)
        refusals: list[docker.errors.APIError] = []

        def raw_remove() -> None:
            try:
                docker_client.api.remove_container(raced.id, force=True)
            except docker.errors.APIError as exc:
                refusals.append(exc)

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda _: raw_remove(), range(4)))
        assert refusals and all(already_gone(exc) for exc in refusals), refusals

        swept = docker_client.containers.run(image, name=f"tb-{run_id}-swept", detach=True,
                                             labels=labels)
        with ThreadPoolExecutor(4) as pool:  # four sweepers: none raises, one removed it
            removed = list(pool.map(lambda _: remove_containers([swept]), range(4)))
        assert sum(len(names) for names in removed) == 1
    finally:
        remove_run_objects(docker_client, run_id)
    assert labelled_objects(docker_client, f"{LABEL_RUN}={run_id}") == []
