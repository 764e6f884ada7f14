"""E6 circuit breaker: a breaker stops calling a failing service, fails fast and gives it
time to recover (seed 003). Sync only: an async consumer has no caller waiting on it, so
there is nothing to fail fast for (a consumer-side breaker would only pause consumption,
which E1/E8 already show as backlog).

Fault: payments fails slowly: +3 s latency on the orders -> payments link (beyond orders'
timeout of 0.5 s) for T = 5 s from t = 2 s, under 20 orders/s for 11 s. Pools of 32
(20/s x 0.5 s = 10 calls in flight at most), so no pool runs dry in either run.
Model, without breaker: every call during the fault waits out orders' timeout, so the
edge p50 during the fault is 0.5 s and every call reaches payments and times out:
R x (T - timeout) = 90 (the calls of the fault's last 0.5 s still succeed: their answer
is late by less than the timeout once the latency is gone); the edge recovers within
one timeout (0.5 s) of the removal.
Model, with a breaker on orders (opens after F = 3 consecutive failures, half-open after
2 s): calls run concurrently through the breaker (only its state changes are locked), so
the calls started in the fault's first 0.5 s all wait out the timeout, and the third
failure opens it at timeout + (F - 1) / R = 0.6 s (seen at the next 0.25 s sample).
From 0.5 s after that on, calls are rejected without trying: the edge p50 is a few ms
(fast failures, the 503 fallback). Calls reaching
payments during the fault: the R x 0.6 s = 12 started before it opened, plus, per
half-open period that fits in the rest of the fault (one per reset + timeout = 2.5 s:
ceil(4.4 / 2.5) = 2), the trial and the calls let through while it is out (R x 0.5 s =
10): at most 12 + 2 x 11 = 34 (the model, following the breaker's timing: 22), against
100 without. After the removal the breaker stays open until its next half-open trial,
so the edge recovers at that trial (the model: 1.0 s). Every number is the model's
(testbed.model, simulated before the run); times read off 0.25 s samples or windows
are allowed one period.
Negative control: the fast-failure and bounded-calls claims read on the run without a
breaker must fail, measured and on the model.
"""

from __future__ import annotations

import math

import pytest

from testbed.analysis import Hypotheses
from testbed.load import constant
from testbed.observe import RunResult
from testbed.scenario import Experiment, Results, slower
from testbed.scenario import metrics as m
from testbed.scenario.predicted import predicted
from testbed.topology import Knobs, sync_chain

RATE, START, T, DURATION = 20, 2.0, 5.0, 11.0
SLOW_MS, TIMEOUT_S, POOL = 3000, 0.5, 32
FAILURES, RESET_S = 3, 2.0
USER_TIMEOUT_S, FAST_S = 3.0, 0.1
OPENS_AFTER_S = TIMEOUT_S + (FAILURES - 1) / RATE  # concurrent calls: the 3rd timeout
TRIALS = math.ceil((T - OPENS_AFTER_S) / (RESET_S + TIMEOUT_S))
MAX_CALLS = RATE * OPENS_AFTER_S + TRIALS * (1 + RATE * TIMEOUT_S)
NO_BREAKER = Knobs(pool_size=POOL, timeout_s=TIMEOUT_S)
WITH_BREAKER = Knobs(pool_size=POOL, timeout_s=TIMEOUT_S, breaker_failures=FAILURES,
                     breaker_reset_s=RESET_S)
FAST = "edge p50 once the breaker is open (fast failures)"
CALLS = "calls reaching payments during the fault"


@pytest.fixture(scope="module")
def results(experiment: Experiment) -> Results:
    """With and without a breaker on orders, at the same time."""
    chains = [sync_chain(2, knobs=Knobs(pool_size=POOL), overrides={"orders": orders}, name=name)
              for name, orders in (("no_breaker", NO_BREAKER), ("breaker", WITH_BREAKER))]
    return experiment.paired(chains, constant(RATE, DURATION),
                             [slower("payments", SLOW_MS, at=START, duration=T)],
                             timeout_s=USER_TIMEOUT_S)


def calls(result: RunResult) -> float:
    """Calls orders made to payments during the fault: each of them timed out (3 s late
    against 0.5 s), and no other call did (counted over the run: no sampling grid)."""
    return m.counter(result, "orders", "downstream_timeouts")


def recovery(result: RunResult) -> float | None:
    """Edge recovery over 0.25 s windows: finer than the default, for half-second claims."""
    return m.time_to_recover_edge(result, window_s=0.25)


def fast_p50(result: RunResult) -> float:
    """The edge p50 from 0.5 s after the breaker should have opened to the removal."""
    injected, removed = m.fault_window(result)
    return m.edge_latency(result, 50, injected + OPENS_AFTER_S + 0.5, removed)


def slow_p50(result: RunResult) -> float:
    return m.edge_latency(result, 50, *m.fault_window(result))


def opened_after(result: RunResult) -> float | None:
    return m.counter_time_to_detect(result, "orders", "breaker_rejections")


# times read off 0.25 s samples or windows are known to one period: abs=0.25
def breaker_hypotheses(result: RunResult, model: RunResult) -> Hypotheses:
    h = Hypotheses(f"E6 with breaker ({FAILURES} failures, reset {RESET_S:g} s): "
                   f"payments +{SLOW_MS} ms for {T:g} s at {RATE}/s")
    h.check(predicted("breaker opened after", opened_after, result, model, abs=0.25,
                      unit="s"))
    h.check(predicted(FAST, fast_p50, result, model, abs=0.02, unit="s"))
    h.check(predicted(CALLS, calls, result, model, abs=2, unit="calls"))
    h.check(predicted("edge recovery after removal (half-open trial)", recovery, result,
                      model, abs=0.25, unit="s"))
    return h


def test_without_breaker_failures_are_slow(experiment: Experiment, results: Results) -> None:
    result, model = results["no_breaker"], results.predicted("no_breaker")
    h = Hypotheses(f"E6 without breaker: payments +{SLOW_MS} ms for {T:g} s at "
                   f"{RATE}/s, orders' timeout {TIMEOUT_S:g} s")
    h.check(predicted("edge p50 during the fault (slow failures)", slow_p50, result, model,
                      unit="s"))
    h.check(predicted(CALLS, calls, result, model, abs=2, unit="calls"))
    h.check(predicted("edge recovery after removal", recovery, result, model, abs=0.25,
                      unit="s"))
    experiment.check(h)
    assert m.edge_errors(result, end=START) == 0  # healthy before the fault


def test_with_breaker_failures_are_fast_and_calls_bounded(experiment: Experiment,
                                                          results: Results) -> None:
    experiment.check(breaker_hypotheses(results["breaker"], results.predicted("breaker")))
    assert m.edge_errors(results["breaker"], end=START) == 0


def test_negative_control_without_breaker_the_fast_failure_claims_fail(
        experiment: Experiment, results: Results) -> None:
    model = results.predicted("breaker")
    experiment.negative_control(breaker_hypotheses(results["no_breaker"], model), FAST, CALLS,
                                model=breaker_hypotheses(results.predicted("no_breaker"),
                                                         model))
