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
failure): U + 0..0.25 s after the injection, predicted 1.125 s +- 0.35 s (the order
placed just before the injection can fail too, and sends can lag under noise).
Model, async: the edge only enqueues, so it sees no error at all, its p99 stays under a
fifth of the users' patience (0.2 s), and its alert never fires. The slowed consumer
gets the next message only after an ack, each delivery delayed by L: mu_slow = 1 /
(L + 20 ms) = 0.66/s, so the backlog grows at R - mu_slow = 19.3/s to ~77 messages by
the removal (+- 15%). A queue-depth alert at Q = 40 ready messages fires
Q / (R - mu_slow) = 2.07 s after the injection, plus half the 0.25 s sampling period:
2.2 s (+- 20%). Once the latency is gone the consumer is back to mu = 1000 / (20 + 2)
= 45/s, so the backlog drains at mu - R = 25/s in 77 / 25 = 3.1 s (+- 35%). An operator
who, one second into the drain, projects backlog / measured drain rate predicts the
measured drain time within 25%. Nothing is lost.
Negative control: the edge-alert hypothesis read on the async run must fail (the alert
never fires).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from testbed.analysis import (
    Hypotheses,
    at_most,
    close_to,
    equals,
    fault_windows,
    growth_rate,
    ledger_audit,
    peak,
    percentile,
    series,
    time_to_detect,
)
from testbed.faults import Planned, make_fault
from testbed.load import constant
from testbed.observe import RunResult, run_trial
from testbed.runtime import Runtime
from testbed.topology import Knobs, Topology, async_pipeline, sync_chain

from .conftest import accepted, edge_errors, report, save

RATE, START, T, DURATION = 20, 2.0, 4.0, 10.0
L_MS, WORK_MS, OVERHEAD_MS, POOL = 1500, 20.0, 2.0, 48
USER_TIMEOUT_S = 1.0
ALERT_WINDOW_S, ALERT_RATE = 0.25, 0.2  # edge alert: >= 20% failed in the last 0.25 s
DETECT_SLACK_S = 0.35  # window alignment (0.25 s), the order just before, send lag
QUEUE_ALERT = 40  # queue alert: ready messages
SAMPLE_S = 0.25
SLOW_RATE = 1000 / (L_MS + WORK_MS)  # mu_slow
NORMAL_RATE = 1000 / (WORK_MS + OVERHEAD_MS)  # mu
BACKLOG = (RATE - SLOW_RATE) * T
KNOBS = Knobs(work_ms=WORK_MS, prefetch=1, pool_size=POOL)


def flood_trial(runtime: Runtime, topology: Topology, link: str) -> RunResult:
    with runtime.deploy(topology) as deployment:
        plan = [Planned(make_fault(deployment, "latency", link, latency=L_MS), at=START,
                        duration=T)]
        return run_trial(deployment, constant(RATE, DURATION), plan,
                         timeout_s=USER_TIMEOUT_S, drain_timeout_s=15)


@pytest.fixture(scope="module")
def results(testbed_runtime: Runtime,
            pytestconfig: pytest.Config) -> Iterator[dict[str, RunResult]]:
    found = {"sync": flood_trial(testbed_runtime, sync_chain(2, knobs=KNOBS),
                                 "orders-payments"),
             "async": flood_trial(testbed_runtime, async_pipeline(1, knobs=KNOBS),
                                  "payments-broker")}
    save(pytestconfig, "e08-flood-detection", found)
    yield found


def fault_span(result: RunResult) -> tuple[float, float]:
    window = fault_windows(result.events)[0]
    assert window.end is not None, "the fault was never removed"
    return window.start, window.end


def seen_error_rate(requests: pd.DataFrame) -> pd.Series:
    """Edge error rate per window of the time each outcome was SEEN (answer, or the
    user giving up), indexed by the window's end: when an alert on it could fire."""
    seen = np.where(requests["latency_s"].notna(),
                    requests["t_scheduled"] + requests["latency_s"],
                    requests["t_sent"] + USER_TIMEOUT_S)
    windows = np.floor(seen / ALERT_WINDOW_S)
    rate = (~requests["ok"]).astype(float).groupby(windows).mean()
    return pd.Series(rate.to_numpy(), index=(rate.index + 1) * ALERT_WINDOW_S)


def edge_alert_hypotheses(result: RunResult) -> Hypotheses:
    injected, _ = fault_span(result)
    hypotheses = Hypotheses(f"E8 edge alert (>= {ALERT_RATE:.0%} failed in "
                            f"{ALERT_WINDOW_S:g} s): payments +{L_MS} ms at {RATE}/s")
    detected = time_to_detect(seen_error_rate(result.requests), ALERT_RATE, injected)
    hypotheses.check(close_to("time to detect from edge errors",
                              USER_TIMEOUT_S + ALERT_WINDOW_S / 2, detected,
                              abs=DETECT_SLACK_S, unit="s",
                              none_text="the alert never fired"))
    return hypotheses


def queue_alert_hypotheses(result: RunResult) -> Hypotheses:
    injected, _ = fault_span(result)
    backlog = series(result.samples, "queue:payments", "ready")
    hypotheses = Hypotheses(f"E8 queue alert (>= {QUEUE_ALERT} ready): payments' link "
                            f"+{L_MS} ms for {T:g} s at {RATE}/s")
    hypotheses.check(close_to("time to detect from queue depth",
                              QUEUE_ALERT / (RATE - SLOW_RATE) + SAMPLE_S / 2,
                              time_to_detect(backlog, QUEUE_ALERT, injected), rel=0.2,
                              unit="s", none_text="the alert never fired"))
    top, at = peak(backlog)
    hypotheses.check(close_to("backlog at the removal", BACKLOG, top, rel=0.15,
                              unit="messages"))
    drained = time_to_detect(backlog, 0, at, above=False)
    hypotheses.check(close_to("drain time", BACKLOG / (NORMAL_RATE - RATE), drained,
                              rel=0.35, unit="s", none_text="never drained"))
    early = -growth_rate(backlog, at, at + 1.0)  # what an operator sees 1 s in
    hypotheses.check(close_to("drain time vs projection (backlog / early drain rate)",
                              top / early, drained, rel=0.25, unit="s",
                              none_text="never drained"))
    return hypotheses


def test_sync_failure_is_seen_at_the_edge_within_the_user_timeout(
        results: dict[str, RunResult]) -> None:
    report(edge_alert_hypotheses(results["sync"]))
    assert edge_errors(results["sync"], end=START - 0.1) == 0  # healthy before


def test_async_flood_is_invisible_at_the_edge_and_found_by_queue_depth(
        results: dict[str, RunResult]) -> None:
    result = results["async"]
    hypotheses = queue_alert_hypotheses(result)
    hypotheses.check(equals("async edge errors", 0, edge_errors(result), unit="orders"))
    hypotheses.check(at_most("async edge p99 during the fault", USER_TIMEOUT_S / 5,
                             percentile(result.requests, 99, START, START + T), unit="s"))
    audit = ledger_audit(accepted(result), result.processed("payments"))
    hypotheses.check(equals("async orders lost", 0, audit.lost, unit="orders"))
    report(hypotheses)


def test_negative_control_the_edge_alert_is_blind_to_the_async_flood(
        results: dict[str, RunResult]) -> None:
    edge = edge_alert_hypotheses(results["async"])
    print("\n" + edge.report())
    assert "time to detect from edge errors" in {v.name for v in edge.failed}
