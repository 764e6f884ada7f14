"""E2 outage: if B is down, A is down; async queues work until B recovers (seeds 000, 001).

The same outage on both topologies, hypotheses stated before the run.

payments becomes unreachable for T = 3 s under 20 orders/s. Predicted from that alone
(every number the model's, simulated before the run): sync fails about rate x T = 60
orders at the edge and recovers at once (the next 0.5 s window: the removal is recorded
a few ms after its planned time); async fails none, builds a backlog of about rate x
(T + half the consumer's longest reconnect wait) = 64 and drains it within half a
second; nothing is lost, and at most what the consumer held unacked (prefetch) is
delivered twice (the model: none).
On Kafka (the async pipeline with a topic per stage, payments a consumer group): the
cut is shorter than the group's 6 s session, so payments stays in its group, and the
log keeps what it could not read: no edge errors, a lag of about rate x T that it reads
off once it has reconnected (librdkafka's backoff window, up to 0.75 s: ± 0.75 s),
nothing lost. Run after the pair, with its own predictions.
"""

from __future__ import annotations

import pytest

from testbed.analysis import Hypotheses, equals
from testbed.load import constant
from testbed.observe import RunResult
from testbed.scenario import Experiment, Results, unreachable
from testbed.scenario import metrics as m
from testbed.scenario.predicted import predicted
from testbed.topology import Knobs, async_pipeline, paired

pytestmark = pytest.mark.flagship

RATE, START, OUTAGE, DURATION = 20, 2.0, 3.0, 8.0


KNOBS = Knobs(timeout_s=1.0)
OUTAGE_PLAN = [unreachable("payments", at=START, duration=OUTAGE)]


@pytest.fixture(scope="module")
def results(experiment: Experiment) -> Results:
    """Both trials once per module, at the same time; each test reads the same runs.
    Then the pipeline on Kafka, alone (a JVM beside the pair would crowd 2 cores)."""
    pair = experiment.paired(paired(2, knobs=KNOBS), constant(RATE, DURATION), OUTAGE_PLAN)
    kafka = experiment.paired([async_pipeline(2, knobs=KNOBS, name="kafka", broker="kafka")],
                              constant(RATE, DURATION), OUTAGE_PLAN)
    return pair | kafka


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


def kafka_hypotheses(result: RunResult, model: RunResult) -> Hypotheses:
    h = Hypotheses("E2 outage on Kafka: payments' link cut for 3 s at 20 orders/s")
    h.check(predicted("edge errors", m.edge_errors, result, model, unit="orders"))
    h.check(predicted("lag peak", m.backlog_peak, result, model, "payments",
                      unit="messages"))
    # ± 0.75 s: librdkafka's reconnect lands anywhere in its backoff window (up to
    # reconnect_max_s plus its 50% jitter, 0.75 s); measured 0.85-1.32 s over six runs
    # here, 1.85 s once on the docker runtime (containers drain more slowly; the model
    # has the local calibration unless `testbed calibrate --runtime docker` ran)
    h.check(predicted("lag read off after removal", m.drain_time, result, model, abs=0.75,
                      unit="s"))
    h.check(predicted("orders lost", m.lost, result, model, unit="orders"))
    h.check(predicted("orders duplicated", m.duplicated, result, model, abs=2,
                      unit="orders"))
    return h


def test_on_kafka_the_log_keeps_what_payments_could_not_read(experiment: Experiment,
                                                             results: Results) -> None:
    experiment.check(kafka_hypotheses(results["kafka"], results.predicted("kafka")))
    assert results["kafka"].meta["drained"] is True


def test_negative_control_the_sync_chain_does_not_shrug_it_off(
        experiment: Experiment, results: Results) -> None:
    """Claim the sync chain shrugs the outage off like the queue does: it must not hold."""
    def wrong(result: RunResult) -> Hypotheses:
        claims = Hypotheses("E2 outage, deliberately wrong")
        claims.check(equals("sync edge errors", 0, m.edge_errors(result), unit="orders"))
        return claims

    experiment.negative_control(wrong(results["sync"]), "sync edge errors",
                                model=wrong(results.predicted("sync")))
