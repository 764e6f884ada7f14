"""The model's Kafka variant of the async shape (testbed.model.kafka): partitions and
consumer groups, a poison message blocking its partition, retry and DLQ topics, the
producer's timeout, the group session after a kill, a pause or a cut, per-partition
order, and the replay fault (a graceful stop, the group's offsets back to 0, a start:
the whole topic handled again, by a process that has read none of it; RabbitMQ has
nothing to replay). Each run is small and, with the ideal calibration (a service costs
exactly its knobs), its numbers follow from the services' code."""

from __future__ import annotations

import dataclasses
import zlib
from pathlib import Path
from typing import Any

import pytest

from testbed.load import constant
from testbed.model import Calibration, ModelError, NotModelled, simulate
from testbed.model.kafka_log import SEEK_REFETCH_S
from testbed.observe.result import RunResult
from testbed.scenario import fault, unreachable
from testbed.scenario import metrics as m
from testbed.scenario.faults import ServiceFault
from testbed.scenario.predicted import simulate_trial
from testbed.topology import Knobs, async_pipeline
from testbed.topology.model import Topology

IDEAL = Calibration.ideal()
SESSION_S = 6.0  # the real consumer's session.timeout.ms


def kafka(depth: int = 1, partitions: int = 3, gateway: Knobs | None = None,
          **knobs: Any) -> Topology:
    """An async pipeline on Kafka: ``knobs`` for the consumers, the gateway's apart (by
    default it costs nothing, so each order is produced when it is sent)."""
    return async_pipeline(depth, knobs=Knobs(**knobs), broker="kafka", partitions=partitions,
                          overrides={"gateway": gateway or Knobs()})


def calibration(**constants: float) -> Calibration:
    return dataclasses.replace(IDEAL, **constants)


def partition(order_id: str, partitions: int = 3) -> int:
    """librdkafka's consistent partitioner, as the real producer places an order."""
    return zlib.crc32(order_id.encode()) % partitions


def series(result: RunResult, source: str, metric: str) -> list[tuple[float, float]]:
    rows = result.samples[(result.samples["source"] == source)
                          & (result.samples["metric"] == metric)]
    return list(zip(rows["t"], rows["value"], strict=True))


def members_back(result: RunResult, after: float, queue: str = "payments",
                 members: int = 3) -> float:
    """The first sample after ``after`` at which the group has its members again."""
    gone = [t for t, v in series(result, f"queue:{queue}", "consumers") if t > after and v == 0]
    assert gone, "the group never lost its members"
    return next(t for t, v in series(result, f"queue:{queue}", "consumers")
                if t > gone[0] and v == members)


# ------------------------------------------------------------------------ steady flow

def test_three_members_on_three_partitions_keep_up_where_one_falls_behind() -> None:
    """60/s at 20 ms a message: one member (50/s) falls behind by 10/s; three, one
    partition each, keep up with the arrivals, and the group's lag stays near zero."""
    one = simulate(kafka(replicas=1, work_ms=20), constant(60, 4), calibration=IDEAL)
    assert m.backlog_growth(one, 1, 4, "payments") == pytest.approx(10, rel=0.15)
    three = simulate(kafka(replicas=3, work_ms=20), constant(60, 4), calibration=IDEAL)
    assert m.counter_rate(three, "payments", "ok", 0.5, 4) == pytest.approx(60, rel=0.05)
    assert m.backlog_peak(three, "payments") <= 3
    assert m.edge_errors(three) == 0 and m.lost(three) == 0 and m.duplicated(three) == 0
    assert three.meta["drained"]
    assert {v for _, v in series(three, "queue:payments", "unacked")} == {0}


def test_the_gateway_answers_after_its_work_and_the_produce() -> None:
    """The front as on RabbitMQ, then a produce until its delivery report."""
    costs = Calibration(http_hop_ms=1.5, kafka_produce_ms=1.5)
    result = simulate(kafka(gateway=Knobs(work_ms=5)), constant(20, 2), calibration=costs)
    assert m.edge_latency(result, 50) == pytest.approx(0.008)
    assert set(result.requests["status"]) == {202}


# ------------------------------------------------------------------------- poison

@pytest.mark.parametrize(("replicas", "blocked"), [(3, {0}), (2, {0, 1}), (1, {0, 1, 2})])
def test_a_poison_message_blocks_its_partition_and_its_members_others(
        replicas: int, blocked: set[int]) -> None:
    """No retry policy: the member seeks back to the poison (partition 0) every
    error_backoff_ms plus the wait for the fetch in flight. It blocks exactly the orders
    of the partitions its member owns (range assignment: member 0 of R takes the first
    block), appended after it."""
    result = simulate(kafka(replicas=replicas, error_backoff_ms=50), constant(40, 4),
                      [fault("poison", "payments", at=1.01)], calibration=IDEAL,
                      drain_timeout_s=1, tail_s=0)
    requests = result.requests
    parts = requests["order_id"].map(partition)
    late = requests["t_scheduled"] > 1.01
    stuck = set(requests.loc[late & parts.isin(blocked), "order_id"])
    assert set(requests["order_id"]) - set(m.processed(result, "payments")) == stuck
    share = float(parts.isin(blocked).mean())
    assert m.backlog_growth(result, 1.5, 4.0, "payments") == pytest.approx(40 * share, rel=0.2)
    end = float(result.samples["t"].max())
    errors = m.counter(result, "payments", "handler_errors")
    assert errors == pytest.approx((end - 1.01) / (0.05 + SEEK_REFETCH_S), abs=2)
    assert m.counter(result, "payments", "redelivered") == errors - 1
    assert not result.meta["drained"]


def test_the_poison_partition_grows_at_a_third_of_the_rate() -> None:
    """Three partitions: crc32 spreads the orders about evenly, so the blocked one's
    backlog grows at about rate / 3."""
    result = simulate(kafka(replicas=3, error_backoff_ms=50), constant(60, 8),
                      [fault("poison", "payments", at=1.01)], calibration=IDEAL,
                      drain_timeout_s=1, tail_s=0)
    assert m.backlog_growth(result, 1.5, 8.0, "payments") == pytest.approx(60 / 3, rel=0.2)


def test_with_two_retries_the_poison_ends_in_the_dlq_after_three_attempts() -> None:
    topology = kafka(replicas=3, consumer_retries=2, dead_letter=True,
                     consumer_retry_delay_ms=500)
    result = simulate(topology, constant(40, 4),
                      [fault("poison", "payments", at=1.01)], calibration=IDEAL)
    assert m.counter(result, "payments", "handler_errors") == 3
    assert m.counter(result, "payments", "retries_scheduled") == 2
    assert m.counter(result, "payments", "dead_lettered") == 1
    dlq = result.ledgers[result.ledgers["service"] == "payments.dlq"]
    assert dlq["order_id"].tolist() == ["<unreadable>"] and m.dlq_peak(result, "payments.dlq") == 1
    # its two retries waited 0.5 s each in payments.retry; nothing waited behind it
    waiting = [t for t, v in series(result, "queue:payments.retry", "ready") if v]
    assert min(waiting) == pytest.approx(1.25) and max(waiting) == pytest.approx(2.0)
    after = int((result.requests["t_scheduled"] > 1.01).sum())
    assert m.lost(result) == 0 and m.processed_between(result, "payments", start=1.01) == after
    assert result.meta["drained"]


# ------------------------------------------------------------------------- broker

def test_the_broker_down_fails_each_produce_after_the_whole_timeout() -> None:
    """Down [1.01, 3.01), up kafka_restart_s (1 s) after the removal: an order whose
    produce times out (1 s) before 4.01 waits exactly 1 s and gets 503, compensated;
    a later one is delivered once the gateway has reconnected (within 50 ms), 202."""
    gateway = Knobs(timeout_s=1.0, pool_size=32, reconnect_max_s=0.05)
    result = simulate(kafka(gateway=gateway), constant(10, 6),
                      [fault("broker_down", at=1.01, duration=2)],
                      calibration=calibration(kafka_restart_s=1.0))
    start, end = m.fault_window(result)
    assert (start, end) == (pytest.approx(1.01), pytest.approx(4.01))
    requests = result.requests
    failed = requests[~requests["ok"]]
    assert set(failed["status"]) == {503}
    assert failed["t_scheduled"].round(2).tolist() == [round(1.1 + i / 10, 2) for i in range(20)]
    assert failed["latency_s"].tolist() == pytest.approx([1.0] * 20)
    assert m.counter(result, "gateway", "publish_errors") == 20
    late = requests[(requests["t_scheduled"] > 3.05) & (requests["t_scheduled"] < 4.01)]
    assert late["ok"].all()
    assert (late["t_scheduled"] + late["latency_s"]).tolist() == pytest.approx(
        [4.01] * len(late), abs=0.05)
    assert m.lost(result) == 0 and m.lost_events(result) == 0 and result.meta["drained"]


def test_a_message_handled_while_the_broker_went_down_is_handled_again() -> None:
    """Its forward cannot be delivered, nor its offset committed: after the group
    forms again it is read from the committed offset (a duplicate side effect)."""
    result = simulate(kafka(2, replicas=1, partitions=1, work_ms=200, timeout_s=1.0),
                      constant(2, 6), [fault("broker_down", at=1.1, duration=1)],
                      calibration=calibration(kafka_restart_s=0.5))
    assert m.counter(result, "payments", "forward_errors") == 1
    assert m.counter(result, "payments", "redelivered") == 1
    assert m.duplicated(result, "payments") == 1 and m.lost(result) == 0


# -------------------------------------------------------------- the group's session

@pytest.mark.parametrize(("kill", "back"), [
    (fault("restart", "payments", at=1), 1 + SESSION_S + 0.5),  # the sessions hold it
    (fault("kill", "payments", at=1, duration=10), 11.5 + 0.5),  # started again later
])
def test_a_killed_consumer_resumes_after_the_session_and_the_rejoin(kill: ServiceFault,
                                                                   back: float) -> None:
    """restart_s 0.5, kafka_rejoin_s 0.5: the group forms at max(ready, kill + 6 s)
    + 0.5 s; its lag grew by the rate meanwhile and drains after."""
    result = simulate(kafka(replicas=3, work_ms=20), constant(20, 14), [kill],
                      calibration=calibration(restart_s=0.5, kafka_rejoin_s=0.5))
    assert members_back(result, 1.0) == pytest.approx(back, abs=0.25)
    assert m.backlog_peak(result, "payments") == pytest.approx(20 * (back - 1), abs=5)
    assert m.lost(result) == 0 and result.meta["drained"]


@pytest.mark.parametrize(("kind", "duration", "rejoins"), [
    ("pause", 3, False), ("pause", 8, True), ("cut", 3, False), ("cut", 8, True)])
def test_the_group_keeps_its_members_for_the_session_only(kind: str, duration: float,
                                                           rejoins: bool) -> None:
    """A pause or a cut shorter than the session: the members read on where they were;
    longer: they are out at + 6 s and the group forms again after their return."""
    hurt = (fault("pause", "payments", at=1, duration=duration) if kind == "pause"
            else unreachable("payments", at=1, duration=duration))
    result = simulate(kafka(replicas=3, work_ms=20, reconnect_max_s=0.1), constant(20, 12),
                      [hurt], calibration=calibration(kafka_rejoin_s=0.5))
    members = series(result, "queue:payments", "consumers")
    assert (min(v for _, v in members) == 0) is rejoins
    if rejoins:
        gone = [t for t, v in members if v == 0]
        assert min(gone) == pytest.approx(1 + SESSION_S, abs=0.25)
        assert members_back(result, 1.0) == pytest.approx(1 + duration + 0.5, abs=0.35)
    held = duration + (0.5 if rejoins else 0.0)  # the rejoin after the return
    assert m.backlog_peak(result, "payments") == pytest.approx(20 * held, abs=6)
    assert m.lost(result) == 0 and result.meta["drained"]


@pytest.mark.parametrize(("pause_s", "again"), [(3, 0), (8, 1)])
def test_a_pause_past_the_session_redelivers_what_was_in_the_handler(pause_s: float,
                                                                     again: int) -> None:
    """Paused mid-handler: past the session its commit is refused and the message is
    read again from the committed offset, so the side effect happens twice."""
    result = simulate(kafka(replicas=1, partitions=1, work_ms=200), constant(2, 12),
                      [fault("pause", "payments", at=1.1, duration=pause_s)],
                      calibration=IDEAL)
    assert m.duplicated(result, "payments") == again
    assert m.counter(result, "payments", "redelivered") == again
    assert m.counter(result, "payments", "forward_errors") == again
    assert m.lost(result) == 0


@pytest.mark.parametrize("idempotent", [False, True])
def test_a_crash_before_the_commit_is_handled_again_by_the_new_process(
        idempotent: bool) -> None:
    result = simulate(kafka(replicas=3, idempotent=idempotent), constant(10, 12),
                      [fault("crash_at", "payments", at=1, point="after_process")],
                      calibration=calibration(restart_s=0.5, kafka_rejoin_s=0.5))
    assert m.lost(result) == 0
    assert m.duplicated(result) == (0 if idempotent else 1)
    assert m.counter(result, "payments", "duplicates_skipped") == (1 if idempotent else 0)
    # the crash came with the order of 1.0 s: back at + 6 s + the rejoin
    assert members_back(result, 1.0) == pytest.approx(1.0 + SESSION_S + 0.5, abs=0.25)


def test_a_stalled_consumer_keeps_its_members_while_its_lag_grows() -> None:
    result = simulate(kafka(replicas=3), constant(10, 6),
                      [fault("consumer_stall", "payments", at=1, duration=3)],
                      calibration=IDEAL)
    assert m.backlog_growth(result, 1.5, 4.0, "payments") == pytest.approx(10, rel=0.1)
    assert min(v for _, v in series(result, "queue:payments", "consumers")) == 3
    assert m.counter(result, "payments", "redelivered") == 0
    assert m.lost(result) == 0 and m.duplicated(result) == 0 and result.meta["drained"]


# ------------------------------------------------------------------------- replay

REPLAY_AT = 3.0  # after the flood (40 orders in [0, 2)) is handled and committed
BACK = REPLAY_AT + 0.5 + 0.5  # restart_s, then kafka_rejoin_s: the group formed again


@pytest.fixture(scope="module")
def replayed() -> dict[bool, RunResult]:
    """payments replayed at 3 s in a two-stage pipeline, naive and idempotent."""
    return {idempotent: simulate(kafka(2, replicas=3, work_ms=10, idempotent=idempotent),
                                 constant(20, 2), [fault("replay", "payments", at=REPLAY_AT)],
                                 calibration=calibration(restart_s=0.5, kafka_rejoin_s=0.5))
            for idempotent in (False, True)}


@pytest.mark.parametrize("idempotent", [False, True])
def test_a_replay_handles_every_accepted_order_again(replayed: dict[bool, RunResult],
                                                     idempotent: bool) -> None:
    """Every message of payments' topic is read again by a new process: naive, a second
    side effect for every order, here and at the next stage (its events are forwarded
    again); idempotent, once each and every replayed one skipped. The new process has
    read nothing before, so nothing counts as redelivered."""
    result = replayed[idempotent]
    accepted = len(m.accepted(result))
    assert accepted == 40 and m.lost(result) == 0 and result.meta["drained"]
    for stage in ("payments", "inventory"):
        assert set(m.processed(result, stage).values()) == {1 if idempotent else 2}
        assert m.duplicated(result, stage) == (0 if idempotent else accepted)
        assert m.counter(result, stage, "duplicates_skipped") == (accepted if idempotent
                                                                  else 0)
    # payments' counters are the new process's: it read the topic once
    assert m.counter(result, "payments", "received") == accepted
    assert m.counter(result, "payments", "redelivered") == 0
    events = result.events
    assert list(events["kind"]) == ["inject", "remove"]
    assert set(events["fault"]) == {"replay"} and set(events["target"]) == {"model/payments"}
    assert events["t"].tolist() == pytest.approx([REPLAY_AT + 0.5] * 2)  # back, one-shot


def test_after_a_replay_the_lag_is_the_topic_and_nothing_is_handled_until_the_group_forms(
        replayed: dict[bool, RunResult]) -> None:
    """From the stop (all idle: at once) the group is empty and its offsets are 0: its
    lag is the whole topic (40) until the group forms, restart_s + kafka_rejoin_s later;
    the new process handles nothing before that; then the lag drains."""
    result = replayed[False]
    window = [(t, v) for t, v in series(result, "queue:payments", "ready")
              if REPLAY_AT < t < BACK]
    assert window and {v for _, v in window} == {40}
    assert {v for t, v in series(result, "queue:payments", "consumers")
            if REPLAY_AT < t < BACK} == {0}
    # the new process (from 3.5 s, counting from zero) receives nothing before then
    received = [(t, v) for t, v in series(result, "service:payments", "received")
                if t >= REPLAY_AT + 0.5 and v > 0]
    assert min(t for t, _ in received) >= BACK
    assert {v for t, v in series(result, "queue:inventory", "ready")
            if REPLAY_AT < t < BACK} == {0}  # nothing forwarded meanwhile
    assert members_back(result, REPLAY_AT) == pytest.approx(BACK, abs=0.25)
    assert max(v for t, v in series(result, "queue:payments", "ready") if t > BACK + 0.5) == 0


def test_a_replay_lets_the_message_in_hand_finish_first() -> None:
    """One member, 200 ms a message, orders every 0.5 s: the stop at 1.1 s waits for
    the order of 1.0 s (side effect, commit: 1.2 s), then the group is empty; it forms
    at 1.2 + 0.5 + 0.5. Orders up to 1.0 s are handled twice, later ones once."""
    result = simulate(kafka(replicas=1, partitions=1, work_ms=200), constant(2, 3),
                      [fault("replay", "payments", at=1.1)],
                      calibration=calibration(restart_s=0.5, kafka_rejoin_s=0.5))
    scheduled = dict(zip(result.requests["order_id"], result.requests["t_scheduled"],
                         strict=True))
    assert {order: n for order, n in m.processed(result, "payments").items()} == {
        order: 2 if t <= 1.0 else 1 for order, t in scheduled.items()}
    assert result.events["t"].tolist() == pytest.approx([1.7, 2.5])  # back; load's end
    assert members_back(result, 1.1, members=1) == pytest.approx(2.2, abs=0.25)
    assert m.lost(result) == 0 and result.meta["drained"]


def test_a_replay_of_a_stuck_consumer_waits_for_the_sigkill_and_its_session() -> None:
    """Stalled in the handler, the member never closes: the runtime kills the process
    3 s after the SIGTERM (no commit), the group is empty only when the member's session
    has run out (6 s), then the rewind, the start and the rejoin."""
    result = simulate(kafka(replicas=1, partitions=1, work_ms=200), constant(2, 3),
                      [fault("consumer_stall", "payments", at=0.9, duration=15),
                       fault("replay", "payments", at=1.1)],
                      calibration=calibration(restart_s=0.5, kafka_rejoin_s=0.5),
                      drain_timeout_s=5)
    gone = [t for t, v in series(result, "queue:payments", "consumers") if v == 0]
    assert min(gone) == pytest.approx(1.1 + 3, abs=0.25)
    assert members_back(result, 1.1, members=1) == pytest.approx(1.1 + 3 + SESSION_S + 1,
                                                                 abs=0.25)
    assert m.lost(result) == 0 and result.meta["drained"]


def test_a_replay_before_anything_was_committed_is_an_error() -> None:
    """The real fault's check fails (rewound 0), so the trial would: said, not guessed."""
    with pytest.raises(ModelError, match="committed nothing"):
        simulate(kafka(), constant(10, 2), [fault("replay", "payments", at=0)],
                 calibration=IDEAL)


def test_a_replay_on_rabbitmq_is_refused() -> None:
    """A queue keeps nothing it delivered: the real fault refuses the RabbitMQ
    deployment (FaultSpecError), the model says so (NotModelled) before it runs."""
    with pytest.raises(NotModelled, match="RabbitMQ queue keeps nothing"):
        simulate(async_pipeline(1), constant(10, 2), [fault("replay", "payments", at=1)])


# ------------------------------------------------------------------- the gateway's link

def test_a_cut_gateway_link_delays_produces_and_fails_only_past_the_timeout() -> None:
    gateway = Knobs(timeout_s=1.0, pool_size=32, reconnect_max_s=0.05)
    short = simulate(kafka(gateway=gateway), constant(10, 4),
                     [unreachable("gateway", at=1.01, duration=0.5)], calibration=IDEAL)
    assert m.edge_errors(short) == 0
    assert m.edge_latency(short, 100) == pytest.approx(0.45, abs=0.05)  # 1.1 -> 1.51 + r
    long = simulate(kafka(gateway=gateway), constant(10, 4),
                    [unreachable("gateway", at=1.01, duration=1.5)], calibration=IDEAL)
    failed = long.requests[~long.requests["ok"]]
    assert failed["t_scheduled"].round(2).tolist() == [1.1, 1.2, 1.3, 1.4, 1.5]
    assert failed["latency_s"].tolist() == pytest.approx([1.0] * 5)
    assert m.lost(long) == 0 and m.lost_events(long) == 0


# ------------------------------------------------------------------------- ordering

def test_three_competing_members_keep_each_partitions_order() -> None:
    """Uneven work (an exponential tail) lets a member overtake another, so the ledger
    is out of arrival order overall; within a partition (one member's) never."""
    result = simulate(kafka(replicas=3, work_ms=5, work_jitter_ms=30), constant(40, 4),
                      calibration=IDEAL)
    numbers = [int(order.rsplit("-", 1)[1]) for order in m.processed(result, "payments")]
    assert len(numbers) == 160 and sum(m.out_of_order(result, "payments", 1)) > 0
    ids = dict(zip(result.requests.index, result.requests["order_id"], strict=True))
    for p in range(3):
        mine = [n for n in numbers if partition(ids[n]) == p]
        assert mine == sorted(mine), f"partition {p} out of order"


# ------------------------------------------------------------------ entry, and limits

def test_simulate_trial_picks_the_kafka_model(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    monkeypatch.setenv("TESTBED_CALIBRATION_DIR", str(tmp_path))  # the defaults
    result = simulate_trial(kafka(2, consumer_retries=1, dead_letter=True), constant(10, 2),
                            [], runtime="local")
    assert result.meta["simulated"] and result.meta["model"]["calibration"]["kafka_rejoin_s"]
    assert {"queue:payments", "queue:payments.retry", "queue:payments.dlq",
            "queue:inventory"} <= set(result.samples["source"])
    assert m.lost(result) == 0 and result.meta["drained"]


@pytest.mark.parametrize(("hurt", "needle"), [
    (fault("purge", "payments", at=1), "purge"),
    (fault("memory_alarm", at=1, duration=1), "memory_alarm"),
    (fault("crash_loop", "payments", at=1, duration=2), "crash_loop"),
    (fault("route_error", "payments", at=1, duration=1, route="/payments"), "route_error"),
    (fault("crash_at", "gateway", at=1, point="after_write"), "after_write"),
])
def test_what_the_kafka_model_does_not_reproduce_says_so(hurt: ServiceFault,
                                                         needle: str) -> None:
    with pytest.raises(NotModelled, match=needle):
        simulate(kafka(), constant(10, 2), [hurt])
