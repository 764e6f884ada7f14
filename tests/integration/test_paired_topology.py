"""The paired topology end to end on the local runtime, with real components."""

from __future__ import annotations

import pytest

from testbed.faults.broker import ready_count
from testbed.runtime.local import LocalRuntime
from testbed.topology import Knobs, paired, sync_chain

from .conftest import Deploy, eventually, leftovers


def test_an_order_goes_end_to_end_through_both_topologies(deploy: Deploy) -> None:
    pair = paired()
    sync, asynchronous = deploy(pair.sync), deploy(pair.async_)

    answer = sync.place_order("order-sync-1")
    assert answer.status_code == 200
    assert answer.json()["path"] == ["gateway", "orders", "payments", "inventory"]
    assert {name: ledger for name, ledger in sync.ledgers().items()} == {
        name: {"order-sync-1": 1} for name in ("gateway", "orders", "payments", "inventory")}

    assert asynchronous.place_order("order-async-1").status_code == 202
    assert eventually(lambda: "order-async-1" in asynchronous.ledger("notification"))
    assert asynchronous.ledgers() == {
        name: {"order-async-1": 1}
        for name in ("gateway", "payments", "inventory", "notification")}
    broker = asynchronous.broker
    assert broker is not None
    assert all(ready_count(broker, queue) == 0 for queue in broker.queues)


def test_every_hop_goes_through_its_proxy(deploy: Deploy) -> None:
    pair = paired(depth=2)
    sync, asynchronous = deploy(pair.sync), deploy(pair.async_)
    for deployment in (sync, asynchronous):
        server = deployment.toxiproxy  # one per run locally, one per deployment in docker
        assert server is not None
        listed = server.proxies()
        assert set(deployment.proxies) == {lk.name for lk in deployment.topology.links}
        for endpoint in deployment.proxies.values():
            assert listed[endpoint.proxy_name].enabled


@pytest.mark.local_only
def test_teardown_leaves_nothing_even_when_the_body_raises() -> None:
    runtime = LocalRuntime()
    with pytest.raises(RuntimeError, match="boom"), runtime:
        pair = paired(depth=1)
        runtime.deploy(pair.sync)
        runtime.deploy(pair.async_)
        assert len(leftovers(runtime.run_id)) > 5  # processes, dir and ports exist now
        raise RuntimeError("boom")
    assert leftovers(runtime.run_id) == []


def test_service_handles_pause_resume_kill_and_restart(deploy: Deploy) -> None:
    deployment = deploy(sync_chain(depth=2, knobs=Knobs(timeout_s=3.0),
                                   overrides={"orders": Knobs(timeout_s=0.5)}))
    payments = deployment.service("payments")

    payments.pause()
    answer = deployment.place_order("paused")
    assert answer.status_code == 502  # orders timed out waiting on a frozen payments
    assert answer.json()["error"] == ("gateway: downstream answered 504 (orders: downstream "
                                      "timed out after 0.5 s)")
    payments.resume()
    assert deployment.place_order("resumed").status_code == 200

    payments.kill()
    assert not payments.running()
    assert deployment.place_order("killed").status_code == 502
    payments.start()
    assert deployment.place_order("started").status_code == 200
    payments.restart()
    assert deployment.place_order("restarted").status_code == 200
    # The ledger file outlives the process: history before the crash is kept.
    assert set(deployment.ledger("payments")) >= {"resumed", "started", "restarted"}
