"""Removing a run's namespace: its own close, its watchdog, and `testbed gc`.

A run owns exactly one namespace (labelled ``testbed.run`` and ``testbed.controller``),
so removing the run from the cluster is deleting that namespace; the pods go first with
no grace, so the namespace does not wait out each pod's termination grace.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from testbed.errors import ComponentError
from testbed.runs import RUN_ID_ENV
from testbed.runtime.docker.containers import LABEL_CONTROLLER, LABEL_RUN
from testbed.runtime.docker.plan import controller_alive
from testbed.runtime.k8s.api import Cluster, connect
from testbed.runtime.k8s.manifests import TEARDOWN_GRACE_S, controller_of, namespace_name

NAMESPACE_GONE_TIMEOUT_S = 60.0
GC_CONNECT_TIMEOUT_S = 3.0


def delete_namespace(cluster: Cluster, namespace: str,
                     timeout: float = NAMESPACE_GONE_TIMEOUT_S) -> bool:
    """Delete the namespace (its pods with TEARDOWN_GRACE_S) and wait until it is gone,
    the node done with its pods; True when it was there. ComponentError when it outlives
    ``timeout``."""
    core = cluster.core
    if cluster.call(f"reading namespace {namespace}",
                    lambda: core.read_namespace(namespace), ok=(404,)) is None:
        return False
    cluster.call(f"deleting the pods of {namespace}", lambda: (
        core.delete_collection_namespaced_pod(namespace, grace_period_seconds=TEARDOWN_GRACE_S)),
        ok=(404,))
    cluster.call(f"deleting namespace {namespace}", lambda: core.delete_namespace(
        namespace, grace_period_seconds=0, propagation_policy="Background"), ok=(404, 409))
    deadline = time.monotonic() + timeout
    while cluster.call(f"reading namespace {namespace}", lambda: core.read_namespace(namespace),
                       ok=(404,)) is not None:
        if time.monotonic() > deadline:
            raise ComponentError(f"namespace {namespace} was still there {timeout:.0f} s after "
                                 "its deletion (is kube-controller-manager running?)")
        time.sleep(0.2)
    return True


def run_namespaces(cluster: Cluster) -> list[tuple[str, str, str]]:
    """(namespace, run id, controller) of every namespace labelled with a run."""
    found = cluster.call("listing the testbed's namespaces", lambda: (
        cluster.core.list_namespace(label_selector=LABEL_RUN)))
    result = []
    for namespace in getattr(found, "items", []):
        labels = namespace.metadata.labels or {}
        annotations = namespace.metadata.annotations or {}
        controller = annotations.get(LABEL_CONTROLLER) or controller_of(
            labels.get(LABEL_CONTROLLER, ""))
        result.append((namespace.metadata.name, labels.get(LABEL_RUN, "?"), controller))
    return result


@contextlib.contextmanager
def _cluster_or_none() -> Iterator[Cluster | None]:
    """The configured cluster, or None when there is none or it does not answer: gc and
    status then say nothing about Kubernetes."""
    try:
        cluster = connect(timeout=GC_CONNECT_TIMEOUT_S)
    except ComponentError:
        yield None
        return
    try:
        yield cluster
    finally:
        cluster.close()


def dead_run_namespaces() -> dict[str, list[str]]:
    """Run id -> ["namespace <name>"] for each run namespace whose controller is dead
    (what `testbed status` lists and gc removes). No cluster: none."""
    with _cluster_or_none() as cluster:
        if cluster is None:
            return {}
        return {run_id: [f"namespace {name}"] for name, run_id, controller
                in run_namespaces(cluster) if not controller_alive(controller)}


def collect_k8s_garbage(remove: bool = True) -> list[str]:
    """What `testbed gc` calls: delete every run namespace whose controller is dead;
    with ``remove=False`` only name them (`gc --check`). No cluster: nothing."""
    with _cluster_or_none() as cluster:
        if cluster is None:
            return []
        dead = [name for name, _, controller in run_namespaces(cluster)
                if not controller_alive(controller)]
        if remove:
            for name in dead:
                delete_namespace(cluster, name)
        return [f"namespace {name}" for name in dead]


def spawn_watchdog(run_id: str, kubeconfig: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """Start the run's watchdog: on the controller's death it deletes the run's namespace,
    then sweeps its files, ports and processes (the port-forwards)."""
    env = {k: v for k, v in os.environ.items() if k != RUN_ID_ENV}
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "testbed.runtime.k8s", "watch", run_id, str(kubeconfig)],
            stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)


def watch(run_id: str, kubeconfig: Path) -> int:
    from testbed.runtime.sweep import sweep_run
    from testbed.runtime.watchdog import wait_for_controller

    wait_for_controller(run_id)
    report = sweep_run(run_id)  # the port-forwards first: they would retry the pods
    namespace = namespace_name(run_id)
    try:
        cluster = connect(kubeconfig)
        try:
            removed = delete_namespace(cluster, namespace)
        finally:
            cluster.close()
        said = f"namespace {namespace} deleted" if removed else ""
    except ComponentError as exc:
        said = f"(cluster unreachable: {exc})"
    if said or not report.empty():
        print(f"watchdog swept run {run_id}: {said} {report}", flush=True)
    return 0
