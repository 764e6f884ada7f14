"""The async pipeline on Kafka in containers: a Kafka container per deployment on its
network, every client through its own proxy in the Toxiproxy container (each advertised
``toxiproxy:<its proxy port>``), the testbed on a listener published on 127.0.0.1; the
same faults as locally, and nothing left behind.

The engine is started when none answers (as for the other docker tests); the tests skip
only when no engine can be started. The kafka image is built on first use (cached).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import requests

from testbed.components.binaries import KAFKA_LIBS_ENV
from testbed.errors import ComponentError
from testbed.faults import make_fault
from testbed.images import build_images, recipes
from testbed.images.build import _require_java
from testbed.runtime import Deployment, get_runtime
from testbed.runtime.docker import LABEL_RUN, SERVICE_CONFIG_PATH, DockerRuntime
from testbed.runtime.docker.containers import LABEL_CONTROLLER, LABEL_DEPLOYMENT, LABEL_ROLE
from testbed.runtime.docker.kafka import ContainerKafka
from testbed.topology import async_pipeline

from .conftest import eventually, labelled_objects, place, processed

pytestmark = [pytest.mark.docker, pytest.mark.heavy]


@pytest.fixture(scope="module")
def runtime(docker_client: docker.DockerClient) -> Iterator[DockerRuntime]:
    opened = get_runtime("docker")
    assert isinstance(opened, DockerRuntime)
    with opened:
        yield opened
    assert labelled_objects(docker_client, f"{LABEL_RUN}={opened.run_id}") == []


@pytest.fixture(scope="module")
def pipeline(runtime: DockerRuntime) -> Iterator[Deployment]:
    """One deployment for the flow and fault tests (a Kafka container boots in seconds,
    but the module would otherwise pay it per test)."""
    with runtime.deploy(async_pipeline(2, broker="kafka", partitions=3)) as deployment:
        yield deployment


def lag(deployment: Deployment) -> dict[str, int]:
    assert deployment.kafka is not None
    return {q.name: q.ready for q in deployment.kafka.queue_states()}


def where_orders_stopped(deployment: Deployment, ids: set[str]) -> str:
    """Which stage has which of ``ids``, the groups' lags and each consumer's counters:
    what a flow that did not resume needs to be told apart (a member that never
    rejoined, a forward that kept failing, a broker that never led again)."""
    lines = [f"{name}: {sorted(ids & processed(deployment, name))}"
             for name in ("payments", "inventory")]
    try:
        lines.append(f"lags: {lag(deployment)}")
    except Exception as exc:  # a diagnosis must not hide the failure it explains
        lines.append(f"lags unreadable: {exc}")
    for name in ("payments", "inventory"):
        try:
            stats = requests.get(deployment.url(name) + "/stats", timeout=2).json()
            lines.append(f"{name} counters: {stats.get('counters')}")
        except (requests.RequestException, ValueError) as exc:
            lines.append(f"{name} /stats unreadable: {exc}")
    return "orders did not flow after the restart:\n" + "\n".join(lines)


def of_deployment(client: docker.DockerClient, run: str, deployment_id: str) -> list[str]:
    """The containers and networks of one deployment of one run."""
    selector = {"label": [run, f"{LABEL_DEPLOYMENT}={deployment_id}"]}
    return ([f"container {c.name}" for c in client.containers.list(all=True, filters=selector)]
            + [f"network {n.name}" for n in client.networks.list(filters=selector)])


def service_config(deployment: Deployment, name: str) -> dict[str, object]:
    container = deployment.service(name).container  # type: ignore[attr-defined]
    result = container.exec_run(["cat", SERVICE_CONFIG_PATH])
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.output))


def test_orders_flow_through_every_stage(pipeline: Deployment, runtime: DockerRuntime) -> None:
    assert pipeline.kafka is not None and pipeline.broker is None
    node = pipeline.kafka.node
    assert isinstance(node, ContainerKafka)
    # The testbed's listener: published on 127.0.0.1 and advertised as itself.
    assert node.admin.brokers() == {1: node.bootstrap}
    assert node.bootstrap == f"127.0.0.1:{node.port}"
    bindings = node.container.attrs["HostConfig"]["PortBindings"]
    assert {b["HostIp"] for values in bindings.values() for b in values} == {"127.0.0.1"}
    assert set(node.admin.topics()) == {"order.placed", "payments.done"}
    # Every service bootstraps at its own proxy, inside the network.
    for name in ("gateway", "payments", "inventory"):
        kafka = service_config(pipeline, name)["kafka"]
        assert kafka == {"bootstrap": f"toxiproxy:{pipeline.proxies[f'{name}-broker'].listen_port}",
                         "partitions": 3}, name
        assert pipeline.proxies[f"{name}-broker"].upstream.startswith("kafka:")
    ids = place(pipeline, "flow", 30)
    assert eventually(lambda: processed(pipeline, "inventory") >= set(ids), 30)
    assert processed(pipeline, "payments") >= set(ids)
    assert all(count == 1 for count in pipeline.ledger("inventory").values())
    assert eventually(lambda: lag(pipeline) == {"payments": 0, "inventory": 0}, 10)
    print(f"kafka container boot: {runtime.timings[f'kafka_{pipeline.id}_boot_s']:.1f} s, "
          f"deploy: {runtime.timings[f'deploy_{pipeline.id}_s']:.1f} s")


def test_a_cut_payments_link_stops_payments_alone(pipeline: Deployment) -> None:
    """Every connection payments makes crosses its proxy: cut it and payments stops
    (its lag grows), the gateway still answers 202; healed, payments catches up."""
    place(pipeline, "warm", 3)
    assert eventually(lambda: lag(pipeline) == {"payments": 0, "inventory": 0}, 20)
    cut = make_fault(pipeline, "link_down", "payments-broker")
    cut.inject()
    try:
        assert cut.verify().ok
        before = processed(pipeline, "payments")
        ids = place(pipeline, "cut", 12)  # 202 each: the gateway's own link is whole
        time.sleep(1.5)
        assert not processed(pipeline, "payments") & set(ids)
        assert processed(pipeline, "payments") == before
        assert lag(pipeline)["payments"] == 12
    finally:
        cut.remove()
    assert eventually(lambda: set(ids) <= processed(pipeline, "inventory"), 30)
    assert eventually(lambda: lag(pipeline)["payments"] == 0, 10)


def test_broker_down_and_back(pipeline: Deployment) -> None:
    """broker_down stops the Kafka container (its data stays): the port refuses, an
    order is refused after the gateway's produce timeout, and after the start the
    topics and committed offsets are as they were and orders flow again."""
    assert pipeline.kafka is not None
    node = pipeline.kafka.node
    done_before = processed(pipeline, "inventory")
    down = make_fault(pipeline, "broker_down", "")
    down.inject()
    try:
        assert down.verify().ok
        assert not node.running()
        started = time.monotonic()
        response = pipeline.place_order("down-1")
        assert response.status_code == 503, response.text
        assert time.monotonic() - started < 8
    finally:
        down.remove()
    assert node.running()
    assert set(node.admin.topics()) == {"order.placed", "payments.done"}
    ids = place(pipeline, "after", 6)
    flowed = eventually(lambda: set(ids) <= processed(pipeline, "inventory"), 60)
    assert flowed, where_orders_stopped(pipeline, set(ids))
    assert not (done_before & set(ids))
    # Nothing committed before the stop is handled twice after it.
    assert all(count == 1 for count in pipeline.ledger("inventory").values())


def test_nothing_is_left_behind(docker_client: docker.DockerClient) -> None:
    """A deployment's Kafka container carries the run's labels: the deployment's close
    removes it with the rest, the runtime's close leaves nothing of the run."""
    with get_runtime("docker") as runtime:
        deployment = runtime.deploy(async_pipeline(1, broker="kafka"))
        run = f"{LABEL_RUN}={runtime.run_id}"
        kafka = docker_client.containers.list(filters={"label": [run, f"{LABEL_ROLE}=kafka"]})
        assert len(kafka) == 1 and kafka[0].labels[LABEL_DEPLOYMENT] == deployment.id
        assert kafka[0].labels[LABEL_CONTROLLER]  # what the watchdog and `testbed gc` judge
        assert of_deployment(docker_client, run, deployment.id)
        deployment.close()
        assert of_deployment(docker_client, run, deployment.id) == []
        run_id = runtime.run_id
    assert labelled_objects(docker_client, f"{LABEL_RUN}={run_id}") == []


def test_without_kafka_jars_the_image_and_the_topology_name_setup(
        docker_client: docker.DockerClient, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    """No jars: `testbed images build` fails naming `testbed setup`; the runtime still
    opens (the other images need none) and refuses a Kafka topology, leaving nothing."""
    monkeypatch.setenv(KAFKA_LIBS_ENV, str(tmp_path))  # a directory with no Kafka jars
    recipe = recipes("offline")["kafka"]
    assert recipe.unavailable is not None and "`testbed setup`" in recipe.unavailable
    with pytest.raises(ComponentError, match=r"Kafka jars not found.*`testbed setup`"):
        build_images(client=docker_client, source="offline")
    with get_runtime("docker") as runtime:
        with pytest.raises(ComponentError, match=r"kafka image.*Kafka's jars.*`testbed setup`"):
            runtime.deploy(async_pipeline(1, broker="kafka"))
        assert labelled_objects(docker_client, f"{LABEL_RUN}={runtime.run_id}") == []


def test_a_rootfs_without_java_is_refused_naming_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ComponentError, match=r"no java.*Fix:.*openjdk-17-jre-headless"):
        _require_java(tmp_path)
