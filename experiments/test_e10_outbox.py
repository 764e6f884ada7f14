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

import pytest

from testbed.analysis import Hypotheses, at_most, equals
from testbed.load import constant
from testbed.observe import RunResult
from testbed.scenario import Experiment, Results, fault
from testbed.scenario import metrics as m
from testbed.topology import Knobs, async_pipeline

RATE, AT, DURATION, CRASHES = 10, 2.0, 6.0, 3
LOST_EVENTS = "stored orders whose event was lost"


@pytest.fixture(scope="module")
def results(experiment: Experiment) -> Results:
    gateways = [async_pipeline(1, overrides={"gateway": Knobs(outbox=outbox)})
                for outbox in (False, True)]
    crash = fault("crash_at", "gateway", at=AT, point="after_write", times=CRASHES)
    return experiment.paired(gateways, constant(RATE, DURATION), [crash],
                             keys=["direct", "outbox"], drain_timeout_s=10)


def crash_hypotheses(result: RunResult, publish: str, lost_events: int) -> Hypotheses:
    """Events lost as the model predicts for this way to publish; no accepted order lost."""
    hypotheses = Hypotheses(f"E10 {publish}: gateway crashes {CRASHES}x after the write")
    hypotheses.check(equals(LOST_EVENTS, lost_events, m.lost_events(result), unit="orders"))
    hypotheses.check(equals("accepted orders lost", 0, m.lost(result), unit="orders"))
    return hypotheses


def test_direct_publish_loses_one_event_per_crash(
        experiment: Experiment, results: Results) -> None:
    experiment.check(crash_hypotheses(results["direct"], "direct publish", CRASHES))


def test_outbox_loses_nothing_and_delivers_after_recovery(
        experiment: Experiment, results: Results) -> None:
    result = results["outbox"]
    hypotheses = crash_hypotheses(result, "outbox", 0)
    crashed = set(m.processed(result, "gateway")) - m.accepted(result)
    hypotheses.check(at_most("crashed-but-stored orders left unprocessed", 0,
                             len(crashed - set(m.processed(result, "payments"))),
                             unit="orders"))
    hypotheses.check(equals("crashed-but-stored orders", CRASHES, len(crashed), unit="orders"))
    experiment.check(hypotheses)


def test_negative_control_direct_publish_fails_the_outbox_claim(
        experiment: Experiment, results: Results) -> None:
    experiment.negative_control(crash_hypotheses(results["direct"], "outbox", 0), LOST_EVENTS)
