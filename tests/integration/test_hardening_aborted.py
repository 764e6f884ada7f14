"""The testbed's own components dying mid-experiment: a clear aborted verdict, no hang.

Each test opens a runtime of its own (the session's would be broken for the next test),
on the runtime the session runs (`--runtime`), kills a component from outside, as a
crash would, and checks that the trial stops within seconds with ExperimentAborted
naming the component, and that closing the runtime still leaves nothing behind.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import psutil
import pytest

from testbed.errors import ExperimentAborted
from testbed.faults import Planned, make_fault
from testbed.load import constant
from testbed.observe import run_trial
from testbed.runs import tagged_processes
from testbed.runtime import Deployment, Runtime, get_runtime
from testbed.topology import async_pipeline, sync_chain

from .conftest import leftovers

pytest_plugins = ["pytester"]

LOAD_S = 3.0
HANG_BOUND_S = 20.0  # load + grace + the removal's own timeouts; drain alone would be 30


@pytest.fixture
def own_runtime(request: pytest.FixtureRequest) -> Iterator[Runtime]:
    runtime = get_runtime(request.config.getoption("--runtime"))
    runtime.open()
    try:
        yield runtime
    finally:
        runtime.close()
        if runtime.name == "local":
            assert leftovers(runtime.run_id) == []


def kill_component(runtime: Runtime, deployment: Deployment, role: str) -> None:
    """SIGKILL the run's broker or Toxiproxy from outside the testbed, as a crash would."""
    if runtime.name == "docker":
        from testbed.runtime.docker import LABEL_RUN
        from testbed.runtime.docker.containers import LABEL_DEPLOYMENT, LABEL_ROLE

        labels = [f"{LABEL_RUN}={runtime.run_id}", f"{LABEL_ROLE}={role}"]
        if role == "toxiproxy":
            labels.append(f"{LABEL_DEPLOYMENT}={deployment.id}")
        client = runtime.client  # type: ignore[attr-defined]
        (container,) = client.containers.list(filters={"label": labels})
        container.kill()
        return
    name = {"broker": "beam.smp", "toxiproxy": "toxiproxy-server"}[role]
    victims = [p for p in tagged_processes(runtime.run_id) if p.name() == name]
    assert victims, f"no {name} process of run {runtime.run_id}"
    for victim in victims:
        victim.kill()
    psutil.wait_procs(victims, timeout=10)


def later(seconds: float, action: Callable[[], None]) -> threading.Timer:
    timer = threading.Timer(seconds, action)
    timer.start()
    return timer


@pytest.mark.kills_by_process
def test_a_broker_that_dies_mid_experiment_aborts_the_trial(own_runtime: Runtime) -> None:
    deployment = own_runtime.deploy(async_pipeline(2))
    timer = later(1.0, lambda: kill_component(own_runtime, deployment, "broker"))
    started = time.monotonic()
    try:
        with pytest.raises(ExperimentAborted, match=r"ABORTED .*broker") as aborted:
            run_trial(deployment, constant(20, LOAD_S), [], drain_timeout_s=30.0)
    finally:
        timer.join()
    elapsed = time.monotonic() - started
    print(f"aborted after {elapsed:.1f} s: {aborted.value}")
    assert elapsed < HANG_BOUND_S
    assert "no verdict" in str(aborted.value)
    deployment.close()


@pytest.mark.kills_by_process
def test_toxiproxy_dying_during_a_fault_aborts_the_trial(own_runtime: Runtime) -> None:
    deployment = own_runtime.deploy(sync_chain(2))
    link = deployment.topology.links[-1].name
    plan = [Planned(make_fault(deployment, "latency", link, latency=100), at=0.5, duration=2.0)]
    timer = later(1.5, lambda: kill_component(own_runtime, deployment, "toxiproxy"))
    started = time.monotonic()
    try:
        with pytest.raises(ExperimentAborted, match=r"ABORTED while removing the faults: "
                                                    r"Toxiproxy does not answer"):
            run_trial(deployment, constant(20, LOAD_S), plan)
    finally:
        timer.join()
    elapsed = time.monotonic() - started
    print(f"aborted after {elapsed:.1f} s")
    assert elapsed < HANG_BOUND_S
    deployment.close()


@pytest.mark.local_only
def test_an_aborted_test_is_reported_as_aborted_not_failed(pytester: pytest.Pytester) -> None:
    """The plugin turns ExperimentAborted into "aborted, no verdict" in the summary and an
    error (not a failure) in junit.xml."""
    pytester.makepyfile("""
        from testbed.errors import ExperimentAborted

        def test_broker_gone():
            raise ExperimentAborted("the broker (RabbitMQ) is not running", "after the faults")

        def test_fine():
            pass
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--report-dir", "out")
    result.assert_outcomes(passed=1, failed=1)
    summary = (pytester.path / "out" / "summary.md").read_text()
    assert "1 test(s) ABORTED" in summary and "test_broker_gone" in summary
    assert "the broker (RabbitMQ) is not running" in summary
    junit = (pytester.path / "out" / "junit.xml").read_text()
    assert 'errors="1"' in junit and 'failures="0"' in junit
    assert 'type="ExperimentAborted"' in junit
