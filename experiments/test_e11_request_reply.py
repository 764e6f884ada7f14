"""E11 request-reply: an async request-reply waits in the queue while the consumer
restarts, where a plain HTTP call fails (seed 004).

Fault: payments (sync: the last hop; async: the only consumer) is killed (SIGKILL) at
A = 2 s and started again D = 6 s later. The fault ends when the new process is ready
(listening, resp. consuming), so the outage is D + R with R the restart: 0.15 s on an
idle machine, up to 0.7 s on a busy one; the model takes R from its calibration (0.26 s,
the catalog runs' median), and D is long enough that R's noise moves no number by more
than 7%. R only has to be a restart, not a hang (R <= 3 s: asserted, not a hypothesis).
Load: 10 orders/s for 10 s, users wait up to 14 s.
Model, sync (gateway -> orders -> payments): every order that reaches payments while it
is down fails at once (its proxy finds nobody behind it), so the edge fails
r x (D + R) orders, ~62, and none before A.
Async (gateway -> payments, request-reply with a 12 s timeout > D + R; the gateway has a
worker for each waiting caller, r x (D + R) ~ 63): no order fails at the edge (0
errors). An order placed during the outage waits in the queue until the consumer is
back, so every one of them is answered at A + D + R, whatever its send time: latency =
remaining outage + R, the longest = D + R (± 0.5 s, R's noise), ~6.3 s, and the outage's
orders are answered within a fraction of a second of the consumer being ready (the model
charges 2.5 ms per reply, handler and confirm, for 0.15 s in all; the real consumer,
which starts before its readiness is seen, 0.05-0.07 s: 0.2 s allowed). Ledger: every accepted order
processed exactly once (the consumer is idempotent, so a message it had processed but
not acked when killed is redelivered but not charged twice).
Every number is the model's (testbed.model, simulated before the run).
Negative control: a request-reply timeout of 1 s, shorter than the outage: the outage
orders get 504 and the "no errors" hypothesis fails, measured and on the model.
"""

from __future__ import annotations

import pytest

from testbed.analysis import Hypotheses
from testbed.load import constant
from testbed.observe import RunResult
from testbed.scenario import Experiment, Results, fault
from testbed.scenario import metrics as m
from testbed.scenario.predicted import predicted
from testbed.topology import Knobs, Topology, async_pipeline, sync_chain

RATE, A, D, DURATION = 10, 2.0, 6.0, 10.0
MAX_RESTART_S = 3.0  # a restart, not a hang
RESTART_NOISE_S = 0.5  # a process start: 0.15 s on an idle machine, up to 0.7 s on a busy one
REPLY_TIMEOUT_S, SHORT_TIMEOUT_S, USER_TIMEOUT_S = 12.0, 1.0, 14.0
POOL = 96  # gateway workers: one per waiting caller, r x (D + R) ~ 63, with room
ZERO_ERRORS = "async edge errors"
SHORT = f"async_timeout_{SHORT_TIMEOUT_S:.0f}s"  # the negative control's trial


def request_reply(timeout_s: float) -> Topology:
    gateway = Knobs(request_reply=True, timeout_s=timeout_s, pool_size=POOL)
    return async_pipeline(1, overrides={"gateway": gateway, "payments": Knobs(idempotent=True)})


@pytest.fixture(scope="module")
def results(experiment: Experiment) -> Results:
    """payments killed at A, started again D later, under the load; all three at once."""
    shapes = {"sync": sync_chain(2, knobs=Knobs(timeout_s=1.0)),
              "async": request_reply(REPLY_TIMEOUT_S), SHORT: request_reply(SHORT_TIMEOUT_S)}
    return experiment.paired(shapes.values(), constant(RATE, DURATION),
                             [fault("kill", "payments", at=A, duration=D)], keys=list(shapes),
                             timeout_s=USER_TIMEOUT_S, drain_timeout_s=10)


def restart(result: RunResult) -> float:
    """The restart R: from the kill to the restarted service being ready (the fault's
    removal waits for it), less the planned D."""
    start, end = m.fault_window(result)
    return end - start - D


def outage_answered(result: RunResult) -> float | None:
    """The orders scheduled while payments was down, answered from its return."""
    return m.outcome_from_removal(result, A + 0.1, A + D)


def longest_answer(result: RunResult) -> float:
    return m.edge_latency(result, 100)


def async_hypotheses(result: RunResult, model: RunResult) -> Hypotheses:
    """The claim: callers wait out the restart in the queue, none fails."""
    hypotheses = Hypotheses(f"E11 {result.name}: consumer killed for {D:.0f} s at "
                            f"{RATE}/s, callers wait for the reply")
    assert restart(result) <= MAX_RESTART_S  # a restart, not a hang
    hypotheses.check(predicted(ZERO_ERRORS, m.edge_errors, result, model, unit="orders"))
    hypotheses.check(predicted("longest answer", longest_answer, result, model,
                               abs=RESTART_NOISE_S, unit="s"))
    hypotheses.check(predicted("outage orders answered, from the consumer's return",
                               outage_answered, result, model, abs=0.2, unit="s"))
    hypotheses.check(predicted("orders lost", m.lost, result, model, unit="orders"))
    hypotheses.check(predicted("orders processed twice", m.duplicated, result, model,
                               unit="orders"))
    return hypotheses


def before_the_kill(result: RunResult) -> float:
    return m.edge_errors(result, end=A)


def test_sync_calls_fail_during_the_restart(experiment: Experiment, results: Results) -> None:
    result, model = results["sync"], results.predicted("sync")
    hypotheses = Hypotheses(f"E11 sync: payments killed for {D:.0f} s at {RATE}/s")
    assert restart(result) <= MAX_RESTART_S  # a restart, not a hang
    hypotheses.check(predicted("sync edge errors", m.edge_errors, result, model, unit="orders"))
    hypotheses.check(predicted("sync edge errors before the kill", before_the_kill, result,
                               model))
    experiment.check(hypotheses)


def test_async_request_reply_waits_out_the_restart(experiment: Experiment,
                                                   results: Results) -> None:
    experiment.check(async_hypotheses(results["async"], results.predicted("async")))


def test_negative_control_short_reply_timeout_fails(experiment: Experiment,
                                                    results: Results) -> None:
    """A caller that gives up before the consumer is back sees the outage (504s)."""
    model = results.predicted("async")
    experiment.negative_control(async_hypotheses(results[SHORT], model), ZERO_ERRORS,
                                model=async_hypotheses(results.predicted(SHORT), model))
    assert m.edge_errors_of(results[SHORT], "http_504") > 0
