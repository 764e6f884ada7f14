"""E1 latency cascade: a slow downstream makes every caller slow; threads pile up and the
funnel collapses (seeds 003, 004).

Fault: +L = 400 ms on the payments hop for T = 5 s, at r = 20 orders/s.
Model, sync: gateway and orders hold a worker for the whole call, so orders can serve at
most pool / L = 4 / 0.4 = 10 orders/s. Arrivals beyond that queue up in front of the
pools; users give up after U = 1 s, and the gateway serves its FIFO queue without
knowing who already left (E7), so once the queue holds more than U of work every order
fails: the orders placed from U after the injection to U before the removal, 100% (the
model: 1.0), the median answer is the users' patience. Async: the edge only enqueues,
so the fault adds nothing to its answer and nothing fails; the slowed consumer
(prefetch 1: one message per 2L + 40 ms of work, ~1.2/s) falls behind by ~(r - 1.2) x T
= 94, a backlog it drains one message per 40 ms of work plus ~2.5 ms of handling once
the latency is gone and the load has ended with it: ~4 s (23/s unslowed, above r, so
no backlog before the fault, even on the docker runtime) (the work makes the drain
the work's, not the machine's: with none, a few ms of overhead per message decide it,
and they double on a busy machine).
Every number is the model's (testbed.model, simulated before the run).
Negative control: with a pool of 32 (capacity 80/s > r) the sync funnel does not
collapse and the error hypothesis must fail, measured and on the model.
"""

from __future__ import annotations

import pytest

from testbed.analysis import Hypotheses
from testbed.load import constant
from testbed.observe import RunResult
from testbed.scenario import Experiment, Results, slower
from testbed.scenario import metrics as m
from testbed.scenario.predicted import predicted
from testbed.topology import Knobs, Topology, async_pipeline, sync_chain

pytestmark = pytest.mark.flagship

RATE, L_MS, START, T = 20, 400, 2.0, 5.0
DURATION = START + T  # the load ends with the fault: the drain is the consumer's alone
POOL = 4
ASYNC_WORK_MS = 40.0  # payments' own work per message: 23/s > r, with room for a slower runtime
USER_TIMEOUT_S = 1.0  # how long a user waits for the order page
CAPACITY = POOL / (L_MS / 1000)
COLLAPSE = "sync edge error rate, from U after the injection to U before the removal"


def sync(pool: int, name: str) -> Topology:
    return sync_chain(3, knobs=Knobs(pool_size=pool, timeout_s=1.0), name=name)


@pytest.fixture(scope="module")
def results(experiment: Experiment) -> Results:
    """Sync, async and the control (sync with a pool of 32), all at the same time."""
    slow_consumer = Knobs(prefetch=1, work_ms=ASYNC_WORK_MS)  # a drain the work decides
    return experiment.paired([sync(POOL, "sync"),
                              async_pipeline(3, knobs=Knobs(prefetch=1),
                                             overrides={"payments": slow_consumer}),
                              sync(32, "big_pool")], constant(RATE, DURATION),
                             [slower("payments", L_MS, at=START, duration=T)],
                             timeout_s=USER_TIMEOUT_S, drain_timeout_s=60, tail_s=2.0)


def sync_collapse(result: RunResult, model: RunResult) -> Hypotheses:
    h = Hypotheses(f"E1 sync: payments +{L_MS} ms for {T:.0f} s at {RATE}/s, "
                   f"pool {POOL} (capacity {CAPACITY:.0f}/s)")
    # orders placed then meet a queue that holds more than U of work all the way: the
    # steady collapse, not the ramps at either end of the fault
    h.check(predicted(COLLAPSE, m.edge_error_rate, result, model, START + USER_TIMEOUT_S,
                      START + T - USER_TIMEOUT_S))
    h.check(predicted("sync edge p50 during the fault", m.edge_latency, result, model, 50,
                      START, START + T, unit="s"))
    return h


def test_sync_funnel_collapses(experiment: Experiment, results: Results) -> None:
    experiment.check(sync_collapse(results["sync"], results.predicted("sync")))
    assert m.edge_errors(results["sync"], end=START) == 0  # healthy before the fault


def test_async_edge_is_unaffected_and_backlog_drains(experiment: Experiment,
                                                     results: Results) -> None:
    result, model = results["async"], results.predicted("async")
    h = Hypotheses(f"E1 async: payments' link +{L_MS} ms for {T:.0f} s at {RATE}/s")
    h.check(predicted("async edge errors", m.edge_errors, result, model, unit="orders"))
    # the edge only publishes: the fault adds nothing to its answer (10 ms: machine noise,
    # 2.5% of L; a shape that waited for the consumer would add L or more)
    h.check(predicted("async edge p50, added by the fault", m.edge_latency_added, result, model,
                      abs=0.01, unit="s"))
    h.check(predicted("async backlog peak", m.backlog_peak, result, model, "payments",
                      unit="messages"))
    h.check(predicted("async backlog drained after removal", m.drain_time, result, model,
                      "payments", abs=0.25, unit="s"))
    experiment.check(h)


def test_negative_control_big_pool_does_not_collapse(experiment: Experiment,
                                                     results: Results) -> None:
    """Switch the mechanism off (pool 32: capacity 80/s): the collapse claim must fail,
    measured and as the model has it."""
    model = results.predicted("sync")
    experiment.negative_control(sync_collapse(results["big_pool"], model), COLLAPSE,
                                model=sync_collapse(results.predicted("big_pool"), model))
