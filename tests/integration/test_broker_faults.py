"""Broker faults with a real RabbitMQ node: down and back, alarm, poison, purge, policies."""

from __future__ import annotations

import time

import pytest

from testbed.faults import FaultSpecError, Timeline, injected, make_fault
from testbed.faults.broker import ready_count
from testbed.runtime.base import dead_letter_queue
from testbed.topology import Knobs, async_pipeline

from .conftest import Deploy, eventually


def test_broker_down_fails_publishes_then_everything_recovers(deploy: Deploy) -> None:
    deployment = deploy(async_pipeline(1))
    assert deployment.place_order("before").status_code == 202
    timeline = Timeline()
    with injected(make_fault(deployment, "broker_down", "", graceful=False), timeline):
        assert deployment.place_order("during").status_code == 503
    assert "refused" in timeline.of_kind("verify")[0].detail
    # Gateway threads reconnect per request; the consumer's loop reconnects by itself.
    # The claim is that it recovers, not how fast: 60 s (here a few seconds; once in CI,
    # beside a whole `testbed up` on the other worker, not within 20 s: a connection
    # attempt may wait its 10 s stack timeout twice per order).
    assert eventually(lambda: deployment.place_order(f"after-{time.monotonic()}")
                      .status_code == 202, timeout=60)
    assert eventually(lambda: "before" in deployment.ledger("payments")
                      and any(k.startswith("after-") for k in deployment.ledger("payments")),
                      timeout=20)


def test_memory_alarm_blocks_publishers_until_removed(deploy: Deploy) -> None:
    deployment = deploy(async_pipeline(1))
    timeline = Timeline()
    with injected(make_fault(deployment, "memory_alarm", ""), timeline):
        assert deployment.broker is not None
        assert eventually(deployment.broker.control.memory_alarm, timeout=5)  # stats lag
        with pytest.raises(Exception, match="timed out"):
            deployment.place_order("blocked", timeout=2.0)  # the publish hangs
    assert timeline.of_kind("verify")[0].detail == "publisher got connection.blocked"
    assert not deployment.broker.control.memory_alarm()
    assert eventually(lambda: "blocked" in deployment.ledger("payments"), timeout=20)


def test_poison_loops_forever_without_a_delivery_limit(deploy: Deploy) -> None:
    deployment = deploy(async_pipeline(1, knobs=Knobs(error_backoff_ms=50)))
    with injected(make_fault(deployment, "poison", "payments")):
        pass
    assert eventually(lambda: deployment.stats("payments")["counters"]
                      .get("handler_errors", 0) >= 5)
    assert deployment.place_order("behind-the-poison").status_code == 202
    assert eventually(lambda: "behind-the-poison" in deployment.ledger("payments"))


def test_poison_is_dead_lettered_after_the_delivery_limit(deploy: Deploy) -> None:
    knobs = Knobs(queue_type="quorum", delivery_limit=3, dead_letter=True, error_backoff_ms=10)
    deployment = deploy(async_pipeline(1, knobs=knobs))
    broker = deployment.broker
    assert broker is not None
    with injected(make_fault(deployment, "poison", "payments", count=2)):
        pass
    assert eventually(lambda: ready_count(broker, dead_letter_queue("payments")) == 2)
    errors = deployment.stats("payments")["counters"]["handler_errors"]
    assert errors == 2 * 4  # first delivery + 3 redeliveries each, then dead-lettered
    assert deployment.place_order("fine").status_code == 202
    assert eventually(lambda: "fine" in deployment.ledger("payments"))


def test_purge_throws_away_the_backlog(deploy: Deploy) -> None:
    deployment = deploy(async_pipeline(1, knobs=Knobs(prefetch=1)))
    broker = deployment.broker
    assert broker is not None
    with injected(make_fault(deployment, "pause", "payments")):
        for index in range(10):
            deployment.place_order(f"doomed-{index}")
        assert eventually(lambda: ready_count(broker, "payments") >= 1)
        with injected(make_fault(deployment, "purge", "payments")) as purge:
            assert purge.before >= 1  # type: ignore[attr-defined]
            assert ready_count(broker, "payments") == 0


def test_max_length_with_reject_publish_refuses_at_the_edge(deploy: Deploy) -> None:
    knobs = Knobs(max_length=5, overflow="reject-publish", prefetch=1)
    deployment = deploy(async_pipeline(1, knobs=knobs))
    with injected(make_fault(deployment, "pause", "payments")):
        statuses = [deployment.place_order(f"o-{i}").status_code for i in range(20)]
    accepted = statuses.count(202)
    assert 5 <= accepted <= 6  # 5 ready (the limit) + the 1 the frozen consumer holds
    assert statuses.count(429) == 20 - accepted  # the edge tells clients to back off


def test_max_length_with_drop_head_keeps_the_newest(deploy: Deploy) -> None:
    deployment = deploy(async_pipeline(1, knobs=Knobs(max_length=3, prefetch=1)))
    with injected(make_fault(deployment, "consumer_stall", "payments")):
        statuses = [deployment.place_order(f"d-{i}").status_code for i in range(10)]
        assert statuses == [202] * 10  # the edge accepts everything; the queue drops
    assert eventually(lambda: len(deployment.ledger("payments")) == 4)
    # The one held by the stalled consumer plus the newest three; the rest were dropped.
    assert set(deployment.ledger("payments")) == {"d-0", "d-7", "d-8", "d-9"}


def test_broker_fault_specs(deploy: Deploy) -> None:
    deployment = deploy(async_pipeline(1))
    with pytest.raises(FaultSpecError, match="unknown queue 'nope'"):
        make_fault(deployment, "poison", "nope")
    with pytest.raises(FaultSpecError, match="count=0"):
        make_fault(deployment, "poison", "payments", count=0)
    with pytest.raises(FaultSpecError, match="whole broker"):
        make_fault(deployment, "broker_down", "payments")
    with pytest.raises(FaultSpecError, match="amqp_link_cut needs an AMQP link"):
        make_fault(deployment, "amqp_link_cut", "gateway-orders")


def test_consumer_stall_holds_deliveries_unacked_and_backlog_grows(deploy: Deploy) -> None:
    deployment = deploy(async_pipeline(1, knobs=Knobs(prefetch=3)))
    broker = deployment.broker
    assert broker is not None
    with injected(make_fault(deployment, "consumer_stall", "payments")):
        for index in range(10):
            assert deployment.place_order(f"stuck-{index}").status_code == 202
        assert eventually(lambda: broker.queue_state("payments").unacked == 3)
        assert ready_count(broker, "payments") == 7
        # still connected (the management API's consumer count lags its other stats)
        assert eventually(lambda: broker.queue_state("payments").consumers == 1)
        assert deployment.ledger("payments") == {}
    assert eventually(lambda: len(deployment.ledger("payments")) == 10)
