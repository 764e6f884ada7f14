"""E1 latency cascade: a slow downstream makes every caller slow; threads pile up and the
funnel collapses (seeds 003, 004).

Fault: +L = 400 ms on the payments hop for T = 5 s, at r = 20 orders/s.
Model, sync: gateway and orders hold a worker for the whole call, so orders can serve at
most pool / L = 4 / 0.4 = 10 orders/s. Arrivals beyond that queue up in front of the
pools; users give up after 1 s, so once the queue holds more than 1 s of work the edge
fails at least 1 - 10/20 = 50% (we predict >= 35% over the fault's second half), and
the median answer is slower by at least L. Async: the edge only enqueues, so its p99
stays under 100 ms and nothing fails; the slowed consumer (prefetch 1: one message per
2L round trip, ~1.25/s) falls behind by ~(r - 1.25) x T, a backlog that drains once the
latency is gone.
Negative control: with a pool of 32 (capacity 80/s > r) the sync funnel does not
collapse and the error hypothesis must fail.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testbed.analysis import (
    Hypotheses,
    at_least,
    at_most,
    equals,
    peak,
    percentile,
    series,
    time_to_recover,
)
from testbed.faults import Planned, make_fault
from testbed.load import constant
from testbed.observe import RunResult, run_trial
from testbed.runtime import Deployment, Runtime
from testbed.topology import Knobs, async_pipeline, sync_chain

from .conftest import edge_errors, report, save

pytestmark = pytest.mark.flagship

RATE, L_MS, START, T, DURATION = 20, 400, 2.0, 5.0, 9.0
POOL = 4
USER_TIMEOUT_S = 1.0  # how long a user waits for the order page
CAPACITY = POOL / (L_MS / 1000)


def slow_hop(deployment: Deployment, link: str) -> list[Planned]:
    return [Planned(make_fault(deployment, "latency", link, latency=L_MS), at=START,
                    duration=T)]


def sync_trial(runtime: Runtime, pool: int) -> RunResult:
    knobs = Knobs(pool_size=pool, timeout_s=1.0)
    with runtime.deploy(sync_chain(3, knobs=knobs)) as deployment:
        return run_trial(deployment, constant(RATE, DURATION),
                         slow_hop(deployment, "orders-payments"), timeout_s=USER_TIMEOUT_S)


@pytest.fixture(scope="module")
def results(testbed_runtime: Runtime,
            pytestconfig: pytest.Config) -> Iterator[dict[str, RunResult]]:
    found = {"sync": sync_trial(testbed_runtime, POOL)}
    with testbed_runtime.deploy(async_pipeline(3, knobs=Knobs(prefetch=1))) as deployment:
        found["async"] = run_trial(deployment, constant(RATE, DURATION),
                                   slow_hop(deployment, "payments-broker"), drain_timeout_s=60)
    save(pytestconfig, "e01-latency-cascade", found)
    yield found


def sync_collapse(result: RunResult) -> Hypotheses:
    hypotheses = Hypotheses(f"E1 sync: payments +{L_MS} ms for {T:.0f} s at {RATE}/s, "
                            f"pool {POOL} (capacity {CAPACITY:.0f}/s)")
    late = result.requests[(result.requests["t_scheduled"] >= START + T / 2)
                           & (result.requests["t_scheduled"] < START + T)]
    hypotheses.check(at_least("sync edge error rate, second half of the fault",
                              0.35, float((~late["ok"]).mean())))
    hypotheses.check(at_least("sync edge p50 during the fault", L_MS / 1000,
                              percentile(result.requests, 50, START, START + T), unit="s"))
    return hypotheses


def test_sync_funnel_collapses(results: dict[str, RunResult]) -> None:
    report(sync_collapse(results["sync"]))
    assert edge_errors(results["sync"], end=START) == 0  # healthy before the fault


def test_async_edge_is_unaffected_and_backlog_drains(results: dict[str, RunResult]) -> None:
    result = results["async"]
    hypotheses = Hypotheses(f"E1 async: payments' link +{L_MS} ms for {T:.0f} s at {RATE}/s")
    hypotheses.check(equals("async edge errors", 0, edge_errors(result), unit="orders"))
    hypotheses.check(at_most("async edge p99 during the fault", 0.1,
                             percentile(result.requests, 99, START, START + T), unit="s"))
    backlog = series(result.samples, "queue:payments", "ready")
    hypotheses.check(at_least("async backlog peak", 0.5 * (RATE - 1.25) * T,
                              peak(backlog)[0], unit="messages"))
    hypotheses.check(at_most("async backlog drained after removal", 20.0,
                             time_to_recover(backlog, START, START + T, tolerance=2),
                             unit="s"))
    report(hypotheses)


def test_negative_control_big_pool_does_not_collapse(testbed_runtime: Runtime) -> None:
    """Switch the mechanism off (pool 32: capacity 80/s): the collapse claim must fail."""
    verdicts = sync_collapse(sync_trial(testbed_runtime, pool=32))
    failed = {v.name for v in verdicts.failed}
    assert "sync edge error rate, second half of the fault" in failed
