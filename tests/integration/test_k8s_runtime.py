"""The k8s runtime on a real cluster: a paired topology in pods, reached only through
port-forwards on 127.0.0.1; faults through Toxiproxy, a service's process killed,
frozen and started again in its pod, the broker halted and started; nothing left after
close. Runs with ``--runtime k8s`` only (the conftest skips it otherwise)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from testbed.faults import Timeline, injected, make_fault
from testbed.faults.base import FaultSpecError
from testbed.runtime import Runtime, get_runtime
from testbed.runtime.docker.containers import LABEL_DEPLOYMENT, LABEL_RUN
from testbed.runtime.k8s import K8sRuntime
from testbed.runtime.k8s.api import connect
from testbed.runtime.k8s.handles import PodService
from testbed.topology import Knobs, load_topology, paired, sync_chain

from .conftest import Deploy, eventually, leftovers

pytestmark = pytest.mark.k8s
OWN_EXAMPLE = Path(__file__).parents[2] / "examples" / "own-service-go"


def _k8s(runtime: Runtime) -> K8sRuntime:
    assert isinstance(runtime, K8sRuntime)
    return runtime


def test_a_paired_topology_runs_in_pods_of_its_own_namespace(
        deploy: Deploy, testbed_runtime: Runtime) -> None:
    runtime = _k8s(testbed_runtime)
    pair = paired()
    started = time.monotonic()
    sync, asynchronous = deploy(pair.sync), deploy(pair.async_)
    print(f"paired deploy on k8s: {time.monotonic() - started:.1f} s "
          f"(timings {runtime.timings})")

    answer = sync.place_order("k8s-sync-1")
    assert answer.status_code == 200, answer.text
    assert answer.json()["path"] == ["gateway", "orders", "payments", "inventory"]
    assert asynchronous.place_order("k8s-async-1").status_code == 202
    assert eventually(lambda: "k8s-async-1" in asynchronous.ledger("notification"), 30)
    assert all(url.startswith("http://127.0.0.1:") for url in sync.endpoints().values())

    pods = runtime.cluster.core.list_namespaced_pod(
        runtime.namespace, label_selector=f"{LABEL_DEPLOYMENT}={sync.id}").items
    roles = sorted(p.metadata.labels["testbed.role"] for p in pods)
    assert roles == ["service"] * 4 + ["toxiproxy"]
    for pod in pods:
        assert pod.metadata.labels[LABEL_RUN] == runtime.run_id
        assert pod.spec.host_network is not True
        assert not any(v.host_path for v in pod.spec.volumes or [])
        aliases = {h for entry in pod.spec.host_aliases or [] for h in entry.hostnames}
        assert "toxiproxy" in aliases or pod.metadata.labels["testbed.role"] == "toxiproxy"


def test_a_latency_toxic_is_seen_at_the_edge(deploy: Deploy) -> None:
    chain = deploy(sync_chain(1, knobs=Knobs(timeout_s=2.0)))
    assert chain.place_order("warm").status_code == 200
    with injected(make_fault(chain, "latency", "gateway-orders", latency=300)):
        started = time.monotonic()
        assert chain.place_order("slow").status_code == 200
        assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    assert chain.place_order("fast").status_code == 200
    assert time.monotonic() - started < 0.3


def test_kill_ends_the_process_and_start_runs_it_again_in_the_same_pod(
        deploy: Deploy, testbed_runtime: Runtime) -> None:
    runtime = _k8s(testbed_runtime)
    chain = deploy(sync_chain(1, knobs=Knobs(timeout_s=0.5)))
    orders = chain.service("orders")
    assert isinstance(orders, PodService)
    assert chain.place_order("before").status_code == 200
    pod = runtime.pods().read(orders.pod)
    before = (pod.metadata.uid, pod.status.pod_ip)
    timeline = Timeline()
    with injected(make_fault(chain, "kill", "orders"), timeline):
        assert not orders.running()
        assert runtime.pods().state(orders.pod).running  # the pod stays, its loop waits
        assert chain.place_order("dead").status_code == 502
    assert "refused" in timeline.of_kind("verify")[0].detail
    started = time.monotonic()
    orders.kill()
    orders.start()
    print(f"kill -> ready on k8s: {time.monotonic() - started:.1f} s")
    pod = runtime.pods().read(orders.pod)
    assert (pod.metadata.uid, pod.status.pod_ip) == before
    assert chain.place_order("alive").status_code == 200
    # the ledger file outlived both kills, read through the forward started again
    assert set(chain.ledger("orders")) == {"before", "alive"}
    assert not orders.ledger_reset and chain.unaudited == ()


def test_pause_freezes_the_process_until_resumed(deploy: Deploy) -> None:
    chain = deploy(sync_chain(1, knobs=Knobs(timeout_s=0.5)))
    assert chain.place_order("warm").status_code == 200
    with injected(make_fault(chain, "pause", "orders")):
        frozen = chain.place_order("frozen")
        assert frozen.status_code == 504, frozen.text  # the gateway gave up after 0.5 s
        assert chain.service("orders").running()  # frozen, not gone
    assert chain.place_order("thawed").status_code == 200


def test_pause_of_an_own_image_is_refused_by_name(deploy: Deploy) -> None:
    chain = deploy(load_topology(OWN_EXAMPLE / "sync.toml"))
    with pytest.raises(FaultSpecError, match="only the testbed's services can be frozen"):
        make_fault(chain, "pause", "payments")


def test_broker_halt_and_start_keep_its_data(deploy: Deploy) -> None:
    pair = paired(depth=1)
    deployment = deploy(pair.async_)
    assert deployment.place_order("before").status_code == 202
    timeline = Timeline()
    for graceful in (True, False):
        with injected(make_fault(deployment, "broker_down", "", graceful=graceful), timeline):
            assert deployment.place_order(f"during-{graceful}").status_code == 503
        assert eventually(lambda: deployment.place_order(f"after-{time.monotonic()}")
                          .status_code == 202, timeout=60)
    assert all("refused" in e.detail for e in timeline.of_kind("verify"))
    assert eventually(lambda: "before" in deployment.ledger("payments"), 30)
    assert deployment.broker is not None
    assert deployment.broker.queue_state("payments") is not None  # vhost and queue kept


def test_close_leaves_no_namespace_and_no_process() -> None:
    runtime = get_runtime("k8s")
    assert isinstance(runtime, K8sRuntime)
    with runtime:
        chain = runtime.deploy(sync_chain(1))
        assert chain.place_order("one").status_code == 200
        assert leftovers(runtime.run_id)  # the forwards, at least
    cluster = connect()
    try:
        found = cluster.core.list_namespace(label_selector=f"{LABEL_RUN}={runtime.run_id}")
        assert found.items == []
    finally:
        cluster.close()
    assert leftovers(runtime.run_id) == []
