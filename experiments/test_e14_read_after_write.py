"""E14 read-after-write: with CQRS-lite, a read right after an acknowledged write may be
stale; in the sync chain it never is (seed 004).

Fault: a slow read side. The last stage (sync: orders, the last hop; async: payments,
the only consumer) spends W = 200 ms on every order before recording it in its ledger,
the read model behind its GET /read.
Load: N = 30 writes, one at a time (closed loop, 50 ms apart), each read back from the
last stage every 5 ms until visible (at most 2 s): the read side is idle at every write,
so the window measured is its own lag, not a queue the measurement built.
Model, sync: a hop records the order before it answers, so the answer comes after the
write is visible: 0 of 30 first reads stale, staleness 0 every time; the W is paid in
the write instead (write p50 >= W).
Async: the gateway answers 202 once the broker confirms the event (write p50 < 50 ms);
the broker hands the event to the consumer about as fast as it confirms it, the
consumer records it W later, and the poll sees it within one poll plus a read (~7 ms):
staleness ~ W + 7 / 2 ms, p50 predicted 0.204 s (± 50 ms: sleep overshoot and a noisy
machine), p95 at most W + 100 ms, and at least 90% of first reads stale (predicted 100%;
a machine that stalls the reader for W after the answer sees one fresh: 1 in 30 seen
under `-n 2`). Every write is visible in the end: nothing lost.
Negative control: on the sync run, the "stale reads exist" hypotheses must fail.
"""

from __future__ import annotations

import pytest

from testbed.analysis import EVENTS, SAMPLES, Hypotheses, at_least, at_most, close_to, equals
from testbed.observe import RunResult, ledgers_frame
from testbed.observe.readback import read_after_write
from testbed.runtime import Deployment
from testbed.scenario import Experiment, Results, run_together
from testbed.scenario import metrics as m
from testbed.topology import Knobs, async_pipeline, sync_chain

WRITES, W_S, POLL_S, MAX_WAIT_S = 30, 0.2, 0.005, 2.0
READ_S = 0.002  # one GET /read on localhost
STALENESS_P50_S = W_S + (POLL_S + READ_S) / 2  # the update lands mid-way in a poll cycle
SLOW = Knobs(work_ms=W_S * 1000)
STALE_ON_FIRST_READ = "fraction of first reads stale"
READERS = {"sync": "orders", "async": "payments"}  # the last stage: the read side


def readback_trial(deployment: Deployment) -> RunResult:
    """The writes and reads as a RunResult (no samples, no faults), ledgers for the audit."""
    name, reader = deployment.topology.name, READERS[deployment.topology.name]
    writes = read_after_write(deployment, reader, WRITES, prefix=name, poll_s=POLL_S,
                              max_wait_s=MAX_WAIT_S)
    meta = {"topology": name, "reader": reader, "writes": WRITES, "order_prefix": name}
    return RunResult(name, writes, SAMPLES.empty(), EVENTS.empty(),
                     ledgers_frame(deployment.ledgers()), meta)


@pytest.fixture(scope="module")
def results(experiment: Experiment) -> Results:
    """Both read-backs at once, each on its own deployment, after both are up."""
    deploy = experiment.runtime.deploy
    with deploy(sync_chain(1, overrides={"orders": SLOW})) as chain, \
            deploy(async_pipeline(1, overrides={"payments": SLOW})) as pipeline:
        found = run_together([lambda: readback_trial(chain), lambda: readback_trial(pipeline)])
    return {result.name: experiment.keep(result.name, result) for result in found}


def common_checks(hypotheses: Hypotheses, result: RunResult) -> None:
    """Every write accepted, visible in the end, and in the reader's ledger once."""
    hypotheses.check(equals("writes accepted", WRITES, len(m.accepted(result))))
    hypotheses.check(equals("writes never visible", 0, m.never_visible(result)))
    hypotheses.check(equals("orders lost", 0, m.lost(result), unit="orders"))


def stale_hypotheses(result: RunResult) -> Hypotheses:
    """The claim: reads after an acknowledged write are stale for about W."""
    hypotheses = Hypotheses(f"E14 {result.name}: read side {W_S * 1000:.0f} ms behind, "
                            f"{WRITES} writes read back")
    hypotheses.check(at_least(STALE_ON_FIRST_READ, 0.9, m.stale_first_read_rate(result)))
    hypotheses.check(close_to("staleness p50", STALENESS_P50_S, m.staleness(result, 50),
                              abs=0.05, unit="s"))
    hypotheses.check(at_most("staleness p95", W_S + 0.1, m.staleness(result, 95), unit="s"))
    return hypotheses


def test_async_reads_are_stale_for_about_the_consumer_delay(
        experiment: Experiment, results: Results) -> None:
    result = results["async"]
    hypotheses = stale_hypotheses(result)
    hypotheses.check(at_most("write p50", 0.05, m.edge_latency(result, 50), unit="s"))
    common_checks(hypotheses, result)
    print(f"async staleness p50/p95/max: {m.staleness(result, 50):.3f} / "
          f"{m.staleness(result, 95):.3f} / {m.staleness(result, 100):.3f} s")
    experiment.check(hypotheses)


def test_sync_reads_your_writes(experiment: Experiment, results: Results) -> None:
    result = results["sync"]
    hypotheses = Hypotheses(f"E14 sync: last hop {W_S * 1000:.0f} ms slow, "
                            f"{WRITES} writes read back")
    hypotheses.check(equals("first reads stale", 0, m.stale_first_reads(result)))
    hypotheses.check(equals("staleness max", 0.0, m.staleness(result, 100), unit="s"))
    hypotheses.check(at_least("write p50", W_S, m.edge_latency(result, 50), unit="s"))
    common_checks(hypotheses, result)
    experiment.check(hypotheses)


def test_negative_control_sync_has_no_stale_reads(experiment: Experiment,
                                                  results: Results) -> None:
    """Read-your-writes holds in the sync chain: the stale-read claims must fail on it."""
    experiment.negative_control(stale_hypotheses(results["sync"]), STALE_ON_FIRST_READ,
                                "staleness p50")
