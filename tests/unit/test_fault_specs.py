"""Fault specs are checked before anything is touched (no component is running here)."""

from __future__ import annotations

import pytest

from testbed.components.toxiproxy import ToxiproxyClient
from testbed.faults import FaultSpecError, Planned, make_fault
from testbed.runtime.base import Deployment, ProxyEndpoint
from testbed.topology import sync_chain


@pytest.fixture
def deployment() -> Deployment:
    """A deployment handle whose endpoints point nowhere: validation must not call them."""
    topology = sync_chain(1)
    link = topology.links[0]
    proxies = {link.name: ProxyEndpoint(link, "p", 1, "127.0.0.1:2")}
    client = ToxiproxyClient("127.0.0.1", 1, timeout=0.1)
    return Deployment("sync1", topology, "local", {}, proxies, None, client, lambda: None)


@pytest.mark.parametrize(("name", "target", "params", "message"), [
    ("earthquake", "gateway-orders", {}, "unknown fault 'earthquake'; known: latency"),
    ("latency", "gateway-nowhere", {"latency": 100}, "unknown link 'gateway-nowhere'.*"
                                                     "proxied links: \\['gateway-orders'\\]"),
    ("latency", "gateway-orders", {"latency": -5}, "latency=-5 is impossible"),
    ("latency", "gateway-orders", {}, "latency needs latency="),
    ("latency", "gateway-orders", {"latency": 5, "toxicity": 1.5}, "toxicity 1.5"),
    ("latency", "gateway-orders", {"latency": 5, "toxicity": 0}, "toxicity 0"),
    ("latency", "gateway-orders", {"latency": 5, "stream": "sideways"}, "stream 'sideways'"),
    ("bandwidth", "gateway-orders", {"rate": 10, "latency": 3}, "has no attribute 'latency'"),
    ("link_down", "gateway-orders", {"for_s": 3}, "takes no parameters"),
    ("kill", "ghost", {}, "unknown service 'ghost'"),
])
def test_bad_fault_specs_are_rejected_clearly(deployment: Deployment, name: str, target: str,
                                              params: dict[str, object], message: str) -> None:
    with pytest.raises(FaultSpecError, match=message):
        make_fault(deployment, name, target, **params)


def test_schedule_rejects_impossible_times(deployment: Deployment) -> None:
    fault = make_fault(deployment, "latency", "gateway-orders", latency=10)
    with pytest.raises(FaultSpecError, match="at=-1"):
        Planned(fault, at=-1)
    with pytest.raises(FaultSpecError, match="duration=0"):
        Planned(fault, at=0, duration=0)
