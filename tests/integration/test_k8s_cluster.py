"""The testbed's own Kubernetes cluster, as `testbed setup --k8s` left it: a real node,
every listener on loopback, and a stop that leaves nothing on the machine, then a start
that brings it back. Runs only when chosen (``-m k8s_cluster``, the end of `make
test-k8s`): a stop in the middle of another session would pull the cluster from under it."""

from __future__ import annotations

import contextlib
import subprocess
import time

import psutil
import pytest
import requests

from testbed.components.kube.build import KUBE_VERSION
from testbed.components.kube.cluster import CLUSTER_TAG, Cluster
from testbed.components.kube.config import BRIDGE, COMPONENTS

pytestmark = pytest.mark.k8s_cluster


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> Cluster:
    if "k8s_cluster" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("stops the k8s cluster: run with -m k8s_cluster (make test-k8s does)")
    found = Cluster()
    if not found.running():
        pytest.skip("the testbed's k8s cluster is not running: `testbed setup --k8s`")
    return found


def _listeners(pid: int) -> set[str]:
    """Addresses the process (and its children) listen on."""
    found = set()
    processes = [psutil.Process(pid)]
    with contextlib.suppress(psutil.Error):
        processes += processes[0].children(recursive=True)
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    found.add(conn.laddr.ip)
    return found


def _cluster_processes(cluster: Cluster) -> list[str]:
    left = []
    for proc in psutil.process_iter(["pid", "name"]):
        with contextlib.suppress(psutil.Error):
            if proc.environ().get(CLUSTER_TAG) == str(cluster.home):
                left.append(f"{proc.pid} {proc.name()}")
    return left


def test_a_real_node_of_the_pinned_version_with_loopback_listeners(cluster: Cluster) -> None:
    assert cluster.node_ready()
    version = requests.get(cluster.api_url() + "/version", timeout=5,
                           verify=str(cluster.layout.pki.path("ca.crt"))).json()
    assert version["gitVersion"] == KUBE_VERSION
    for state in cluster.components():
        assert state.pid is not None, f"{state.name} is down"
        listening = _listeners(state.pid)
        assert listening <= {"127.0.0.1"}, f"{state.name} listens on {listening}"


def test_stop_leaves_nothing_and_start_brings_it_back(cluster: Cluster) -> None:
    problems = cluster.stop()
    assert problems == []
    assert [s.name for s in cluster.components() if s.pid is not None] == []
    assert _cluster_processes(cluster) == []
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True,
                           check=True).stdout
    assert BRIDGE not in links
    mounts = [p.mountpoint for p in psutil.disk_partitions(all=True)
              if p.mountpoint.startswith(str(cluster.home))]
    assert mounts == []
    started = time.monotonic()
    timings = cluster.start()
    boot = time.monotonic() - started
    assert set(timings) == {*COMPONENTS, "node_ready"}
    assert cluster.node_ready()
    print(f"k8s cluster boot (stopped -> node Ready): {boot:.1f} s: {timings}")
