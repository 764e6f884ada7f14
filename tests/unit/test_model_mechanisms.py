"""The model's fault mechanisms beyond the network and the process: application faults
(with the callers' retries and the consumers' retry policies), poison messages and
dead-letter queues, crash points with idempotency and the outbox, the broker down or
blocked, request-reply, a stalled consumer, restarts and purges. Each run is small and
its numbers follow in closed form from the services' code (ideal calibration: a service
costs exactly its knobs)."""

from __future__ import annotations

import random

import pytest

from testbed.load import constant
from testbed.model import Calibration, ModelError, simulate
from testbed.scenario import fault
from testbed.scenario import metrics as m
from testbed.topology import Knobs, async_pipeline, sync_chain

IDEAL = Calibration.ideal()


# ----------------------------------------------------------------- application faults

def test_naive_retries_at_every_hop_multiply_the_calls_at_the_bottom() -> None:
    """(1 + r)^3 calls per order at the bottom of a depth-3 chain, r = 2: 27."""
    topology = sync_chain(3, knobs=Knobs(retries=2))
    result = simulate(topology, constant(5, 3),
                      [fault("error_rate", "inventory", at=0.95, duration=2.5, p=1.0)],
                      calibration=IDEAL)
    failed = m.edge_errors(result)
    assert failed == 10  # the orders of [1, 3)
    assert m.counter(result, "inventory", "injected_errors") == 27 * failed
    assert set(result.requests.loc[~result.requests["ok"], "error"]) == {"http_502"}
    assert m.counter(result, "payments", "retries") == 2 * 9 * failed


def test_error_rate_fails_exactly_the_real_seeded_draws() -> None:
    """One draw of random.Random(seed) per request, in arrival order, as the service."""
    result = simulate(sync_chain(1), constant(20, 2),
                      [fault("error_rate", "gateway", at=0.01, duration=5, p=0.3, seed=7)],
                      calibration=IDEAL)
    rng = random.Random(7)
    expected = [False] + [rng.random() < 0.3 for _ in range(39)]  # order 0 came before
    assert list(~result.requests["ok"]) == expected
    assert set(result.requests.loc[~result.requests["ok"], "status"]) == {500}
    assert m.counter(result, "gateway", "injected_errors") == sum(expected)


def test_fail_first_fails_the_next_n_then_passes() -> None:
    result = simulate(sync_chain(1), constant(10, 2),
                      [fault("fail_first", "orders", at=0.45, duration=5, n=3)])
    failed = result.requests.loc[~result.requests["ok"], "t_scheduled"].round(2).tolist()
    assert failed == [0.5, 0.6, 0.7]
    assert m.counter(result, "orders", "injected_errors") == 3


def test_a_kill_clears_the_application_fault_and_restarts_the_counters() -> None:
    topology = sync_chain(1)
    faults = [fault("error_rate", "orders", at=0, duration=10, p=1.0),
              fault("kill", "orders", at=1, duration=0.5)]
    result = simulate(topology, constant(10, 4), faults, calibration=IDEAL)
    back = 1.55  # after the removal of the kill (ideal calibration: restart_s = 0)
    assert m.edge_errors(result, start=back) == 0  # the fault went with the process
    # the new process counts from zero: the orders since its start (1.6 .. 3.9 s)
    assert m.counter(result, "orders", "received") == pytest.approx(24, abs=1)


def test_a_retry_policy_parks_what_fails_every_retry_in_the_dlq() -> None:
    """Fault [0.95, 3.95), r = 1 retry d = 1 s later: orders of [1, 3) fail both tries
    (20, the DLQ), those of [3, 4) fail once and pass on the retry (10)."""
    knobs = Knobs(consumer_retries=1, consumer_retry_delay_ms=1000, dead_letter=True)
    result = simulate(async_pipeline(1, knobs=knobs), constant(10, 6),
                      [fault("error_rate", "payments", at=0.95, duration=3.0, p=1.0)],
                      calibration=IDEAL)
    assert m.counter(result, "payments", "dead_lettered") == 20
    assert m.counter(result, "payments", "handler_errors") == 20 * 2 + 10
    assert m.counter(result, "payments", "retries_scheduled") == 30
    assert m.dlq_peak(result, "payments.dlq") == 20
    assert m.dead_lettered(result, "payments") == 20 and m.lost(result, "payments") == 0
    assert m.dlq_peak(result, "payments.retry") == 10  # one second's failures wait
    assert result.meta["drained"]


def test_a_naive_requeue_loops_once_per_backoff() -> None:
    """prefetch 1, a 50 ms pause before each nack: a failure every 50 ms while the
    fault lasts (1 s: 20), the same message at the head each time; nothing lost."""
    knobs = Knobs(prefetch=1, error_backoff_ms=50)
    result = simulate(async_pipeline(1, knobs=knobs), constant(10, 3),
                      [fault("error_rate", "payments", at=1.01, duration=1.0, p=1.0)],
                      calibration=IDEAL)
    assert m.counter(result, "payments", "handler_errors") == pytest.approx(20, abs=1)
    assert m.counter(result, "payments", "redelivered") >= 19
    assert m.lost(result, "payments") == 0 and m.duplicated(result, "payments") == 0


def test_a_requeued_message_is_overtaken_by_the_prefetched_ones() -> None:
    """prefetch 10: a failed order comes back behind those delivered during its 100 ms
    backoff (40/s: 4), so the ledger (processing order) has it after later orders."""
    knobs = Knobs(prefetch=10, error_backoff_ms=100)
    result = simulate(async_pipeline(1, knobs=knobs), constant(40, 3),
                      [fault("fail_first", "payments", at=0, duration=10, n=1)],
                      calibration=Calibration(fault_ms=0))
    first = [int(order.rsplit("-", 1)[1]) for order in m.processed(result, "payments")]
    assert first.index(0) == 4
    assert m.out_of_order(result, "payments", 1) == [1]


# ------------------------------------------------------------------- poison messages

def test_a_poison_message_blocks_a_classic_queue_forever() -> None:
    knobs = Knobs(prefetch=1, error_backoff_ms=50)
    result = simulate(async_pipeline(1, knobs=knobs), constant(10, 4),
                      [fault("poison", "payments", at=1.01)], calibration=IDEAL,
                      drain_timeout_s=1, tail_s=0)
    end = float(result.samples["t"].max())  # the counter's last sample
    assert m.counter(result, "payments", "handler_errors") == pytest.approx(
        (end - 1.01) / 0.05, abs=2)
    assert m.processed_between(result, "payments", start=1.05) == 0
    assert m.backlog_growth(result, 1.5, 4.0, "payments") == pytest.approx(10, rel=0.1)
    assert not m.drained(result)


def test_a_delivery_limit_dead_letters_the_poison_after_n_plus_one_tries() -> None:
    knobs = Knobs(prefetch=1, error_backoff_ms=50, queue_type="quorum", delivery_limit=3,
                  dead_letter=True)
    result = simulate(async_pipeline(1, knobs=knobs), constant(10, 4),
                      [fault("poison", "payments", at=1.01)], calibration=IDEAL)
    assert m.counter(result, "payments", "handler_errors") == 4
    assert m.dlq_peak(result, "payments.dlq") == 1
    dlq = result.ledgers[result.ledgers["service"] == "payments.dlq"]
    assert dlq["order_id"].tolist() == ["<unreadable>"]
    assert m.lost(result, "payments") == 0 and m.dead_lettered(result, "payments") == 0


# ----------------------------------------------------------------------- crash points

@pytest.mark.parametrize("idempotent", [False, True])
def test_a_crash_before_the_ack_charges_again_unless_idempotent(idempotent: bool) -> None:
    topology = async_pipeline(1, knobs=Knobs(prefetch=1, idempotent=idempotent))
    result = simulate(topology, constant(10, 4),
                      [fault("crash_at", "payments", at=1, point="after_process", times=3)])
    assert m.lost(result) == 0
    assert m.extra_calls(result, "payments") == (0 if idempotent else 3)
    assert m.duplicated(result) == (0 if idempotent else 3)
    # the last process saw its one redelivery
    assert m.counter(result, "payments", "duplicates_skipped") == (1 if idempotent else 0)
    assert m.counter(result, "payments", "redelivered") == 1


@pytest.mark.parametrize("outbox", [False, True])
def test_a_crash_after_the_write_loses_the_event_unless_outbox(outbox: bool) -> None:
    topology = async_pipeline(1, overrides={"gateway": Knobs(outbox=outbox)})
    result = simulate(topology, constant(10, 4),
                      [fault("crash_at", "gateway", at=1, point="after_write", times=3)])
    crashed = set(m.processed(result, "gateway")) - m.accepted(result)
    assert len(crashed) == 3 and m.edge_errors_of(result, "reset") == 3
    assert m.lost_events(result) == (0 if outbox else 3)
    assert m.lost(result) == 0
    assert (crashed <= set(m.processed(result, "payments"))) is outbox


def test_a_crash_point_nobody_reaches_is_an_error() -> None:
    with pytest.raises(ModelError, match="no order reached"):
        simulate(async_pipeline(1), constant(1, 2),
                 [fault("crash_at", "payments", at=3, point="after_process", wait_s=1)])


# ----------------------------------------------------------------------------- broker

def test_a_broker_outage_fails_direct_publishes_for_its_whole_window() -> None:
    """Errors = rate x (down + the broker's restart); nothing accepted is lost."""
    calibration = Calibration(broker_restart_s=1.0)
    result = simulate(async_pipeline(1), constant(10, 6),
                      [fault("broker_down", at=1.01, duration=2, graceful=False)],
                      calibration=calibration)
    start, end = m.fault_window(result)
    assert end - start == pytest.approx(3.0)
    assert m.edge_errors(result) == 30
    assert set(result.requests.loc[~result.requests["ok"], "status"]) == {503}
    assert m.lost(result) == 0 and m.lost_events(result) == 0


def test_with_the_outbox_a_broker_outage_is_invisible_at_the_edge() -> None:
    topology = async_pipeline(1, overrides={"gateway": Knobs(outbox=True)})
    result = simulate(topology, constant(10, 6),
                      [fault("broker_down", at=1.01, duration=2)],
                      calibration=Calibration(broker_restart_s=1.0))
    assert m.edge_errors(result) == 0
    assert m.lost(result) == 0 and m.lost_events(result) == 0
    assert m.counter(result, "gateway", "relay_errors") > 0
    assert m.counter(result, "gateway", "relayed") == 60


def test_a_sync_chain_never_sees_the_broker() -> None:
    result = simulate(sync_chain(1), constant(10, 3), [fault("broker_down", at=1, duration=1)])
    assert m.edge_errors(result) == 0 and result.events.empty


def test_a_memory_alarm_holds_publishes_until_it_clears() -> None:
    """Publishes wait: an order sent as the alarm starts is answered when it clears;
    users who wait longer than the alarm see no error."""
    result = simulate(async_pipeline(1), constant(10, 4),
                      [fault("memory_alarm", at=1.01, duration=1.0)], calibration=IDEAL)
    assert m.edge_errors(result) == 0
    assert m.edge_latency(result, 100, 1.0, 2.0) == pytest.approx(0.91, abs=0.02)


def test_a_memory_alarm_past_the_blocked_timeout_fails_the_publish() -> None:
    result = simulate(async_pipeline(1), constant(1, 4),
                      [fault("memory_alarm", at=0.5, duration=40.0)], timeout_s=60,
                      calibration=IDEAL)
    assert m.edge_errors_of(result, "http_503") == 3  # those of 1, 2, 3 s: blocked 30 s
    assert m.edge_latency(result, 100) == pytest.approx(30.0)


# ---------------------------------------------------------------------- request-reply

def test_request_reply_waits_out_a_consumer_restart() -> None:
    """Killed for D = 2 s: every order waits in the queue; the longest waits D + R."""
    gateway = Knobs(request_reply=True, timeout_s=5.0, pool_size=48)
    topology = async_pipeline(1, overrides={"gateway": gateway,
                                            "payments": Knobs(idempotent=True)})
    calibration = Calibration(restart_s=0.5, fault_ms=0, connect_ms=0, delivery_ms=0, handler_ms=0,
                              publish_confirm_ms=0, http_hop_ms=0)
    result = simulate(topology, constant(10, 5), [fault("kill", "payments", at=1, duration=2)],
                      timeout_s=10, calibration=calibration)
    assert m.edge_errors(result) == 0
    assert m.edge_latency(result, 100) == pytest.approx(2.5, abs=0.05)
    assert m.lost(result) == 0 and m.duplicated(result) == 0


def test_a_reply_timeout_shorter_than_the_outage_answers_504() -> None:
    gateway = Knobs(request_reply=True, timeout_s=1.0, pool_size=48)
    topology = async_pipeline(1, overrides={"gateway": gateway})
    result = simulate(topology, constant(10, 5), [fault("kill", "payments", at=1, duration=2)],
                      calibration=IDEAL)
    failed = m.edge_errors_of(result, "http_504")
    assert failed == pytest.approx(10 * (2 - 1), abs=1)  # those that waited over 1 s
    assert m.counter(result, "gateway", "reply_timeouts") == failed


# ------------------------------------------------------------- stall, restart, purge

def test_a_stalled_consumer_keeps_its_connection_while_the_backlog_grows() -> None:
    topology = async_pipeline(1, knobs=Knobs(prefetch=1, heartbeat_s=1))
    result = simulate(topology, constant(10, 6),
                      [fault("consumer_stall", "payments", at=1, duration=3)],
                      calibration=IDEAL)
    assert m.backlog_growth(result, 1.5, 4.0, "payments") == pytest.approx(10, rel=0.1)
    assert m.counter(result, "payments", "reconnects") == 0
    assert m.lost(result) == 0 and result.meta["drained"]


def test_a_purge_throws_the_ready_messages_away() -> None:
    topology = async_pipeline(1, knobs=Knobs(prefetch=1))
    faults = [fault("consumer_stall", "payments", at=0.95, duration=2),
              fault("purge", "payments", at=2.05)]
    result = simulate(topology, constant(10, 4), faults, calibration=IDEAL)
    # held by the stalled consumer: the order of 1.0; purged: those of 1.1 .. 2.0
    assert m.lost(result) == 10


def test_a_restart_is_down_for_the_restart_only() -> None:
    result = simulate(sync_chain(1), constant(10, 3), [fault("restart", "orders", at=1)],
                      calibration=Calibration(restart_s=0.5, fault_ms=0))
    assert m.edge_errors(result) == 5
    start, _ = m.fault_window(result)
    assert start == pytest.approx(1.5)  # the inject returns once it is back


def test_a_crash_loop_is_down_down_s_plus_the_restart_of_every_cycle() -> None:
    loop = fault("crash_loop", "orders", at=1, duration=3.9, down_s=0.5, up_s=1.0)
    result = simulate(sync_chain(1), constant(10, 6), [loop],
                      calibration=Calibration(restart_s=0.5, fault_ms=0))
    # down [1, 2), up [2, 3), down [3, 4), up [4, 4.9): 20 orders fail
    assert m.edge_errors(result) == 20
