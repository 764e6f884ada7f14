"""The docker runtime end to end, with a real engine, real images, Toxiproxy and RabbitMQ.

The engine is started by the test when none answers (installing Debian's docker.io if
needed, as `testbed setup` does); the tests skip only when no engine can be started.
Images come from the offline build (cached; built on first use).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import psutil
import pytest

from testbed.errors import ComponentError, StartupError
from testbed.faults import Timeline, injected, make_fault
from testbed.faults.broker import ready_count
from testbed.images import build_images, resolve_source
from testbed.images.official import base_images, registry_problem
from testbed.runtime import Deployment, get_runtime
from testbed.runtime.docker import (
    LABEL_RUN,
    SERVICE_CONFIG_PATH,
    TOXIPROXY_API_PORT,
    DockerRuntime,
    collect_docker_garbage,
    compose_project,
    write_compose,
)
from testbed.runtime.sweep import collect_garbage
from testbed.topology import Knobs, async_pipeline, paired, sync_chain

from .conftest import eventually, labelled_objects, leftovers

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def client(docker_client: docker.DockerClient) -> docker.DockerClient:
    return docker_client


@pytest.fixture(scope="module")
def runtime(client: docker.DockerClient) -> Iterator[DockerRuntime]:
    opened = get_runtime("docker")
    assert isinstance(opened, DockerRuntime)
    with opened:
        yield opened
    assert labelled(client, opened.run_id) == []


def labelled(client: docker.DockerClient, run_id: str) -> list[str]:
    """Every container, network and volume of a run that still exists."""
    return labelled_objects(client, f"{LABEL_RUN}={run_id}")


def timed_order(deployment: Deployment, order_id: str) -> tuple[int, float]:
    started = time.monotonic()
    status = deployment.place_order(order_id).status_code
    return status, time.monotonic() - started


def test_an_order_goes_end_to_end_through_both_topologies(runtime: DockerRuntime) -> None:
    pair = paired()
    with runtime.deploy(pair.sync) as sync, runtime.deploy(pair.async_) as asynchronous:
        answer = sync.place_order("order-sync-1")
        assert answer.status_code == 200, answer.text
        assert answer.json()["path"] == ["gateway", "orders", "payments", "inventory"]
        assert sync.ledgers() == {name: {"order-sync-1": 1}
                                  for name in ("gateway", "orders", "payments", "inventory")}

        assert asynchronous.place_order("order-async-1").status_code == 202
        assert eventually(lambda: "order-async-1" in asynchronous.ledger("notification"), 30)
        assert asynchronous.ledgers() == {
            name: {"order-async-1": 1}
            for name in ("gateway", "payments", "inventory", "notification")}
        broker = asynchronous.broker
        assert broker is not None
        assert all(ready_count(broker, queue) == 0 for queue in broker.queues)
        # Every published port is on the host's loopback only.
        for container in runtime.client.containers.list(
                filters={"label": f"{LABEL_RUN}={runtime.run_id}"}):
            for bindings in (container.attrs["HostConfig"]["PortBindings"] or {}).values():
                assert all(b["HostIp"] == "127.0.0.1" for b in bindings), container.name
    assert not [d for d in runtime._deployments if d.id in (sync.id, asynchronous.id)]


def test_latency_toxic_and_kill_take_effect_and_are_undone(runtime: DockerRuntime) -> None:
    with runtime.deploy(sync_chain(2, knobs=Knobs(timeout_s=1.0))) as chain:
        assert chain.place_order("warm-up").status_code == 200
        timeline = Timeline()
        with injected(make_fault(chain, "latency", "gateway-orders", latency=300), timeline):
            status, seconds = timed_order(chain, "slow")
            assert status == 200 and seconds >= 0.3
        status, seconds = timed_order(chain, "fast")
        assert status == 200 and seconds < 0.25
        assert [e.kind for e in timeline.events] == ["inject", "verify", "remove"]

        with injected(make_fault(chain, "kill", "payments"), timeline):
            assert not chain.service("payments").running()
            assert chain.place_order("while-killed").status_code == 502
        assert chain.service("payments").running()
        assert chain.place_order("after-kill").status_code == 200
        # The container kept its files through the crash: the ledger has both sides of it.
        assert {"warm-up", "after-kill"} <= set(chain.ledger("payments"))


def test_resource_knobs_limit_the_container_and_a_partition_cuts_it_off(
        runtime: DockerRuntime) -> None:
    limited = Knobs(cpus=0.5, memory_mb=128, timeout_s=1.0)
    chain = runtime.deploy(sync_chain(2, knobs=Knobs(timeout_s=1.0),
                                      overrides={"payments": limited}))
    try:
        payments = chain.services["payments"]
        host = payments.container.attrs["HostConfig"]  # type: ignore[attr-defined]
        assert host["NanoCpus"] == 500_000_000 and host["Memory"] == 128 * 1024 * 1024
        assert chain.place_order("before").status_code == 200
        timeline = Timeline()
        with injected(make_fault(chain, "partition", "payments"), timeline):
            cut = chain.place_order("during")
            assert cut.status_code in (502, 504), cut.text
        assert chain.place_order("after").status_code == 200
        assert [e.kind for e in timeline.events] == ["inject", "verify", "remove"]
    finally:
        chain.close()


def test_service_handles_pause_stop_and_restart(runtime: DockerRuntime) -> None:
    with runtime.deploy(sync_chain(2, knobs=Knobs(timeout_s=3.0),
                                   overrides={"orders": Knobs(timeout_s=0.5)})) as chain:
        payments = chain.service("payments")
        payments.pause()
        answer = chain.place_order("paused")
        assert answer.status_code == 502
        assert "timed out after 0.5 s" in answer.json()["error"]
        payments.resume()
        assert chain.place_order("resumed").status_code == 200
        payments.stop()
        assert not payments.running()
        payments.start()
        payments.restart()
        assert chain.place_order("restarted").status_code == 200


def test_broker_control_alarm_and_broker_down(runtime: DockerRuntime) -> None:
    """BrokerControl on the container: a memory alarm via rabbitmqctl, a crash and back."""
    pair = paired(depth=1)
    with runtime.deploy(pair.async_) as pipeline:
        broker = pipeline.broker
        assert broker is not None
        with injected(make_fault(pipeline, "memory_alarm", "")):
            # The publisher was blocked (verified); the node's stats show it a moment later.
            assert eventually(broker.control.memory_alarm, 10)
        assert not broker.control.memory_alarm()
        assert pipeline.place_order("after-alarm").status_code == 202
        assert eventually(lambda: "after-alarm" in pipeline.ledger("payments"), 30)

        with injected(make_fault(pipeline, "broker_down", "", graceful=False)):
            assert not broker.control.running()
        assert broker.control.running()
        # Same vhost, queues and user after the restart: the consumer reconnects and works.
        assert eventually(lambda: pipeline.place_order("after-crash").status_code == 202, 30)
        assert eventually(lambda: "after-crash" in pipeline.ledger("payments"), 60)


def test_a_failed_deploy_leaves_nothing_of_itself(runtime: DockerRuntime) -> None:
    """Services that exit at once (the bare python image, no service in it): the deploy
    fails naming the container, after its network, Toxiproxy and containers existed."""
    before = labelled(runtime.client, runtime.run_id)
    images = dict(runtime._images)
    runtime._images["service"] = images["python-base"]
    try:
        with pytest.raises(StartupError, match=r"container tb-\w+-sync\d+-\w+ is exited"):
            runtime.deploy(sync_chain(1))
    finally:
        runtime._images.update(images)
    assert labelled(runtime.client, runtime.run_id) == before


def test_readiness_error_carries_the_container_log(runtime: DockerRuntime) -> None:
    from testbed.runtime.docker import wait_ready

    container = runtime.client.containers.run(
        runtime._images["service"], ["python", "-c", "print('about to fail'); raise SystemExit(3)"],
        detach=True, labels=runtime.labels("service", "probe", "probe"))
    try:
        with pytest.raises(StartupError) as caught:
            wait_ready(container, lambda: False, "service probe", 20)
        assert "about to fail" in str(caught.value)
        assert "exit code 3" in str(caught.value)
    finally:
        container.remove(force=True)


def test_teardown_leaves_nothing_even_when_the_body_raises(
        client: docker.DockerClient) -> None:
    runtime = DockerRuntime()
    with pytest.raises(RuntimeError, match="boom"), runtime:
        pair = paired(depth=1)
        runtime.deploy(pair.sync)
        runtime.deploy(pair.async_)
        assert len(labelled(client, runtime.run_id)) >= 8  # 4 services, 2 proxies, broker, nets
        raise RuntimeError("boom")
    assert labelled(client, runtime.run_id) == []
    assert leftovers(runtime.run_id) == []


CONTROLLER = textwrap.dedent("""
    import sys, time
    from testbed.runtime.docker import DockerRuntime
    from testbed.topology import sync_chain
    runtime = DockerRuntime()
    runtime.open()
    runtime.deploy(sync_chain(1))
    print("up", runtime.run_id, runtime._watchdog.pid, flush=True)
    time.sleep(600)
""")


@contextlib.contextmanager
def controller() -> Iterator[tuple[subprocess.Popen[str], str, int]]:
    """A separate controller process with a deployment up; yields (process, run, watchdog)."""
    with subprocess.Popen([sys.executable, "-c", CONTROLLER], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        try:
            lines = []
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                line = proc.stdout.readline()
                lines.append(line)
                if line.startswith("up "):
                    _, run_id, watchdog = line.split()
                    yield proc, run_id, int(watchdog)
                    return
                if not line and proc.poll() is not None:
                    break
            raise AssertionError("the controller did not come up:\n" + "".join(lines))
        finally:
            if proc.poll() is None:
                proc.kill()


def test_the_watchdog_removes_the_containers_of_a_sigkilled_controller(
        client: docker.DockerClient) -> None:
    with controller() as (proc, run_id, _):
        assert len(labelled(client, run_id)) == 4  # 2 services, toxiproxy, network
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        assert eventually(lambda: labelled(client, run_id) == [], 30), labelled(client, run_id)
        assert eventually(lambda: leftovers(run_id) == [], 10)


def test_gc_removes_what_a_sigkilled_controller_left(client: docker.DockerClient) -> None:
    """With the watchdog dead too, only gc can remove the objects. Another test's gc
    (a concurrent xdist worker) may start on them as soon as the controller dies, so
    they are counted while it lives and gc is judged by what is left afterwards."""
    with controller() as (proc, run_id, watchdog):
        os.kill(watchdog, signal.SIGKILL)  # nobody cleans up now: it is gc's job
        with contextlib.suppress(psutil.Error):
            psutil.Process(watchdog).wait(5)
        assert len(labelled(client, run_id)) == 4  # the controller lives: nobody sweeps
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        collect_docker_garbage(client)  # what `testbed gc` does: the engine's objects,
        collect_garbage()  # then the run's files and port reservations
        assert eventually(lambda: labelled(client, run_id) == [], 10), labelled(client, run_id)
        assert leftovers(run_id) == []


# -- compose/ must not drift from what the controller creates -----------------------------

COMPOSE_DIR = Path(__file__).resolve().parents[2] / "compose"
SHAPES = {"sync": lambda: [sync_chain()], "async": lambda: [async_pipeline()],
          "paired": lambda: list(paired())}


def test_official_images_are_refused_without_a_registry_and_nothing_is_built(
        client: docker.DockerClient) -> None:
    """Here no registry answers: `--source official` names why and the fix, builds nothing,
    and `auto` takes the offline images."""
    problem = registry_problem(client)
    if problem is None:
        pytest.skip("a registry answers on this machine: the official build applies")
    assert base_images()["service"] in problem
    official = {"label": "testbed.source=official"}
    before = {image.id for image in client.images.list(filters=official)}
    with pytest.raises(ComponentError, match=r"official images cannot be built.*--source offline"):
        build_images(client=client, source="official")
    assert {image.id for image in client.images.list(filters=official)} == before
    assert resolve_source(client, "auto") == "offline"


def test_compose_files_are_what_the_generator_writes(tmp_path: Path) -> None:
    for shape, build in SHAPES.items():
        written = write_compose(tmp_path / shape, build())
        expected = {p.relative_to(tmp_path / shape): p.read_text() for p in written}
        committed = {p.relative_to(COMPOSE_DIR / shape): p.read_text()
                     for p in (COMPOSE_DIR / shape).rglob("*") if p.is_file()}
        assert committed == expected, (f"compose/{shape} drifted from the runtime: run "
                                       "`.venv/bin/python compose/generate.py`")


def _file_in(container: Any, path: str) -> str:
    stream, _ = container.get_archive(path)
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
        member = archive.extractfile(archive.getmembers()[0])
        assert member is not None
        return member.read().decode()


def _normalised(config: dict[str, Any], port_to_link: dict[int, str]) -> dict[str, Any]:
    """A service config with run-specific values (proxy ports, vhost, credentials) named."""
    config = json.loads(json.dumps(config))
    url = config.get("downstream_url")
    if url and url.startswith("http://toxiproxy:"):
        config["downstream_url"] = "proxy " + port_to_link[int(url.rsplit(":", 1)[1])]
    if config.get("amqp"):
        amqp = config["amqp"]
        if amqp["host"] == "toxiproxy":
            amqp["port"] = port_to_link[amqp["port"]]
        amqp.update(vhost="V", user="U", password="P")
    return config


def test_the_controller_creates_what_compose_describes(runtime: DockerRuntime) -> None:
    model = json.loads(json.dumps(compose_project(list(paired()))[0]))
    files = compose_project(list(paired()))[1]
    pair = paired()
    with runtime.deploy(pair.sync) as sync, runtime.deploy(pair.async_) as asynchronous:
        for deployment in (sync, asynchronous):
            net = deployment.topology.name
            compose_proxies = json.loads(files[f"config/{net}/toxiproxy.json"])
            compose_ports = {int(p["listen"].rsplit(":", 1)[1]): p["name"].split(".", 1)[1]
                             for p in compose_proxies}
            run_ports = {e.listen_port: name for name, e in deployment.proxies.items()}
            # Proxies: the same links with the same upstreams.
            assert {p["name"].split(".", 1)[1]: p["upstream"] for p in compose_proxies} == {
                name: e.upstream for name, e in deployment.proxies.items()}
            containers = runtime.client.containers.list(filters={"label": [
                f"{LABEL_RUN}={runtime.run_id}", f"testbed.deployment={deployment.id}"]})
            by_alias = {}
            for container in containers:
                networks = container.attrs["NetworkSettings"]["Networks"]
                (endpoint,) = [v for k, v in networks.items() if k.endswith(deployment.id)]
                alias = next(a for a in endpoint["Aliases"] if a in
                             {*deployment.services, "toxiproxy"})
                by_alias[alias] = container
            assert set(by_alias) == {*deployment.services, "toxiproxy"}
            for alias, container in by_alias.items():
                entry = model["services"][f"{net}-{alias}"]
                assert entry["networks"][net]["aliases"] == [alias]
                assert container.image.tags and any(
                    t.split(":")[0] == entry["image"].split(":")[0] for t in container.image.tags)
                inner = {int(p.rsplit(":", 1)[1]) for p in entry["ports"]} if alias != \
                    "toxiproxy" else {TOXIPROXY_API_PORT}
                published = {int(k.split("/")[0]) for k in container.attrs["HostConfig"]
                             ["PortBindings"]}
                assert inner <= published
                if alias == "toxiproxy":
                    continue
                inside = json.loads(_file_in(container, SERVICE_CONFIG_PATH))
                composed = json.loads(files[f"config/{net}/{alias}.json"])
                assert _normalised(inside, run_ports) == _normalised(composed, compose_ports)
        # The broker: the same exchanges, queues (with arguments) and bindings.
        broker = asynchronous.broker
        assert broker is not None
        definitions = json.loads(files["config/broker/definitions.json"])
        queues = {q["name"]: q["arguments"] for q in definitions["queues"]}
        live = broker.admin._request("GET", f"/queues/{broker.admin._q(broker.vhost)}").json()
        assert {q["name"]: q["arguments"] for q in live} == queues
        assert "broker" in model["services"]
