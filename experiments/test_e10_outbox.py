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
The model reproduces the crash point, the restart and the relay, and gives the same
counts (every number below is read off it, simulated before the run).
Negative control: the direct-publish run fails the "no stored order is lost" claim,
measured and on the model.
"""

from __future__ import annotations

import pytest

from testbed.analysis import Hypotheses
from testbed.load import constant
from testbed.observe import RunResult
from testbed.scenario import Experiment, Results, fault
from testbed.scenario import metrics as m
from testbed.scenario.predicted import predicted
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


def crash_hypotheses(result: RunResult, publish: str, model: RunResult) -> Hypotheses:
    """Events lost as the model predicts for this way to publish; no accepted order lost."""
    hypotheses = Hypotheses(f"E10 {publish}: gateway crashes {CRASHES}x after the write")
    hypotheses.check(predicted(LOST_EVENTS, m.lost_events, result, model, unit="orders"))
    hypotheses.check(predicted("accepted orders lost", m.lost, result, model, unit="orders"))
    return hypotheses


def crashed(result: RunResult) -> set[str]:
    """Orders the gateway stored but whose users saw no acceptance (it crashed)."""
    return set(m.processed(result, "gateway")) - m.accepted(result)


def crashed_unprocessed(result: RunResult) -> int:
    return len(crashed(result) - set(m.processed(result, "payments")))


def crashed_count(result: RunResult) -> int:
    return len(crashed(result))


def test_direct_publish_loses_one_event_per_crash(
        experiment: Experiment, results: Results) -> None:
    experiment.check(crash_hypotheses(results["direct"], "direct publish",
                                      results.predicted("direct")))


def test_outbox_loses_nothing_and_delivers_after_recovery(
        experiment: Experiment, results: Results) -> None:
    result, model = results["outbox"], results.predicted("outbox")
    hypotheses = crash_hypotheses(result, "outbox", model)
    hypotheses.check(predicted("crashed-but-stored orders left unprocessed",
                               crashed_unprocessed, result, model, unit="orders"))
    hypotheses.check(predicted("crashed-but-stored orders", crashed_count, result, model,
                               unit="orders"))
    experiment.check(hypotheses)


def test_negative_control_direct_publish_fails_the_outbox_claim(
        experiment: Experiment, results: Results) -> None:
    model = results.predicted("outbox")
    experiment.negative_control(crash_hypotheses(results["direct"], "outbox", model),
                                LOST_EVENTS,
                                model=crash_hypotheses(results.predicted("direct"), "outbox",
                                                       model))
