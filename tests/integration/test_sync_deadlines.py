"""The `deadline` knob on a real sync chain: a hop sheds an order whose caller has given
up, gives the downstream call only the caller's remaining time, and passes the deadline
on; without the knob the header changes nothing."""

from __future__ import annotations

import threading
import time

import requests

from testbed.services.deadline import HEADER, header
from testbed.topology import Knobs, sync_chain

from .conftest import Deploy, eventually


def post(url: str, order_id: str, headers: dict[str, str]) -> requests.Response:
    return requests.post(f"{url}/orders", json={"order_id": order_id}, headers=headers,
                         timeout=10)


def test_a_hop_with_the_knob_sheds_an_order_whose_caller_has_gone(deploy: Deploy) -> None:
    chain = deploy(sync_chain(1, knobs=Knobs(deadline=True)))
    gateway = chain.services["gateway"].url
    answer = post(gateway, "gone", {HEADER: f"{time.time() - 1:.3f}"})
    assert answer.status_code == 504
    assert answer.json()["error"].startswith("gateway: shed, -1.")
    assert chain.ledgers() == {"gateway": {}, "orders": {}}  # no work, no downstream call
    assert chain.stats("gateway")["counters"]["shed"] == 1
    assert post(gateway, "in-time", header(5.0)).status_code == 200
    assert post(gateway, "no-deadline", {}).status_code == 200


def test_the_downstream_call_gets_only_the_time_left(deploy: Deploy) -> None:
    chain = deploy(sync_chain(1, knobs=Knobs(deadline=True, timeout_s=5.0),
                              overrides={"orders": Knobs(deadline=True, work_ms=1500)}))
    started = time.monotonic()
    answer = post(chain.services["gateway"].url, "short", header(0.4))
    took = time.monotonic() - started
    assert answer.status_code == 504
    error = answer.json()["error"]
    assert "gateway: downstream timed out after 0." in error, error  # not its 5 s timeout
    assert took < 1.4, f"the gateway waited {took:.2f} s: its 5 s timeout, not the deadline"


def test_the_deadline_travels_down_the_chain(deploy: Deploy) -> None:
    """orders is still busy with an earlier order when this one reaches it, so by the time
    one of its workers takes it, the deadline the gateway passed on has gone by."""
    chain = deploy(sync_chain(1, knobs=Knobs(deadline=True, timeout_s=5.0),
                              overrides={"orders": Knobs(deadline=True, work_ms=800,
                                                         pool_size=1)}))
    gateway = chain.services["gateway"].url
    done: list[int] = []
    thread = threading.Thread(target=lambda: done.append(
        post(gateway, "blocker", header(5.0)).status_code))
    thread.start()
    time.sleep(0.2)  # the blocker holds orders' only worker for 0.8 s
    late = post(gateway, "late", header(0.5))
    thread.join(10)
    assert done == [200]
    assert late.status_code == 504
    # orders takes "late" once the blocker is done, just after the blocker's answer.
    assert eventually(lambda: chain.stats("orders")["counters"].get("shed") == 1, 5), \
        chain.stats("orders")["counters"]
    assert "late" not in chain.ledger("orders")


def test_without_the_knob_the_header_changes_nothing(deploy: Deploy) -> None:
    chain = deploy(sync_chain(1))
    answer = post(chain.services["gateway"].url, "ignored", {HEADER: f"{time.time() - 1:.3f}"})
    assert answer.status_code == 200
    assert chain.ledger("orders") == {"ignored": 1}
