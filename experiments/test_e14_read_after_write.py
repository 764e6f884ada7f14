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

import math
from collections.abc import Iterator

import numpy as np
import pytest

from testbed.analysis import (
    EVENTS,
    SAMPLES,
    Hypotheses,
    at_least,
    at_most,
    close_to,
    equals,
    ledger_audit,
    percentile,
)
from testbed.observe import RunResult, ledgers_frame
from testbed.observe.readback import read_after_write
from testbed.runtime import Runtime
from testbed.topology import Knobs, Topology, async_pipeline, sync_chain

from .conftest import accepted, report, save

WRITES, W_S, POLL_S, MAX_WAIT_S = 30, 0.2, 0.005, 2.0
READ_S = 0.002  # one GET /read on localhost
STALENESS_P50_S = W_S + (POLL_S + READ_S) / 2  # the update lands mid-way in a poll cycle
SLOW = Knobs(work_ms=W_S * 1000)
STALE_ON_FIRST_READ = "fraction of first reads stale"


def readback_trial(runtime: Runtime, topology: Topology, reader: str) -> RunResult:
    """The writes and reads as a RunResult (no samples, no faults), ledgers for the audit."""
    with runtime.deploy(topology) as deployment:
        writes = read_after_write(deployment, reader, WRITES, prefix=topology.name,
                                  poll_s=POLL_S, max_wait_s=MAX_WAIT_S)
        ledgers = ledgers_frame(deployment.ledgers())
    return RunResult(topology.name, writes, SAMPLES.empty(), EVENTS.empty(), ledgers,
                     {"topology": topology.name, "reader": reader, "writes": WRITES})


@pytest.fixture(scope="module")
def results(testbed_runtime: Runtime,
            pytestconfig: pytest.Config) -> Iterator[dict[str, RunResult]]:
    found = {"sync": readback_trial(testbed_runtime,
                                    sync_chain(1, overrides={"orders": SLOW}), "orders"),
             "async": readback_trial(testbed_runtime,
                                     async_pipeline(1, overrides={"payments": SLOW}),
                                     "payments")}
    save(pytestconfig, "e14-read-after-write", found)
    yield found


def staleness(result: RunResult, p: float) -> float:
    """Percentile p of the staleness window over the writes that became visible."""
    window = result.requests.loc[result.requests["visible"], "staleness_s"]
    return float(np.percentile(window, p)) if len(window) else math.nan


def common_checks(hypotheses: Hypotheses, result: RunResult, reader: str) -> None:
    """Every write accepted, visible in the end, and in the reader's ledger once."""
    writes = result.requests
    hypotheses.check(equals("writes accepted", WRITES, int(writes["ok"].sum())))
    hypotheses.check(equals("writes never visible", 0, int((~writes["visible"]).sum())))
    audit = ledger_audit(accepted(result), result.processed(reader))
    hypotheses.check(equals("orders lost", 0, audit.lost, unit="orders"))


def stale_hypotheses(result: RunResult) -> Hypotheses:
    """The claim: reads after an acknowledged write are stale for about W."""
    hypotheses = Hypotheses(f"E14 {result.name}: read side {W_S * 1000:.0f} ms behind, "
                            f"{WRITES} writes read back")
    first_stale = float((~result.requests["first_read_visible"]).mean())
    hypotheses.check(at_least(STALE_ON_FIRST_READ, 0.9, first_stale))
    hypotheses.check(close_to("staleness p50", STALENESS_P50_S, staleness(result, 50),
                              abs=0.05, unit="s"))
    hypotheses.check(at_most("staleness p95", W_S + 0.1, staleness(result, 95), unit="s"))
    return hypotheses


def test_async_reads_are_stale_for_about_the_consumer_delay(
        results: dict[str, RunResult]) -> None:
    result = results["async"]
    hypotheses = stale_hypotheses(result)
    hypotheses.check(at_most("write p50", 0.05, percentile(result.requests, 50), unit="s"))
    common_checks(hypotheses, result, "payments")
    print(f"async staleness p50/p95/max: {staleness(result, 50):.3f} / "
          f"{staleness(result, 95):.3f} / {staleness(result, 100):.3f} s")
    report(hypotheses)


def test_sync_reads_your_writes(results: dict[str, RunResult]) -> None:
    result = results["sync"]
    hypotheses = Hypotheses(f"E14 sync: last hop {W_S * 1000:.0f} ms slow, "
                            f"{WRITES} writes read back")
    hypotheses.check(equals("first reads stale", 0,
                            int((~result.requests["first_read_visible"]).sum())))
    hypotheses.check(equals("staleness max", 0.0, staleness(result, 100), unit="s"))
    hypotheses.check(at_least("write p50", W_S, percentile(result.requests, 50), unit="s"))
    common_checks(hypotheses, result, "orders")
    report(hypotheses)


def test_negative_control_sync_has_no_stale_reads(results: dict[str, RunResult]) -> None:
    """Read-your-writes holds in the sync chain: the stale-read claims must fail on it."""
    failed = {v.name for v in stale_hypotheses(results["sync"]).failed}
    assert {STALE_ON_FIRST_READ, "staleness p50"} <= failed
