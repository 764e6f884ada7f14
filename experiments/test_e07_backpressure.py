"""E7 backpressure: sync self-limits and shows errors; async accepts everything unless
backpressure is built in (seed 004).

Fault: payments' capacity below the arrival rate for the whole run: it spends W =
100 ms per order, one at a time (sync: a pool of 1 worker; async: prefetch 1), so it
serves mu = 1000 / (W + ~4 ms of overhead) = 9.6 orders/s against R = 20 orders/s,
for D = 6 s.
Model, sync (gateway -> orders -> payments, users wait U = 2 s): payments is capped at
mu. Pools of 8 keep at most 8 calls queued at payments (0.8 s < orders'
timeout), so the queue forms in front of the gateway's workers and grows at R - mu; the
order scheduled t seconds in waits ~t (R - mu) / mu. The first edge error (a user
giving up) is at t* = U mu / (R - mu) = 1.9 s, and from then on the error rate is at
least 1 - mu / R = 52% (the model: 100%, for the reason that follows). Worse, the
gateway serves its FIFO queue without knowing who already left, so once waits exceed U
every answer comes too late: the edge goodput from t* + 1.5 s on is predicted 0,
although payments keeps
working at mu.
Model, sync with deadlines (the fix): the user's patience travels with the order
(X-Request-Deadline = send time + U), every hop honours it (knob `deadline`), and the
gateway sheds an order when less than Q = 1.0 s is left (`deadline_reserve_ms`): enough
for the 8 calls orders can have queued at payments (8 x 0.104 = 0.83 s). The gateway's
queue then holds no order older than U - Q, so what it dispatches can finish in time:
payments still works at mu and the edge delivers ~mu per second from t* + 1.5 s on
(mu x the rest of the schedule = 25 orders; the model: 26) instead of 0; payments does
no work the user never gets; every edge failure is a fast 504, none a user
giving up, answered within U - Q (the model: 1.05 s).
Model, async without limits: the edge answers every order (0 errors); the backlog grows
at R - mu = 10.4/s, to ~(R - mu) D = 62, and drains afterwards; nothing lost.
Model, async with max_length N = 20 and overflow reject-publish on payments' queue: the
queue never holds more than N; the edge answers 429 for what does not fit:
R D - mu D - N - 1 (the one delivered, unacked) = 41 orders; every order the edge accepted is
processed. Every number is the model's (testbed.model, simulated before the run).
Negative controls: the bounded-queue hypotheses read on the run without limits, and the
deadline hypotheses on the chain without deadlines, must fail, measured and on the model.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from testbed.analysis import Hypotheses
from testbed.load import constant
from testbed.observe import RunResult
from testbed.scenario import Experiment, Results
from testbed.scenario import metrics as m
from testbed.scenario.predicted import predicted
from testbed.topology import Knobs, async_pipeline, sync_chain

RATE, DURATION, WORK_MS, OVERHEAD_MS = 20, 6.0, 100.0, 4.0
USER_TIMEOUT_S, RESERVE_S, MAX_LENGTH = 2.0, 1.0, 20
CAPACITY = 1000 / (WORK_MS + OVERHEAD_MS)  # mu, orders/s
FIRST_ERROR_AT = USER_TIMEOUT_S * CAPACITY / (RATE - CAPACITY)
COLLAPSE_AT = FIRST_ERROR_AT + 1.5  # from here on the plain chain delivers ~nothing
SLOW = Knobs(work_ms=WORK_MS, pool_size=1, prefetch=1)
BOUNDED = Knobs(work_ms=WORK_MS, prefetch=1, max_length=MAX_LENGTH, overflow="reject-publish")
GOODPUT = "edge goodput once waits exceed the user's patience"
WASTED = "orders payments processed for users who got an error"
GAVE_UP = "edge failures that were users giving up (timeouts)"


@pytest.fixture(scope="module")
def results(experiment: Experiment) -> Results:
    """The four variants at the same time, each on its own deployment."""
    deadlines = {"gateway": Knobs(deadline=True, deadline_reserve_ms=RESERVE_S * 1000),
                 "payments": replace(SLOW, deadline=True)}
    return experiment.paired([
        sync_chain(2, overrides={"payments": SLOW}, name="sync"),
        sync_chain(2, knobs=Knobs(deadline=True), overrides=deadlines, name="deadlines"),
        async_pipeline(1, overrides={"payments": SLOW}, name="unbounded"),
        async_pipeline(1, overrides={"payments": BOUNDED}, name="bounded"),
    ], constant(RATE, DURATION), timeout_s=USER_TIMEOUT_S, drain_timeout_s=15)


def payments_rate(result: RunResult) -> float:
    return m.counter_rate(result, "payments", "ok", 1.0, DURATION)


def rejected(result: RunResult) -> float:
    return m.edge_errors_of(result, "http_429")


def other_failures(result: RunResult) -> float:
    return m.edge_errors(result) - rejected(result)


def goodput(result: RunResult) -> float:
    return m.edge_successes(result, COLLAPSE_AT)


def wasted(result: RunResult) -> float:
    return m.audit(result, "payments").unexpected


def gave_up(result: RunResult) -> float:
    return m.edge_errors_of(result, "timeout")


def throughput(h: Hypotheses, result: RunResult, model: RunResult) -> None:
    """Payments works at its capacity whatever the edge sees."""
    h.check(predicted("payments throughput", payments_rate, result, model, unit="orders/s"))


def bounded_hypotheses(result: RunResult, model: RunResult) -> Hypotheses:
    h = Hypotheses(f"E7 async, max_length {MAX_LENGTH} + reject-publish: "
                   f"{RATE}/s into ~{CAPACITY:.1f}/s")
    h.check(predicted("queue peak", m.backlog_peak, result, model, "payments",
                      unit="messages"))
    h.check(predicted("edge answers 429", rejected, result, model, unit="orders"))
    h.check(predicted("edge failures other than 429", other_failures, result, model,
                      unit="orders"))
    h.check(predicted("orders lost", m.lost, result, model, "payments", unit="orders"))
    return h


def deadline_hypotheses(result: RunResult, model: RunResult) -> Hypotheses:
    h = Hypotheses(f"E7 sync with deadlines: the gateway sheds what cannot finish "
                   f"within the user's {USER_TIMEOUT_S:g} s (reserve {RESERVE_S:g} s)")
    throughput(h, result, model)
    h.check(predicted(GOODPUT, goodput, result, model, abs=2, unit="orders"))
    h.check(predicted(WASTED, wasted, result, model, abs=2, unit="orders"))
    h.check(predicted(GAVE_UP, gave_up, result, model, abs=2, unit="orders"))
    h.check(predicted("slowest edge failure (s)", m.slowest_edge_error, result, model,
                      unit="s"))
    return h


def test_sync_caps_throughput_and_fails_at_the_edge(experiment: Experiment,
                                                    results: Results) -> None:
    result, model = results["sync"], results.predicted("sync")
    h = Hypotheses(f"E7 sync: {RATE}/s into payments' ~{CAPACITY:.1f}/s, "
                   f"users wait {USER_TIMEOUT_S:g} s")
    throughput(h, result, model)
    h.check(predicted("first edge error (scheduled at)", m.first_edge_error, result, model,
                      unit="s"))
    h.check(predicted("edge error rate after the first error", m.edge_error_rate, result,
                      model, FIRST_ERROR_AT))
    h.check(predicted(GOODPUT, goodput, result, model, abs=2, unit="orders"))
    experiment.check(h)


def test_sync_with_deadlines_sheds_fast_and_keeps_delivering(experiment: Experiment,
                                                             results: Results) -> None:
    experiment.check(deadline_hypotheses(results["deadlines"], results.predicted("deadlines")))


def test_negative_control_without_deadlines_the_chain_delivers_nothing(
        experiment: Experiment, results: Results) -> None:
    model = results.predicted("deadlines")
    experiment.negative_control(deadline_hypotheses(results["sync"], model),
                                GOODPUT, WASTED, GAVE_UP,
                                model=deadline_hypotheses(results.predicted("sync"), model))


def test_async_without_limits_accepts_everything(experiment: Experiment,
                                                 results: Results) -> None:
    result, model = results["unbounded"], results.predicted("unbounded")
    h = Hypotheses(f"E7 async, no queue limit: {RATE}/s into ~{CAPACITY:.1f}/s")
    h.check(predicted("edge errors", m.edge_errors, result, model, unit="orders"))
    h.check(predicted("backlog growth", m.backlog_growth, result, model, 1.0, DURATION,
                      "payments", unit="msg/s"))
    h.check(predicted("orders lost", m.lost, result, model, "payments", unit="orders"))
    experiment.check(h)


def test_async_with_max_length_rejects_at_the_edge(experiment: Experiment,
                                                   results: Results) -> None:
    experiment.check(bounded_hypotheses(results["bounded"], results.predicted("bounded")))


def test_negative_control_without_limit_the_queue_is_not_bounded(experiment: Experiment,
                                                                 results: Results) -> None:
    model = results.predicted("bounded")
    experiment.negative_control(bounded_hypotheses(results["unbounded"], model), "queue peak",
                                "edge answers 429",
                                model=bounded_hypotheses(results.predicted("unbounded"), model))
