"""E8 async-flood detection: sync fails fast and visibly; async fails slowly and
invisibly, found only by a queue-depth alert (seed 004).

Fault: payments slows down: +L = 1.5 s latency on payments' link (sync: orders ->
payments; async: payments' AMQP link) for T = 4 s from t = 2 s, under R = 20 orders/s
for 10 s. Every service spends 20 ms per order; pools of 48 (R x L = 30 calls in
flight at most); async consumers take one message at a time (prefetch 1).
Model, sync: users wait U = 1 s, less than L, so every order placed during the fault
fails, and the user (and an edge alert) learns it U after sending. An alert on the
edge error rate (over 0.25 s windows of the time each outcome is seen, threshold 20%)
fires at the end of the first window holding a failure (every answer seen there is a
failure): U + 0..0.25 s after the injection (the model: 1.0 s; one window allowed).
Model, async: the edge only enqueues, so it sees no error at all, the fault adds nothing to
its answer, and its alert never fires. The slowed consumer
gets the next message only after an ack, each delivery delayed by L: mu_slow = 1 /
(L + 20 ms) = 0.66/s, so the backlog grows at R - mu_slow = 19.3/s to ~77 messages by
the removal. A queue-depth alert at Q = 40 ready messages fires
Q / (R - mu_slow) = 2.07 s after the injection, plus half the 0.25 s sampling period:
2.2 s (the model: 2.25 s). Once the latency is gone the consumer is back to mu = 1000 / (20 + 2)
= 45/s, so the backlog drains at mu - R = 25/s in 77 / 25 = 3.1 s (the model: 3.0 s). An operator
who, one second into the drain, projects backlog / measured drain rate predicts the
measured drain time within 25% (that one the operator's number, not the model's).
Nothing is lost. Every other number is the model's (testbed.model, simulated before
the run); times read off 0.25 s samples or windows are allowed one period.
Negative control: the edge-alert hypothesis read on the async run must fail (the alert
never fires), measured and on the model.
"""

from __future__ import annotations

import pytest

from testbed.analysis import Hypotheses, close_to
from testbed.load import constant
from testbed.observe import RunResult
from testbed.scenario import Experiment, Results, slower
from testbed.scenario import metrics as m
from testbed.scenario.predicted import predicted
from testbed.topology import Knobs, async_pipeline, sync_chain

RATE, START, T, DURATION = 20, 2.0, 4.0, 10.0
L_MS, WORK_MS, OVERHEAD_MS, POOL = 1500, 20.0, 2.0, 48
USER_TIMEOUT_S = 1.0
ALERT_WINDOW_S, ALERT_RATE = 0.25, 0.2  # edge alert: >= 20% failed in the last 0.25 s
DETECT_SLACK_S = 0.35  # window alignment (0.25 s), the order just before, send lag
QUEUE_ALERT, SAMPLE_S = 40, 0.25  # queue alert: ready messages; the sampling period
SLOW_RATE = 1000 / (L_MS + WORK_MS)  # mu_slow
NORMAL_RATE = 1000 / (WORK_MS + OVERHEAD_MS)  # mu
BACKLOG = (RATE - SLOW_RATE) * T
KNOBS = Knobs(work_ms=WORK_MS, prefetch=1, pool_size=POOL)


@pytest.fixture(scope="module")
def results(experiment: Experiment) -> Results:
    slow = slower("payments", L_MS, at=START, duration=T)
    return experiment.paired([sync_chain(2, knobs=KNOBS), async_pipeline(1, knobs=KNOBS)],
                             constant(RATE, DURATION), [slow], timeout_s=USER_TIMEOUT_S,
                             drain_timeout_s=15)


def edge_detect(result: RunResult) -> float | None:
    return m.edge_alert_time_to_detect(result, ALERT_RATE, ALERT_WINDOW_S)


def queue_detect(result: RunResult) -> float | None:
    return m.queue_time_to_detect(result, QUEUE_ALERT, "payments")


def edge_alert_hypotheses(result: RunResult, model: RunResult) -> Hypotheses:
    hypotheses = Hypotheses(f"E8 edge alert (>= {ALERT_RATE:.0%} failed in "
                            f"{ALERT_WINDOW_S:g} s): payments +{L_MS} ms at {RATE}/s")
    # a time read off 0.25 s windows is known to one window
    hypotheses.check(predicted("time to detect from edge errors", edge_detect, result, model,
                               abs=ALERT_WINDOW_S, unit="s"))
    return hypotheses


def queue_alert_hypotheses(result: RunResult, model: RunResult) -> Hypotheses:
    hypotheses = Hypotheses(f"E8 queue alert (>= {QUEUE_ALERT} ready): payments' link "
                            f"+{L_MS} ms for {T:g} s at {RATE}/s")
    hypotheses.check(predicted("time to detect from queue depth", queue_detect, result, model,
                               abs=SAMPLE_S, unit="s"))
    hypotheses.check(predicted("backlog at the removal", m.backlog_peak, result, model,
                               "payments", unit="messages"))
    hypotheses.check(predicted("drain time", m.drain_time, result, model, "payments",
                               abs=SAMPLE_S, unit="s"))
    # the operator's projection, one second into the drain, against the drain measured
    top, drained = m.backlog_peak(result, "payments"), m.drain_time(result, "payments")
    early = -m.backlog_growth(result, START + T, START + T + 1.0, "payments")
    hypotheses.check(close_to("drain time vs projection (backlog / early drain rate)",
                              top / early, drained, rel=0.25, unit="s",
                              none_text="never drained"))
    return hypotheses


def test_sync_failure_is_seen_at_the_edge_within_the_user_timeout(
        experiment: Experiment, results: Results) -> None:
    experiment.check(edge_alert_hypotheses(results["sync"], results.predicted("sync")))
    assert m.edge_errors(results["sync"], end=START - 0.1) == 0  # healthy before


def test_async_flood_is_invisible_at_the_edge_and_found_by_queue_depth(
        experiment: Experiment, results: Results) -> None:
    result, model = results["async"], results.predicted("async")
    hypotheses = queue_alert_hypotheses(result, model)
    hypotheses.check(predicted("async edge errors", m.edge_errors, result, model,
                               unit="orders"))
    # the edge only enqueues: the fault adds nothing to its answer (20 ms: machine noise
    # on 20 ms of work, 1.3% of L)
    hypotheses.check(predicted("async edge p50, added by the fault", m.edge_latency_added,
                               result, model, abs=0.02, unit="s"))
    hypotheses.check(predicted("async orders lost", m.lost, result, model, unit="orders"))
    experiment.check(hypotheses)


def test_negative_control_the_edge_alert_is_blind_to_the_async_flood(
        experiment: Experiment, results: Results) -> None:
    model = results.predicted("sync")
    experiment.negative_control(edge_alert_hypotheses(results["async"], model),
                                "time to detect from edge errors",
                                model=edge_alert_hypotheses(results.predicted("async"), model))
