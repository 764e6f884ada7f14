"""E7 backpressure: sync self-limits and shows errors; async accepts everything unless
backpressure is built in (seed 004).

Fault: payments' capacity below the arrival rate for the whole run: it spends W =
100 ms per order, one at a time (sync: a pool of 1 worker; async: prefetch 1), so it
serves mu = 1000 / (W + ~4 ms of overhead) = 9.6 orders/s against R = 20 orders/s,
for D = 6 s.
Model, sync (gateway -> orders -> payments, users wait U = 2 s): payments is capped at
mu (+- 20%). Pools of 8 keep at most 8 calls queued at payments (0.8 s < orders'
timeout), so the queue forms in front of the gateway's workers and grows at R - mu; the
order scheduled t seconds in waits ~t (R - mu) / mu. The first edge error (a user
giving up) is at t* = U mu / (R - mu) = 1.9 s (+- 0.6 s), and from then on the error
rate is at least 1 - mu / R = 52%. Worse, the gateway serves its FIFO queue without
knowing who already left, so once waits exceed U every answer comes too late: the edge
goodput from t* + 1.5 s on is predicted ~0 (at most 2 orders), although payments keeps
working at mu.
Model, sync with deadlines (the fix): the user's patience travels with the order
(X-Request-Deadline = send time + U), every hop honours it (knob `deadline`), and the
gateway sheds an order when less than Q = 1.0 s is left (`deadline_reserve_ms`): enough
for the 8 calls orders can have queued at payments (8 x 0.104 = 0.83 s). The gateway's
queue then holds no order older than U - Q, so what it dispatches can finish in time:
payments still works at mu and the edge delivers ~mu per second from t* + 1.5 s on
(mu x the rest of the schedule = 25 orders, +- 30%) instead of ~0; payments does no work
the user never gets (at most 3 orders); every edge failure is a fast 504, none a user
giving up, answered within U - Q + 0.5 s.
Model, async without limits: the edge answers every order (0 errors); the backlog grows
at R - mu = 10.4/s (+- 20%), to ~(R - mu) D = 62, and drains afterwards; nothing lost.
Model, async with max_length N = 20 and overflow reject-publish on payments' queue: the
queue never holds more than N; the edge answers 429 for what does not fit:
R D - mu D - N - 1 (the one delivered, unacked) = 41 orders (+- 30%); every order the
edge accepted is processed.
Negative control: the bounded-queue hypotheses read on the run without limits must fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pandas as pd
import pytest

from testbed.analysis import (
    Hypotheses,
    at_least,
    at_most,
    close_to,
    equals,
    growth_rate,
    ledger_audit,
    peak,
    series,
)
from testbed.load import constant
from testbed.observe import RunResult, run_trial
from testbed.runtime import Runtime
from testbed.topology import Knobs, Topology, async_pipeline, sync_chain

from .conftest import accepted, edge_errors, report, save

RATE, DURATION, WORK_MS, OVERHEAD_MS = 20, 6.0, 100.0, 4.0
USER_TIMEOUT_S = 2.0
MAX_LENGTH = 20
CAPACITY = 1000 / (WORK_MS + OVERHEAD_MS)  # mu, orders/s
FIRST_ERROR_AT = USER_TIMEOUT_S * CAPACITY / (RATE - CAPACITY)
COLLAPSE_AT = FIRST_ERROR_AT + 1.5  # from here on the plain chain delivers ~nothing
SLOW = Knobs(work_ms=WORK_MS, pool_size=1, prefetch=1)
RESERVE_S = 1.0
DEADLINES = Knobs(deadline=True)
BOUNDED = Knobs(work_ms=WORK_MS, prefetch=1, max_length=MAX_LENGTH, overflow="reject-publish")


def trial(runtime: Runtime, topology: Topology) -> RunResult:
    with runtime.deploy(topology) as deployment:
        return run_trial(deployment, constant(RATE, DURATION), [], timeout_s=USER_TIMEOUT_S,
                         drain_timeout_s=15)


@pytest.fixture(scope="module")
def results(testbed_runtime: Runtime,
            pytestconfig: pytest.Config) -> Iterator[dict[str, RunResult]]:
    found = {
        "sync": trial(testbed_runtime,
                      sync_chain(2, overrides={"payments": SLOW}, name="sync")),
        "deadlines": trial(testbed_runtime, sync_chain(2, knobs=DEADLINES, overrides={
            "gateway": replace(DEADLINES, deadline_reserve_ms=RESERVE_S * 1000),
            "payments": replace(SLOW, deadline=True)}, name="deadlines")),
        "unbounded": trial(testbed_runtime,
                           async_pipeline(1, overrides={"payments": SLOW}, name="unbounded")),
        "bounded": trial(testbed_runtime,
                         async_pipeline(1, overrides={"payments": BOUNDED}, name="bounded")),
    }
    save(pytestconfig, "e07-backpressure", found)
    yield found


def backlog(result: RunResult) -> pd.Series:
    return series(result.samples, "queue:payments", "ready")


def rejected(result: RunResult) -> int:
    """Orders the edge turned away with 429 (queue full), not failed otherwise."""
    return int((result.requests["status"] == 429).sum())


def audit_check(hypotheses: Hypotheses, result: RunResult) -> None:
    audit = ledger_audit(accepted(result), result.processed("payments"))
    hypotheses.check(equals("orders lost", 0, audit.lost, unit="orders"))


def bounded_hypotheses(result: RunResult) -> Hypotheses:
    hypotheses = Hypotheses(f"E7 async, max_length {MAX_LENGTH} + reject-publish: "
                            f"{RATE}/s into ~{CAPACITY:.1f}/s")
    hypotheses.check(at_most("queue peak", MAX_LENGTH, peak(backlog(result))[0],
                             unit="messages"))
    expected = (RATE - CAPACITY) * DURATION - MAX_LENGTH - 1
    hypotheses.check(close_to("edge answers 429", expected, rejected(result), rel=0.3,
                              unit="orders"))
    hypotheses.check(equals("edge failures other than 429",
                            0, edge_errors(result) - rejected(result), unit="orders"))
    audit_check(hypotheses, result)
    return hypotheses


def check_payments_throughput(hypotheses: Hypotheses, result: RunResult) -> None:
    """Payments works at its capacity whatever the edge sees."""
    served = series(result.samples, "service:payments", "ok")
    hypotheses.check(close_to("payments throughput", CAPACITY,
                              growth_rate(served, 1.0, DURATION), rel=0.2, unit="orders/s"))


def test_sync_caps_throughput_and_fails_at_the_edge(results: dict[str, RunResult]) -> None:
    result = results["sync"]
    requests = result.requests
    hypotheses = Hypotheses(f"E7 sync: {RATE}/s into payments' ~{CAPACITY:.1f}/s, "
                            f"users wait {USER_TIMEOUT_S:g} s")
    check_payments_throughput(hypotheses, result)
    failed = requests.loc[~requests["ok"], "t_scheduled"]
    hypotheses.check(close_to("first edge error (scheduled at)", FIRST_ERROR_AT,
                              float(failed.min()) if len(failed) else None, abs=0.6,
                              unit="s", none_text="no edge error"))
    late = requests[requests["t_scheduled"] >= FIRST_ERROR_AT]
    hypotheses.check(at_least("edge error rate after the first error", 1 - CAPACITY / RATE,
                              float((~late["ok"]).mean())))
    collapsed = requests[requests["t_scheduled"] >= COLLAPSE_AT]
    hypotheses.check(at_most("edge goodput once waits exceed the user's patience", 2,
                             int(collapsed["ok"].sum()), unit="orders"))
    report(hypotheses)


def deadline_hypotheses(result: RunResult) -> Hypotheses:
    requests = result.requests
    hypotheses = Hypotheses(f"E7 sync with deadlines: the gateway sheds what cannot finish "
                            f"within the user's {USER_TIMEOUT_S:g} s (reserve {RESERVE_S:g} s)")
    check_payments_throughput(hypotheses, result)
    window = requests[requests["t_scheduled"] >= COLLAPSE_AT]
    hypotheses.check(close_to("edge goodput once waits exceed the user's patience",
                              CAPACITY * (DURATION - COLLAPSE_AT), int(window["ok"].sum()),
                              rel=0.3, unit="orders"))
    wasted = set(result.processed("payments")) - accepted(result)
    hypotheses.check(at_most("orders payments processed for users who got an error", 3,
                             len(wasted), unit="orders"))
    failed = requests[~requests["ok"]]
    hypotheses.check(equals("edge failures that were users giving up (timeouts)", 0,
                            int((failed["error"] == "timeout").sum()), unit="orders"))
    hypotheses.check(at_most("slowest edge failure (s)", USER_TIMEOUT_S - RESERVE_S + 0.5,
                             float(failed["latency_s"].max()) if len(failed) else None,
                             unit="s"))
    return hypotheses


def test_sync_with_deadlines_sheds_fast_and_keeps_delivering(
        results: dict[str, RunResult]) -> None:
    report(deadline_hypotheses(results["deadlines"]))


def test_negative_control_without_deadlines_the_chain_delivers_nothing(
        results: dict[str, RunResult]) -> None:
    failed = {v.name for v in deadline_hypotheses(results["sync"]).failed}
    assert {"edge goodput once waits exceed the user's patience",
            "orders payments processed for users who got an error",
            "edge failures that were users giving up (timeouts)"} <= failed


def test_async_without_limits_accepts_everything(results: dict[str, RunResult]) -> None:
    result = results["unbounded"]
    hypotheses = Hypotheses(f"E7 async, no queue limit: {RATE}/s into ~{CAPACITY:.1f}/s")
    hypotheses.check(equals("edge errors", 0, edge_errors(result), unit="orders"))
    hypotheses.check(close_to("backlog growth", RATE - CAPACITY,
                              growth_rate(backlog(result), 1.0, DURATION), rel=0.2,
                              unit="msg/s"))
    audit_check(hypotheses, result)
    report(hypotheses)


def test_async_with_max_length_rejects_at_the_edge(results: dict[str, RunResult]) -> None:
    report(bounded_hypotheses(results["bounded"]))


def test_negative_control_without_limit_the_queue_is_not_bounded(
        results: dict[str, RunResult]) -> None:
    failed = {v.name for v in bounded_hypotheses(results["unbounded"]).failed}
    assert {"queue peak", "edge answers 429"} <= failed
