"""E4 tail compounding: latencies add along a chain and their tails compound: "three
100 ms services can give 600 ms+ at p99", i.e. 6x the mean hop (seeds 003, 004).

Fault: none injected; the "fault" is per-hop jitter. Every sync hop (the gateway
included, so depth d means d + 1 hops) spends W = 30 ms plus an exponential tail of mean
J = 150 ms, each service drawing its own seeded stream. (Scaled up from the seed's
100 ms so that the tail the jitter makes stays well above the tail a busy 2-core
machine adds by itself.) Load: 40 orders/s for 10 s (400 requests) per depth; pools of
128 against 40/s x 1.1 s = 44 calls in flight on average at depth 5, so no order waits
for a worker (checked: peak saturation under 75%); accept backlog 128, because waitress
admits at most 2 x backlog connections and each caller's worker keeps one open.
Model, sync: end-to-end = sum of d + 1 iid (W + O + Exp(J)) draws, with O = 3 ms per hop
of HTTP, Toxiproxy and sleep overshoot (measured 2.5-4 ms per hop without jitter on this
machine). Its percentiles by seeded Monte Carlo (200,000 draws):
    depth        1     2     3     4     5
    p99 (ms)  1065  1359  1643  1908  2171   (three hops: 1.36 s, 7.5x the 183 ms mean)
    p99 - p50  748   859   960  1042  1122   (the tail excess grows with depth)
    sum of hop p99s (W + O + J ln 100 = 724 ms each): 1448, 2171, 2895, 3619, 4343
so the tails compound, yet never all line up: the end-to-end p99 stays below the sum of
the hops' p99s (a bound by nature, checked as one). The predictions themselves come
from the model, which replays the very draws each service makes (its seeded stream), so
the p99 of these requests is predicted, not the population's (a 200-request p99 has a
95% sampling band of -20% / +19% around the Monte Carlo value above, which the replay
removes). Not all of it: two requests that reach a service at nearly the same time may
take each other's draws, so a sum can pair differently; with 200 requests one such swap
among the top few moved a p99 by 9%, hence 400 (the p99 between the 4th and 5th
slowest). Tolerance 15% (20% on the tail excess, a difference of two percentiles: the
model cannot do better on a p99 of 400 requests, and experiments/MODEL.md says so).
Depth 5 p99 over depth 1: 1.9x.
Async (depth 1 and 5 side by side, so noise from elsewhere on the machine hits both
alike; 40/s each for 4 s, each consumer W = 30 ms per message): the edge only publishes
(confirmed) whatever the pipeline depth, so its latency is flat in depth. Measured as
the typical p99: the median over 0.5 s windows of each window's p99, so one burst of
noise does not decide it, the first window left out (each gateway worker opens its AMQP
connection on its first order). Predicted the same at depth 1 and 5 (the model: 0 ms
apart; 20 ms allowed for machine noise), against the 1.1 s the sync p99 gains from
depth 1 to 5. Every accepted order reaches the last stage (no loss).
Internal timeouts are 6 s, as the users' (a 2 s hop timeout would cut the deep tail).
Negative control: the same chain without jitter (J = 0) at depth 5: the p99 and the
tail excess fall far below the model's and both hypotheses must fail, measured and on
the model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace

import pytest

from testbed.analysis import Hypotheses, at_most, close_to
from testbed.analysis.hypotheses import MODEL
from testbed.load import constant
from testbed.observe import RunResult
from testbed.scenario import Experiment, Results
from testbed.scenario import metrics as m
from testbed.scenario.predicted import predicted
from testbed.topology import Knobs, async_pipeline, sync_chain

RATE, DURATION, ASYNC_DURATION, POOL = 40, 10.0, 4.0, 128
WORK_MS, JITTER_MS, OVERHEAD_MS = 30.0, 150.0, 3.0
DEPTHS, ASYNC_DEPTHS = (1, 2, 3, 4, 5), (1, 5)
BACKLOG = 128  # waitress admits 2 x backlog connections: room for 128 keep-alive callers
USER_TIMEOUT_S = 6.0
STEADY = Knobs(pool_size=POOL, accept_backlog=BACKLOG, timeout_s=USER_TIMEOUT_S,
               work_ms=WORK_MS)  # the negative control: no jitter
JITTERY = replace(STEADY, work_jitter_ms=JITTER_MS)
HOP_P99 = (WORK_MS + OVERHEAD_MS + JITTER_MS * math.log(100)) / 1000  # W + O + J ln 100


@pytest.fixture(scope="module")
def results(experiment: Experiment) -> Results:
    """The sync depths and the no-jitter control one after the other (six chains at
    once load the 2-core machine enough to move every p99 out of its band), then both
    async depths at the same time, so whatever else the machine does hits them alike."""
    chains = [sync_chain(d, knobs=JITTERY, name=f"sync_d{d}") for d in DEPTHS]
    found = experiment.paired([*chains, sync_chain(5, knobs=STEADY, name="no_jitter_d5")],
                              constant(RATE, DURATION), concurrent=False,
                              timeout_s=USER_TIMEOUT_S, tail_s=0.2)
    return found | experiment.paired(
        [async_pipeline(d, knobs=Knobs(work_ms=WORK_MS), name=f"async_d{d}")
         for d in ASYNC_DEPTHS], constant(RATE, ASYNC_DURATION),
        timeout_s=USER_TIMEOUT_S, drain_timeout_s=10)


def check_tail(h: Hypotheses, depth: int, result: RunResult, model: RunResult) -> None:
    """p99 and the tail excess against the model's (which replays the services' seeded
    draws), the p99 against the sum of per-hop p99s."""
    hops = depth + 1
    h.check(predicted(f"sync e2e p99, depth {depth}", m.edge_latency, result, model, 99,
                      unit="s"))
    h.check(at_most(f"sync e2e p99, depth {depth}, vs sum of {hops} hop p99s",
                    hops * HOP_P99, m.edge_latency(result, 99), unit="s"))
    # a difference of two percentiles, the p99 of 400: the draw swaps weigh twice (20%)
    h.check(predicted(f"sync tail excess p99 - p50, depth {depth}", tail_excess, result,
                      model, rel=0.2, unit="s"))


def tail_excess(result: RunResult) -> float:
    return m.edge_latency(result, 99) - m.edge_latency(result, 50)


def depth_ratio(deepest: RunResult, shallowest: RunResult) -> float:
    return m.edge_latency(deepest, 99) / m.edge_latency(shallowest, 99)


def test_sync_tails_compound_with_depth(experiment: Experiment, results: Results) -> None:
    h = Hypotheses(f"E4 sync: each hop {WORK_MS:g} ms + Exp({JITTER_MS:g} ms), "
                   f"depth 1..5 at {RATE}/s")
    for depth in DEPTHS:
        check_tail(h, depth, results[f"sync_d{depth}"], results.predicted(f"sync_d{depth}"))
    h.check(close_to("sync p99 depth 5 / depth 1",
                     depth_ratio(results.predicted("sync_d5"), results.predicted("sync_d1")),
                     depth_ratio(results["sync_d5"], results["sync_d1"]), rel=0.15,
                     source=MODEL))
    h.check(at_most("gateway pool saturation peak, depth 5 (no queueing)", 0.75,
                    m.gauge_peak(results["sync_d5"], "gateway", "saturation")))
    experiment.check(h)
    assert sum(m.edge_errors(results[f"sync_d{d}"]) for d in DEPTHS) == 0


def flatness(results: Mapping[str, RunResult]) -> float:
    """How much deeper the async edge's typical p99 is at depth 5 than at depth 1."""
    return (m.typical_edge_latency(results["async_d5"], 99)
            - m.typical_edge_latency(results["async_d1"], 99))


def test_async_enqueue_latency_is_flat_in_depth(experiment: Experiment,
                                                results: Results) -> None:
    h = Hypotheses(f"E4 async: edge enqueue latency, depth 1 and 5 at {RATE}/s")
    for depth in ASYNC_DEPTHS:
        result, model = results[f"async_d{depth}"], results.predicted(f"async_d{depth}")
        h.check(predicted(f"async orders lost, depth {depth}", m.lost, result, model,
                          unit="orders"))
        h.check(predicted(f"async edge errors, depth {depth}", m.edge_errors, result, model,
                          unit="orders"))
    # the edge only publishes: depth adds nothing to it (20 ms: machine noise, against
    # the 1.1 s the sync p99 gains from depth 1 to 5)
    h.check(close_to("async edge typical p99, depth 5 - depth 1", flatness(results.model),
                     flatness(results), abs=0.02, unit="s", source=MODEL))
    experiment.check(h)


def test_negative_control_without_jitter_the_tail_vanishes(experiment: Experiment,
                                                          results: Results) -> None:
    """The same chain without jitter: the tail-model claims must fail, measured and as
    the model has it."""
    claims = ("sync e2e p99, depth 5", "sync tail excess p99 - p50, depth 5")
    model = results.predicted("sync_d5")
    measured, simulated = (Hypotheses("E4 negative control: no jitter, depth 5"),
                           Hypotheses("E4 negative control, the model: no jitter, depth 5"))
    check_tail(measured, 5, results["no_jitter_d5"], model)
    check_tail(simulated, 5, results.predicted("no_jitter_d5"), model)
    experiment.negative_control(measured, *claims, model=simulated)
