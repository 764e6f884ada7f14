"""E10 outbox: a crash between the database write and the publish loses the event; a
transactional outbox closes the gap (seeds 000, 004). Async only.

Fault: the gateway dies right after storing an order and before publishing its event
(``crash_at after_write``), N = 3 times from t = 2 s, under 10 orders/s for 6 s; each
time it is started again at once.
Model, direct publish: each crash leaves one order in the gateway's database whose
event never existed, so exactly N = 3 stored orders are never processed (lost events,
counted), while everything else is. With the outbox the order and its event commit in
one transaction: the restarted relay publishes the pending event, so 0 are lost and the
3 crashed orders are processed after the gateway is back. In both,
every order the user saw accepted is processed (the crashed requests failed visibly).
Negative control: the direct-publish run fails the "no stored order is lost" claim.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testbed.analysis import Hypotheses, at_most, equals, ledger_audit
from testbed.faults import Planned, make_fault
from testbed.load import constant
from testbed.observe import RunResult, run_trial
from testbed.runtime import Runtime
from testbed.topology import Knobs, async_pipeline

from .conftest import accepted, report, save, stored

RATE, AT, DURATION, CRASHES = 10, 2.0, 6.0, 3


def crash_trial(runtime: Runtime, outbox: bool) -> RunResult:
    topology = async_pipeline(1, overrides={"gateway": Knobs(outbox=outbox)})
    with runtime.deploy(topology) as deployment:
        plan = [Planned(make_fault(deployment, "crash_at", "gateway", point="after_write",
                                   times=CRASHES), at=AT)]
        return run_trial(deployment, constant(RATE, DURATION), plan, drain_timeout_s=10)


@pytest.fixture(scope="module")
def results(testbed_runtime: Runtime,
            pytestconfig: pytest.Config) -> Iterator[dict[str, RunResult]]:
    found = {"direct": crash_trial(testbed_runtime, outbox=False),
             "outbox": crash_trial(testbed_runtime, outbox=True)}
    save(pytestconfig, "e10-outbox", found)
    yield found


def lost_events(result: RunResult) -> int:
    """Orders in the gateway's database that no consumer ever processed."""
    return ledger_audit(stored(result), result.processed("payments")).lost


def user_audit(hypotheses: Hypotheses, result: RunResult) -> None:
    audit = ledger_audit(accepted(result), result.processed("payments"))
    hypotheses.check(equals("accepted orders lost", 0, audit.lost, unit="orders"))


def outbox_hypotheses(result: RunResult) -> Hypotheses:
    hypotheses = Hypotheses(f"E10 outbox: gateway crashes {CRASHES}x after the write")
    hypotheses.check(equals("stored orders whose event was lost", 0, lost_events(result),
                            unit="orders"))
    user_audit(hypotheses, result)
    return hypotheses


def test_direct_publish_loses_one_event_per_crash(results: dict[str, RunResult]) -> None:
    result = results["direct"]
    hypotheses = Hypotheses(f"E10 direct publish: gateway crashes {CRASHES}x after the write")
    hypotheses.check(equals("stored orders whose event was lost", CRASHES,
                            lost_events(result), unit="orders"))
    user_audit(hypotheses, result)
    report(hypotheses)


def test_outbox_loses_nothing_and_delivers_after_recovery(
        results: dict[str, RunResult]) -> None:
    result = results["outbox"]
    hypotheses = outbox_hypotheses(result)
    crashed = stored(result) - accepted(result)
    hypotheses.check(at_most("crashed-but-stored orders left unprocessed", 0,
                             len(crashed - set(result.processed("payments"))),
                             unit="orders"))
    hypotheses.check(equals("crashed-but-stored orders", CRASHES, len(crashed),
                            unit="orders"))
    report(hypotheses)


def test_negative_control_direct_publish_fails_the_outbox_claim(
        results: dict[str, RunResult]) -> None:
    failed = {v.name for v in outbox_hypotheses(results["direct"]).failed}
    assert failed == {"stored orders whose event was lost"}
