"""E4 tail compounding: latencies add along a chain and their tails compound: "three
100 ms services can give 600 ms+ at p99", i.e. 6x the mean hop (seeds 003, 004).

Fault: none injected; the "fault" is per-hop jitter. Every sync hop (the gateway
included, so depth d means d + 1 hops) spends W = 30 ms plus an exponential tail of mean
J = 150 ms, each service drawing its own seeded stream. (Scaled up from the seed's
100 ms so that the tail the jitter makes stays well above the tail a busy 2-core
machine adds by itself.) Load: 40 orders/s for 5 s (200 requests) per depth; pools of
128 against 40/s x 1.1 s = 44 calls in flight on average at depth 5, so no order waits
for a worker (checked: peak saturation under 75%); accept backlog 128, because waitress
admits at most 2 x backlog connections and each caller's worker keeps one open.
Model, sync: end-to-end = sum of d + 1 iid (W + O + Exp(J)) draws, with O = 3 ms per hop
of HTTP, Toxiproxy and sleep overshoot (measured 2.5-4 ms per hop without jitter on this
machine). Its percentiles by seeded Monte Carlo (200,000 draws), before the run:
    depth        1     2     3     4     5
    p99 (ms)  1065  1359  1643  1908  2171   (three hops: 1.36 s, 7.5x the 183 ms mean)
    p99 - p50  748   859   960  1042  1122   (the tail excess grows with depth)
    sum of hop p99s (W + O + J ln 100 = 724 ms each): 1448, 2171, 2895, 3619, 4343
so the tails compound, yet never all line up: the end-to-end p99 stays below the sum of
the hops' p99s. Tolerance 40%: a 200-request p99 has a 95% sampling band of about -20% /
+19% around the Monte Carlo value (the seeded draws keep it nearly the same from run to
run), the rest is for machine noise. Depth 5 p99 is predicted 2.0x depth 1; we claim at
least 1.5x.
Async (depth 1 and 5 side by side, so noise from elsewhere on the machine hits both
alike; 40/s each for 4 s, each consumer W = 30 ms per message): the edge only publishes
(confirmed) whatever the pipeline depth, so its latency is flat in depth. Measured as
the typical p99: the median over 0.5 s windows of each window's p99, so one burst of
noise does not decide it, the first window left out (each gateway worker opens its AMQP
connection on its first order). Predicted under 100 ms at depth 1 and 5 (15-20 ms when
the machine is quiet) and within 50 ms of each other, against the 1.1 s the sync p99
gains from depth 1 to 5. Every accepted order reaches the last stage (no loss).
Internal timeouts are 6 s, as the users' (a 2 s hop timeout would cut the deep tail).
Negative control: the same chain without jitter (J = 0) at depth 5: the p99 and the
tail excess fall far below the model's and both hypotheses must fail.
"""

from __future__ import annotations

import math
from dataclasses import replace
from functools import cache

import numpy as np
import pytest

from testbed.analysis import Hypotheses, at_least, at_most, close_to, equals
from testbed.load import constant
from testbed.observe import RunResult
from testbed.scenario import Experiment, Results
from testbed.scenario import metrics as m
from testbed.topology import Knobs, async_pipeline, sync_chain

RATE, DURATION, ASYNC_DURATION, POOL = 40, 5.0, 4.0, 128
WORK_MS, JITTER_MS, OVERHEAD_MS = 30.0, 150.0, 3.0
DEPTHS, ASYNC_DEPTHS = (1, 2, 3, 4, 5), (1, 5)
BACKLOG = 128  # waitress admits 2 x backlog connections: room for 128 keep-alive callers
USER_TIMEOUT_S = 6.0
REL = 0.4  # sampling band of a 200-request p99 plus machine noise
STEADY = Knobs(pool_size=POOL, accept_backlog=BACKLOG, timeout_s=USER_TIMEOUT_S,
               work_ms=WORK_MS)  # the negative control: no jitter
JITTERY = replace(STEADY, work_jitter_ms=JITTER_MS)
HOP_P99 = (WORK_MS + OVERHEAD_MS + JITTER_MS * math.log(100)) / 1000  # W + O + J ln 100


@cache
def model(q: float, hops: int) -> float:
    """The tail model: end-to-end latency percentile q (seconds) over ``hops`` hops, a
    sum of iid W + O + Exp(J) draws, by seeded Monte Carlo (200,000 draws)."""
    tails = np.random.default_rng(4).exponential(JITTER_MS, (200_000, hops)).sum(axis=1)
    return float(np.percentile(hops * (WORK_MS + OVERHEAD_MS) + tails, q)) / 1000


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


def check_tail(h: Hypotheses, depth: int, result: RunResult) -> None:
    """p99 against the tail model, against the sum of per-hop p99s, and the tail excess."""
    hops, p99 = depth + 1, m.edge_latency(result, 99)
    h.check(close_to(f"sync e2e p99, depth {depth}", model(99, hops), p99, rel=REL, unit="s"))
    h.check(at_most(f"sync e2e p99, depth {depth}, vs sum of {hops} hop p99s",
                    hops * HOP_P99, p99, unit="s"))
    h.check(close_to(f"sync tail excess p99 - p50, depth {depth}",
                     model(99, hops) - model(50, hops), p99 - m.edge_latency(result, 50),
                     rel=REL, unit="s"))


def test_sync_tails_compound_with_depth(experiment: Experiment, results: Results) -> None:
    h = Hypotheses(f"E4 sync: each hop {WORK_MS:g} ms + Exp({JITTER_MS:g} ms), "
                   f"depth 1..5 at {RATE}/s")
    for depth in DEPTHS:
        check_tail(h, depth, results[f"sync_d{depth}"])
    deepest, shallowest = results["sync_d5"], results["sync_d1"]
    h.check(at_least("sync p99 depth 5 / depth 1", 1.5,
                     m.edge_latency(deepest, 99) / m.edge_latency(shallowest, 99)))
    h.check(at_most("gateway pool saturation peak, depth 5 (no queueing)", 0.75,
                    m.gauge_peak(deepest, "gateway", "saturation")))
    experiment.check(h)
    assert sum(m.edge_errors(results[f"sync_d{d}"]) for d in DEPTHS) == 0


def test_async_enqueue_latency_is_flat_in_depth(experiment: Experiment,
                                                results: Results) -> None:
    h = Hypotheses(f"E4 async: edge enqueue latency, depth 1 and 5 at {RATE}/s")
    p99 = {d: m.typical_edge_latency(results[f"async_d{d}"], 99) for d in ASYNC_DEPTHS}
    for depth in ASYNC_DEPTHS:
        result = results[f"async_d{depth}"]
        h.check(at_most(f"async edge typical p99, depth {depth}", 0.1, p99[depth], unit="s"))
        h.check(equals(f"async orders lost, depth {depth}", 0, m.lost(result), unit="orders"))
        h.check(equals(f"async edge errors, depth {depth}", 0, m.edge_errors(result),
                       unit="orders"))
    h.check(at_most("async edge typical p99, |depth 5 - depth 1|", 0.05,
                    abs(p99[5] - p99[1]), unit="s"))
    experiment.check(h)


def test_negative_control_without_jitter_the_tail_vanishes(experiment: Experiment,
                                                          results: Results) -> None:
    """The same chain without jitter: the tail-model claims must fail."""
    h = Hypotheses("E4 negative control: no jitter, depth 5")
    check_tail(h, 5, results["no_jitter_d5"])
    experiment.negative_control(h, "sync e2e p99, depth 5", "sync tail excess p99 - p50, depth 5")
