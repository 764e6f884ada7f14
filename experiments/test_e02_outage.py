"""E2 outage: if B is down, A is down; async queues work until B recovers (seeds 000, 001).

The same outage on both topologies, hypotheses stated before the run.

payments becomes unreachable for T = 3 s under 20 orders/s. Predicted from that alone
(every number the model's, simulated before the run): sync fails about rate x T = 60
orders at the edge and recovers at once (the next 0.5 s window: the removal is recorded
a few ms after its planned time); async fails none, builds a backlog of about rate x
(T + half the consumer's longest reconnect wait) = 64 and drains it within half a
second; nothing is lost, and at most what the consumer held unacked (prefetch) is
delivered twice (the model: none).
"""

from __future__ import annotations

import pytest

from testbed.analysis import Hypotheses, equals
from testbed.load import constant
from testbed.observe import RunResult
from testbed.scenario import Experiment, Results, unreachable
from testbed.scenario import metrics as m
from testbed.scenario.predicted import predicted
from testbed.topology import Knobs, paired

pytestmark = pytest.mark.flagship

RATE, START, OUTAGE, DURATION = 20, 2.0, 3.0, 8.0


@pytest.fixture(scope="module")
def results(experiment: Experiment) -> Results:
    """Both trials once per module, at the same time; each test reads the same runs."""
    return experiment.paired(paired(2, knobs=Knobs(timeout_s=1.0)), constant(RATE, DURATION),
                             [unreachable("payments", at=START, duration=OUTAGE)])


def outage_hypotheses(results: Results) -> Hypotheses:
    sync, asynchronous = results["sync"], results["async"]
    sync_model, async_model = results.predicted("sync"), results.predicted("async")
    hypotheses = Hypotheses("E2 outage: payments unreachable for 3 s at 20 orders/s")
    hypotheses.check(predicted("sync edge errors", m.edge_errors, sync, sync_model,
                               abs=2, unit="orders"))
    hypotheses.check(predicted("sync recovery after removal", m.time_to_recover_edge, sync,
                               sync_model, abs=0.25, unit="s"))
    hypotheses.check(predicted("async edge errors", m.edge_errors, asynchronous, async_model,
                               unit="orders"))
    hypotheses.check(predicted("async backlog peak", m.backlog_peak, asynchronous,
                               async_model, "payments", unit="messages"))
    hypotheses.check(predicted("async backlog drained after removal", m.drain_time,
                               asynchronous, async_model, abs=0.25, unit="s"))
    hypotheses.check(predicted("async orders lost", m.lost, asynchronous, async_model,
                               unit="orders"))
    # At-least-once: the cut can fall between a consumer's work and its ack; what it
    # held unacked (at most prefetch) comes again: duplicates, a few, never losses.
    hypotheses.check(predicted("async orders duplicated", m.duplicated, asynchronous,
                               async_model, abs=2, unit="orders"))
    return hypotheses


def test_outage_hypotheses_hold(experiment: Experiment, results: Results) -> None:
    experiment.check(outage_hypotheses(results))
    assert results["sync"].meta["load"]["fell_behind"] is False
    assert results["async"].meta["drained"] is True


def test_negative_control_the_sync_chain_does_not_shrug_it_off(
        experiment: Experiment, results: Results) -> None:
    """Claim the sync chain shrugs the outage off like the queue does: it must not hold."""
    def wrong(result: RunResult) -> Hypotheses:
        claims = Hypotheses("E2 outage, deliberately wrong")
        claims.check(equals("sync edge errors", 0, m.edge_errors(result), unit="orders"))
        return claims

    experiment.negative_control(wrong(results["sync"]), "sync edge errors",
                                model=wrong(results.predicted("sync")))
