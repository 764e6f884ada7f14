"""Every fault shows its effect from the caller's side, and the effect is gone after removal."""

from __future__ import annotations

import time

import pytest

from testbed.faults import (
    FaultNotEffective,
    FaultRemovalError,
    Planned,
    Schedule,
    Timeline,
    ToxicFault,
    injected,
    make_fault,
)
from testbed.faults.probes import probe
from testbed.runtime import Deployment
from testbed.runtime.local import LocalRuntime
from testbed.topology import Knobs, async_pipeline, sync_chain

from .conftest import Deploy, leftovers


def timed_order(deployment: Deployment, order_id: str) -> tuple[int, float]:
    started = time.monotonic()
    status = deployment.place_order(order_id).status_code
    return status, time.monotonic() - started


@pytest.fixture
def chain(deploy: Deploy) -> Deployment:
    """gateway -> orders, the gateway waiting at most 1 s."""
    deployment = deploy(sync_chain(1, knobs=Knobs(timeout_s=1.0)))
    assert deployment.place_order("warm-up").status_code == 200  # keep-alive is open now
    return deployment


def no_toxics_left(deployment: Deployment) -> bool:
    assert deployment.toxiproxy is not None
    return all(deployment.toxiproxy.toxics(p.proxy_name) == [] and
               deployment.toxiproxy.proxies()[p.proxy_name].enabled
               for p in deployment.proxies.values())


def test_latency_is_seen_at_the_edge_and_gone_after(chain: Deployment) -> None:
    timeline = Timeline()
    with injected(make_fault(chain, "latency", "gateway-orders", latency=200), timeline):
        status, seconds = timed_order(chain, "slow")
        assert status == 200
        assert seconds >= 0.2  # also through the connection opened before the toxic
    status, seconds = timed_order(chain, "fast")
    assert (status, seconds < 0.15) == (200, True)
    assert [e.kind for e in timeline.events] == ["inject", "verify", "remove"]
    assert "first byte after" in timeline.events[1].detail
    assert no_toxics_left(chain)


def test_timeout_toxic_is_a_black_hole(chain: Deployment) -> None:
    with injected(make_fault(chain, "timeout", "gateway-orders", timeout=0)):
        assert chain.place_order("lost").status_code == 504
    assert chain.place_order("back").status_code == 200
    assert no_toxics_left(chain)


def test_reset_peer_and_link_down_give_connection_errors(chain: Deployment) -> None:
    with injected(make_fault(chain, "reset_peer", "gateway-orders", timeout=0)):
        assert chain.place_order("reset").status_code == 502
    with injected(make_fault(chain, "link_down", "gateway-orders")):
        answer = chain.place_order("down")
        assert answer.status_code == 502
        assert "unreachable" in answer.json()["error"]
    assert chain.place_order("back").status_code == 200
    assert no_toxics_left(chain)


@pytest.mark.parametrize(("name", "params"), [
    ("bandwidth", {"rate": 1}),
    ("slow_close", {"delay": 300}),
    ("limit_data", {"bytes": 10}),
    ("latency", {"latency": 100, "jitter": 20, "stream": "both"}),
    ("latency", {"latency": 300, "toxicity": 0.5}),
])
def test_other_toxics_apply_verify_and_remove(chain: Deployment, name: str,
                                              params: dict[str, object]) -> None:
    timeline = Timeline()
    with injected(make_fault(chain, name, "gateway-orders", **params), timeline):
        assert chain.toxiproxy is not None
        assert chain.toxiproxy.toxics(chain.proxies["gateway-orders"].proxy_name)
    assert timeline.of_kind("verify")
    assert no_toxics_left(chain)


def test_limit_data_cuts_the_answer(chain: Deployment) -> None:
    port = chain.proxies["gateway-orders"].listen_port
    assert probe(port, "http", read_all=True).received > 100
    with injected(make_fault(chain, "limit_data", "gateway-orders", bytes=10)):
        assert probe(port, "http", read_all=True).received <= 10
    assert chain.place_order("whole").status_code == 200


def test_failing_assertion_inside_the_block_still_removes(chain: Deployment) -> None:
    with pytest.raises(AssertionError), \
            injected(make_fault(chain, "latency", "gateway-orders", latency=50)):
        raise AssertionError("the hypothesis failed")
    with pytest.raises(KeyboardInterrupt), \
            injected(make_fault(chain, "link_down", "gateway-orders")):
        raise KeyboardInterrupt  # what Ctrl-C raises in the main thread
    assert no_toxics_left(chain)
    assert chain.place_order("after").status_code == 200


class MisdirectedLatency(ToxicFault):
    """A broken injector: puts the toxic on the wrong proxy (a real bug one could write)."""

    def __init__(self, deployment: Deployment, link: str, decoy: str) -> None:
        super().__init__(deployment, link, "latency", {"latency": 300})
        self.decoy = deployment.proxies[decoy].proxy_name

    def inject(self) -> None:
        self.client.add_toxic(self.decoy, "tb-latency-downstream", "latency", "downstream",
                              1.0, self.attributes)

    def remove(self) -> None:
        self.client.remove_toxic(self.decoy, "tb-latency-downstream")


def test_an_injection_without_effect_fails_loudly(deploy: Deploy) -> None:
    deployment = deploy(sync_chain(2))
    timeline = Timeline()
    fault = MisdirectedLatency(deployment, "gateway-orders", decoy="orders-payments")
    with pytest.raises(FaultNotEffective, match="no visible effect: first byte after"), \
            injected(fault, timeline):
        pass
    assert [e.kind for e in timeline.events] == ["inject", "verify_failed"]
    assert no_toxics_left(deployment)  # the decoy toxic was removed as well


def test_amqp_link_latency_and_cut(deploy: Deploy) -> None:
    deployment = deploy(async_pipeline(1))
    port = deployment.proxies["payments-broker"].listen_port
    assert probe(port, "amqp").outcome == "ok"
    with injected(make_fault(deployment, "latency", "payments-broker", latency=200)):
        assert probe(port, "amqp").seconds >= 0.2
    with injected(make_fault(deployment, "link_down", "gateway-broker")):
        assert deployment.place_order("unpublishable").status_code == 503
    assert deployment.place_order("published").status_code == 202
    assert no_toxics_left(deployment)


@pytest.mark.timing
def test_schedule_injects_and_removes_on_time(chain: Deployment) -> None:
    timeline = Timeline()
    plan = [Planned(make_fault(chain, "latency", "gateway-orders", latency=100), at=0.2,
                    duration=0.6),
            Planned(make_fault(chain, "link_down", "gateway-orders"), at=1.0, duration=0.4)]
    with Schedule(plan, timeline) as schedule:
        assert schedule.wait(timeout=10)
    kinds = [(e.kind, e.fault) for e in timeline.events]
    assert kinds == [("inject", "latency"), ("verify", "latency"), ("remove", "latency"),
                     ("inject", "link_down"), ("verify", "link_down"),
                     ("remove", "link_down")]
    injects = timeline.of_kind("inject")
    assert timeline.relative(injects[0]) == pytest.approx(0.2, abs=0.15)
    assert timeline.relative(injects[1]) == pytest.approx(1.0, abs=0.15)
    assert no_toxics_left(chain)


def test_stopping_a_schedule_early_removes_what_is_active(chain: Deployment) -> None:
    timeline = Timeline()
    plan = [Planned(make_fault(chain, "link_down", "gateway-orders"), at=0.0)]
    with pytest.raises(RuntimeError, match="interrupted"), Schedule(plan, timeline):
        time.sleep(0.5)
        raise RuntimeError("interrupted")
    assert [e.kind for e in timeline.events][-1] == "remove"
    assert no_toxics_left(chain)


@pytest.mark.local_only
def test_a_fault_that_cannot_be_removed_is_reported_loudly() -> None:
    """Toxiproxy dies while a toxic is on: removal fails and says so, it is not swallowed.
    Teardown then has nothing to remove from the dead server (its proxies died with it)
    and still leaves nothing behind."""
    timeline = Timeline()
    runtime = LocalRuntime()
    with runtime:
        deployment = runtime.deploy(sync_chain(1))
        with pytest.raises(FaultRemovalError, match="could not remove latency"), \
                injected(make_fault(deployment, "latency", "gateway-orders", latency=50),
                         timeline):
            runtime.toxiproxy().process.kill()
    assert timeline.of_kind("remove_failed")
    assert not timeline.of_kind("remove")
    assert leftovers(runtime.run_id) == []
