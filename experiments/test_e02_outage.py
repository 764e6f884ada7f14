"""E2 outage: if B is down, A is down; async queues work until B recovers (seeds 000, 001).

The same outage on both topologies, hypotheses stated before the run.

payments becomes unreachable for T = 3 s under 20 orders/s. Predicted from that alone:
sync fails about rate x T = 60 orders at the edge and recovers at once; async fails
none, builds a backlog of about rate x (T + half the consumer's longest reconnect wait)
= 65 and drains it within seconds; nothing is lost, and at most what the consumer held
unacked (prefetch) is delivered twice.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testbed.analysis import (
    Hypotheses,
    HypothesisFailed,
    at_most,
    close_to,
    equals,
    error_rate,
    ledger_audit,
    peak,
    series,
    time_to_recover,
)
from testbed.faults import Planned, make_fault
from testbed.load import constant
from testbed.observe import RunResult, run_trial
from testbed.runtime import Deployment, Runtime
from testbed.topology import Knobs, paired

from .conftest import accepted, edge_errors, report, save

pytestmark = pytest.mark.flagship

RATE, START, OUTAGE, DURATION = 20, 2.0, 3.0, 8.0


def outage_on(deployment: Deployment, link: str) -> list[Planned]:
    return [Planned(make_fault(deployment, "link_down", link), at=START, duration=OUTAGE)]


@pytest.fixture(scope="module")
def results(testbed_runtime: Runtime,
            pytestconfig: pytest.Config) -> Iterator[dict[str, RunResult]]:
    """Both trials once per module; each test below reads the same measurements."""
    pair = paired(2, knobs=Knobs(timeout_s=1.0))
    profile = constant(RATE, DURATION)
    with testbed_runtime.deploy(pair.sync) as sync, \
            testbed_runtime.deploy(pair.async_) as asynchronous:
        found = {
            "sync": run_trial(sync, profile, outage_on(sync, "orders-payments")),
            "async": run_trial(asynchronous, profile,
                               outage_on(asynchronous, "payments-broker")),
        }
    save(pytestconfig, "e02-outage", found)
    yield found


def outage_hypotheses(results: dict[str, RunResult]) -> Hypotheses:
    sync, asynchronous = results["sync"], results["async"]
    removed = START + OUTAGE
    hypotheses = Hypotheses("E2 outage: payments unreachable for 3 s at 20 orders/s")

    sync_errors = edge_errors(sync)
    hypotheses.check(close_to("sync edge errors", RATE * OUTAGE, sync_errors, rel=0.2,
                              unit="orders"))
    sync_rate = error_rate(sync.requests, window_s=0.5)
    hypotheses.check(at_most("sync recovery after removal",
                             1.5, time_to_recover(sync_rate, START, removed, tolerance=0.05),
                             unit="s"))

    hypotheses.check(equals("async edge errors", 0, edge_errors(asynchronous),
                            unit="orders"))
    backlog = series(asynchronous.samples, "queue:payments", "ready")  # exact, no lag
    reconnect = Knobs().reconnect_max_s / 2  # on average, half the longest wait
    hypotheses.check(close_to("async backlog peak", RATE * (OUTAGE + reconnect),
                              peak(backlog)[0], rel=0.2, unit="messages"))
    hypotheses.check(at_most("async backlog drained after removal", 5.0,
                             time_to_recover(backlog, START, removed, tolerance=2), unit="s"))
    audit = ledger_audit(accepted(asynchronous), asynchronous.processed("inventory"))
    hypotheses.check(equals("async orders lost", 0, audit.lost, unit="orders"))
    # At-least-once: the cut can fall between a consumer's work and its ack; what it
    # held unacked (at most prefetch) comes again. Duplicates, bounded, never losses.
    hypotheses.check(at_most("async orders duplicated", Knobs().prefetch, audit.duplicated,
                             unit="orders"))
    return hypotheses


def test_outage_hypotheses_hold(results: dict[str, RunResult]) -> None:
    report(outage_hypotheses(results))
    assert results["sync"].meta["load"]["fell_behind"] is False
    assert results["async"].meta["drained"] is True


def test_a_wrong_hypothesis_fails_with_a_readable_finding(
        results: dict[str, RunResult]) -> None:
    """Claim the sync chain shrugs the outage off like the queue does: it must not hold."""
    wrong = Hypotheses("E2 outage, deliberately wrong")
    wrong.check(equals("sync edge errors", 0, edge_errors(results["sync"]),
                       unit="orders"))
    with pytest.raises(HypothesisFailed) as info:
        wrong.assert_all()
    message = str(info.value)
    assert "sync edge errors" in message
    assert "does NOT hold" in message
    assert "predicted 0" in message.replace(",", "")
