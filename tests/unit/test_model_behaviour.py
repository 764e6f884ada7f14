"""The model's mechanisms, one at a time, on small runs whose answers follow from the
services' code: timeouts that waste the callee's work, pool / L capacity, the breaker,
retries, deadline shedding, kill and pause, the consumer's prefetch under latency,
Toxiproxy's flush on removal, and the errors for what is not modelled."""

from __future__ import annotations

import math

import numpy as np
import pytest

from testbed.load import LoadSpecError, Step, constant
from testbed.model import Calibration, ModelError, NotModelled, simulate
from testbed.scenario import fault, slower, unreachable
from testbed.scenario import metrics as m
from testbed.topology import Knobs, async_pipeline, sync_chain

IDEAL = Calibration.ideal()


def test_a_seed_replays_the_same_run_and_even_arrivals_are_the_profiles() -> None:
    topology = sync_chain(2, knobs=Knobs(work_ms=5, work_jitter_ms=5))
    profile = constant(50, 4)
    first = simulate(topology, profile, seed=3, arrivals="poisson")
    again = simulate(topology, profile, seed=3, arrivals="poisson")
    other = simulate(topology, profile, seed=4, arrivals="poisson")
    assert first.requests.equals(again.requests) and first.samples.equals(again.samples)
    assert not first.requests["t_scheduled"].equals(other.requests["t_scheduled"])
    even = simulate(topology, profile)
    assert np.array_equal(even.requests["t_scheduled"].to_numpy(), profile.offsets())


def test_a_profile_beyond_the_generators_limits_can_be_asked_as_steps() -> None:
    with pytest.raises(LoadSpecError):
        constant(1000, 3601)
    result = simulate(sync_chain(1), [Step(0.5, 100.0)])
    assert len(result.requests) == 50 and result.requests["ok"].all()


def test_a_timed_out_call_fails_the_caller_while_the_callee_keeps_working() -> None:
    """payments answers 600 ms late, orders waits 300 ms: orders answers 504, the
    gateway 502, yet payments did every order (the work is wasted)."""
    topology = sync_chain(2, overrides={"orders": Knobs(timeout_s=0.3)})
    result = simulate(topology, constant(10, 2), [slower("payments", 600, at=1, duration=2)],
                      calibration=Calibration(fault_ms=0))
    failed = result.requests[~result.requests["ok"]]
    assert len(failed) == 10 and set(failed["error"]) == {"http_502"}
    assert m.failed_but_processed(result, "payments") == 10
    assert m.counter(result, "orders", "downstream_timeouts") == 10


def test_a_slow_hop_caps_the_callers_pool_at_pool_over_latency() -> None:
    """E1's funnel: the gateway holds a worker for the whole call, so 4 workers and
    400 ms serve 10 orders/s; 100 orders at 20/s take 10 s to answer."""
    topology = sync_chain(1, knobs=Knobs(pool_size=4, timeout_s=60.0))
    result = simulate(topology, constant(20, 5), [slower("orders", 400, at=0, duration=60)],
                      timeout_s=60.0, calibration=IDEAL)
    done = result.requests["t_scheduled"] + result.requests["waited_s"]
    assert result.requests["ok"].all()
    assert float(done.max()) == pytest.approx(100 / (4 / 0.4), rel=0.05)


def test_the_breaker_opens_and_answers_fast_while_open() -> None:
    knobs = Knobs(breaker_failures=3, breaker_reset_s=1.0, timeout_s=1.0)
    result = simulate(sync_chain(2, overrides={"orders": knobs}), constant(20, 6),
                      [unreachable("payments", at=1, duration=3)])
    rejected = m.counter(result, "orders", "breaker_rejections")
    errors = m.counter(result, "orders", "downstream_errors")
    assert rejected > 40  # ~60 orders hit the outage; most never tried
    assert 3 <= errors <= 3 + 3  # the opening three, then a half-open trial a second
    errors_seen = result.requests.loc[~result.requests["ok"], "error"]
    assert set(errors_seen) == {"http_502"}  # the gateway turns orders' 503 into a 502
    assert m.edge_errors(result, end=1.0) == 0 and m.edge_errors(result, start=5.0) == 0


def test_naive_retries_multiply_down_the_chain() -> None:
    """(1 + retries) attempts per hop: 3 x 3 = 9 calls at payments per failed order."""
    result = simulate(sync_chain(2, knobs=Knobs(retries=2)), constant(10, 3),
                      [unreachable("payments", at=1, duration=1)])
    failed = m.edge_errors(result)
    assert failed == 10
    calls = m.counter(result, "orders", "downstream_calls")
    assert calls == (30 - failed) + 9 * failed


def test_deadline_shedding_spares_work_for_orders_nobody_waits_for() -> None:
    """A gateway of capacity 10/s under 20/s, users waiting 1 s. Without deadlines it
    works through its queue for users long gone. With them but no reserve it sheds only
    orders already given up (and still starts ones that cannot finish); with a reserve
    of one service time it sheds those too, and its worker serves orders that make it."""
    runs = {}
    for deadline, reserve in ((False, 0.0), (True, 0.0), (True, 150.0)):
        slow = Knobs(pool_size=1, work_ms=100.0, deadline=deadline,
                     deadline_reserve_ms=reserve)
        runs[reserve if deadline else None] = simulate(
            sync_chain(1, overrides={"gateway": slow}), constant(20, 5), timeout_s=1.0)
    naive, late, reserved = runs[None], runs[0.0], runs[150.0]
    assert m.counter(naive, "gateway", "shed") == 0
    assert m.failed_but_processed(naive, "gateway") > 40  # wasted work
    assert m.counter(late, "gateway", "shed") > 50
    assert m.edge_successes(late) == m.edge_successes(naive)
    assert m.failed_but_processed(reserved, "gateway") == 0
    assert m.edge_successes(reserved) > 2 * m.edge_successes(naive)


def test_a_killed_sync_hop_refuses_until_restarted_and_ready() -> None:
    calibration = Calibration(restart_s=0.5, fault_ms=0)
    result = simulate(sync_chain(2), constant(20, 5), [fault("kill", "payments", at=1,
                                                             duration=2)],
                      calibration=calibration)
    events = result.events
    assert list(events["t"]) == [1.0, 3.5]  # removed once started and ready
    assert m.edge_errors(result, 1.0, 3.5) == 50
    assert m.edge_errors(result, end=1.0) == 0 and m.edge_errors(result, start=3.5) == 0


def test_a_paused_sync_hop_makes_its_callers_time_out() -> None:
    result = simulate(sync_chain(2, overrides={"orders": Knobs(timeout_s=0.5)}),
                      constant(10, 5), [fault("pause", "payments", at=1, duration=2)],
                      timeout_s=2.0)
    assert m.counter(result, "orders", "downstream_timeouts") >= 15  # sent in [1, 2.5)
    assert m.edge_errors(result, start=3.0) == 0
    # after the resume payments works off what queued while frozen, for nobody
    assert m.failed_but_processed(result, "payments") >= 5


def test_a_prefetch_1_consumer_takes_one_message_per_2l_plus_work() -> None:
    """E1/E8's rule: each delivery and each confirm waits L on the slowed link."""
    latency, work = 0.1, 0.01
    for depth, expected in ((2, 1 / (2 * latency + work)), (1, 1 / (latency + work))):
        topology = async_pipeline(depth, knobs=Knobs(prefetch=1, work_ms=work * 1000))
        result = simulate(topology, constant(20, 12), [slower("payments", 100, at=0,
                                                              duration=12)],
                          calibration=IDEAL, period_s=0.1)
        rate = m.counter_rate(result, "payments", "ok", 2.0, 10.0)
        assert rate == pytest.approx(expected, rel=0.05), (depth, rate, expected)


def test_removing_a_latency_lets_held_deliveries_through_at_once() -> None:
    """E8: the backlog peaks at the removal (Toxiproxy flushes what it holds); with the
    latency gone the consumer is back at 1 / (work + overheads) at once."""
    knobs = Knobs(work_ms=20.0, prefetch=1, pool_size=48)
    result = simulate(async_pipeline(1, knobs=knobs), constant(20, 10),
                      [slower("payments", 1500, at=2, duration=4)], timeout_s=1.0)
    backlog = m.backlog(result, "payments")
    at_removal = float(backlog.loc[5.99:6.01].iloc[0])
    assert m.backlog_peak(result, "payments") == at_removal
    assert at_removal == pytest.approx((20 - 1 / 1.52) * 4, rel=0.15)
    assert m.drain_time(result, "payments") == pytest.approx(at_removal / (45.5 - 20),
                                                             rel=0.35)


def test_a_killed_consumer_loses_nothing_and_its_backlog_drains() -> None:
    result = simulate(async_pipeline(2, knobs=Knobs(work_ms=5.0)), constant(20, 6),
                      [fault("kill", "payments", at=1, duration=2)])
    assert m.edge_errors(result) == 0
    assert m.backlog_peak(result, "payments") >= 20 * 2
    assert m.lost(result) == 0 and result.meta["drained"]


def test_a_paused_consumer_holds_its_prefetch_until_the_heartbeat_gives_it_up() -> None:
    """Frozen, it keeps ``prefetch`` deliveries unacked (out of the ready count); once
    the broker misses its heartbeats (heartbeat_s) the connection goes, and they too."""
    peaks = {}
    for heartbeat in (10, 1):
        knobs = Knobs(work_ms=5.0, heartbeat_s=heartbeat)
        result = simulate(async_pipeline(1, knobs=knobs), constant(20, 6),
                          [fault("pause", "payments", at=1, duration=3)])
        assert m.lost(result) == 0 and result.meta["drained"]
        peaks[heartbeat] = m.backlog_peak(result, "payments")
    assert peaks[10] == pytest.approx(20 * 3 - Knobs().prefetch, abs=5)
    assert peaks[1] == pytest.approx(20 * 3, abs=10)


def test_a_cut_gateway_link_fails_publishes_and_compensates() -> None:
    result = simulate(async_pipeline(1), constant(20, 4),
                      [fault("link_down", "gateway", at=1, duration=1)])
    failed = result.requests[~result.requests["ok"]]
    assert len(failed) == 20 and set(failed["error"]) == {"http_503"}
    assert m.lost(result) == 0 and m.lost_events(result) == 0  # the ledger took it back


def test_a_cut_consumer_redelivers_what_it_held() -> None:
    """Cut while a slow consumer holds prefetch deliveries: they come again, so its
    ledger may count an order twice (at-least-once), never lose one."""
    knobs = Knobs(work_ms=40.0, prefetch=5)
    result = simulate(async_pipeline(1, knobs=knobs), constant(40, 4),
                      [unreachable("payments", at=1.01, duration=1)])
    assert m.lost(result) == 0
    assert 1 <= m.duplicated(result) <= knobs.prefetch
    assert m.counter(result, "payments", "redelivered") >= 1


def test_repeated_cuts_lose_nothing_and_duplicate_at_most_what_was_held() -> None:
    knobs = Knobs(work_ms=150.0, prefetch=3, reconnect_max_s=0.05)
    cuts = [unreachable("payments", at=at, duration=0.05) for at in (1.0, 1.2, 1.45, 2.0)]
    result = simulate(async_pipeline(1, knobs=knobs), constant(5, 4), cuts)
    assert m.lost(result) == 0 and result.meta["drained"]
    assert m.duplicated(result) <= len(cuts) * knobs.prefetch
    assert m.calls(result, "payments") <= 20 + len(cuts) * knobs.prefetch


def test_samples_are_on_the_period_and_the_trial_keeps_a_tail() -> None:
    result = simulate(async_pipeline(1), constant(10, 2), period_s=0.25, tail_s=1.0)
    times = np.unique(result.samples["t"].to_numpy())
    assert np.allclose(times / 0.25, np.round(times / 0.25))
    assert times.max() >= 2.0 + 0.5 + 1.0 - 0.25  # load, settle, tail
    assert set(result.samples["metric"]) >= {"ready", "unacked", "consumers", "in_flight"}


def test_a_frozen_gateway_makes_the_generator_fall_behind() -> None:
    """64 senders, all waiting on a paused entry: later orders are sent late."""
    result = simulate(sync_chain(1), constant(50, 4), [fault("pause", "gateway", at=1,
                                                            duration=2)], timeout_s=5.0)
    assert result.meta["load"]["fell_behind"] is True
    late = result.requests["t_sent"] - result.requests["t_scheduled"]
    assert float(late.max()) > 0.5


@pytest.mark.parametrize(("faults", "needle"), [
    ([fault("partition", "payments", at=1, duration=1)], "partition"),
    ([fault("bandwidth", "payments", at=1, duration=1, rate=100)], "bandwidth"),
])
def test_what_is_not_modelled_says_so(faults: list, needle: str) -> None:
    with pytest.raises(NotModelled, match=needle):
        simulate(async_pipeline(1), constant(10, 2), faults)


def test_a_bad_fault_parameter_names_it() -> None:
    with pytest.raises(ModelError, match="rate"):
        simulate(async_pipeline(1), constant(10, 2),
                 [fault("error_rate", "payments", at=1, duration=1, rate=0.5)])
    with pytest.raises(ModelError, match="crash point"):
        simulate(async_pipeline(1), constant(10, 2),
                 [fault("crash_at", "payments", at=1, point="after_write")])


def test_partial_toxicity_and_bad_arguments_are_refused() -> None:
    with pytest.raises(NotModelled, match="toxicity"):
        simulate(sync_chain(2), constant(10, 2),
                 [fault("latency", "payments", at=0, duration=1, latency=100, toxicity=0.5)])
    with pytest.raises(ModelError, match="arrivals"):
        simulate(sync_chain(1), constant(10, 1), arrivals="bursty")
    with pytest.raises(ModelError, match="service"):
        simulate(sync_chain(1), constant(10, 1), service="pareto")
    with pytest.raises(ModelError, match="calibration"):
        Calibration(http_hop_ms=-1)


def test_faults_for_the_other_shape_are_skipped() -> None:
    poison = fault("poison", "payments", at=1)  # async only: a sync chain has no queue
    result = simulate(sync_chain(2), constant(10, 2), [poison])
    assert result.events.empty and result.meta["faults"] == []
    assert math.isnan(m.edge_error_rate(result, 10, 11))
