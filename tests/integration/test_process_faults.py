"""Process faults: kill, pause, restart, crash-loop, seen from the caller's side."""

from __future__ import annotations

import time

import pytest

from testbed.faults import Timeline, injected, make_fault
from testbed.faults.broker import ready_count
from testbed.runtime import Deployment
from testbed.topology import Knobs, async_pipeline, sync_chain

from .conftest import Deploy, eventually


@pytest.fixture
def chain(deploy: Deploy) -> Deployment:
    return deploy(sync_chain(1, knobs=Knobs(timeout_s=0.5)))


def test_kill_refuses_then_the_service_comes_back(chain: Deployment) -> None:
    timeline = Timeline()
    with injected(make_fault(chain, "kill", "orders"), timeline):
        assert chain.place_order("dead").status_code == 502
        assert not chain.service("orders").running()
    assert "refused" in timeline.of_kind("verify")[0].detail
    assert chain.place_order("alive").status_code == 200


def test_pause_hangs_callers_until_resumed(chain: Deployment) -> None:
    with injected(make_fault(chain, "pause", "orders")):
        answer = chain.place_order("frozen")
        assert answer.status_code == 504
    assert chain.place_order("thawed").status_code == 200


def test_restart_resets_the_service(chain: Deployment) -> None:
    started = time.monotonic()
    before = chain.stats("orders")["uptime_s"]
    time.sleep(0.3)
    with injected(make_fault(chain, "restart", "orders")):
        # Without a restart it would be before + the time since; a new process has lost
        # at least the 0.3 s slept (however long its start took: a pod's is ~1.2 s).
        unrestarted = before + (time.monotonic() - started)
        assert chain.stats("orders")["uptime_s"] < unrestarted - 0.25
    assert chain.place_order("after-restart").status_code == 200


@pytest.mark.timing  # crashes counted in a window: restarts slow down under -n 4
def test_crash_loop_crashes_repeatedly_and_ends_up(chain: Deployment) -> None:
    fault = make_fault(chain, "crash_loop", "orders", down_s=0.3, up_s=1.0)
    statuses = set()
    with injected(fault):
        # Two crashes and orders seen both ways: a cycle is 1.3 s plus the start, which is
        # a process here and a new pod on k8s (~1.6 s, and its callers' route follows
        # ~1 s later: up 0.3 s in 3 s gave one crash and no 200 there).
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not (
                fault.crashes >= 2 and {200, 502} <= statuses):  # type: ignore[attr-defined]
            statuses.add(chain.place_order(f"loop-{time.monotonic()}").status_code)
            time.sleep(0.05)
    assert fault.crashes >= 2  # type: ignore[attr-defined]
    assert {200, 502} <= statuses
    assert chain.place_order("steady").status_code == 200


def test_paused_consumer_stops_acking(deploy: Deploy) -> None:
    deployment = deploy(async_pipeline(1, knobs=Knobs(prefetch=5)))
    broker = deployment.broker
    assert broker is not None
    with injected(make_fault(deployment, "pause", "payments")):
        for index in range(20):
            assert deployment.place_order(f"held-{index}").status_code == 202
        # Exact counts over AMQP (the management API's can lag): the frozen consumer
        # holds its prefetch of 5 unacked, the other 15 wait.
        assert eventually(lambda: ready_count(broker, "payments") == 15, timeout=5)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(deployment.ledger("payments")) < 20:
        time.sleep(0.1)
    assert len(deployment.ledger("payments")) == 20
