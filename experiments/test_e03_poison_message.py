"""E3 poison message: one malformed message makes the consumer fail again and again and
blocks the queue; a dead-letter queue keeps it flowing (seed 004). Async only: in the
sync chain the one bad request fails once, visibly, and that is the end of it.

Fault: one poison message published into payments' queue at t = 2 s, under 10 orders/s
for 8 s. The consumer takes one message at a time (prefetch 1) and nacks what it cannot
handle (with requeue, after 50 ms).
Without a DLQ (classic queue, no delivery limit): the poison goes back to the head and
comes straight back, forever. Predicted: the handler fails about every 50 ms plus a
delivery (the model: ~190 times in the 6 s after it), nothing behind it is processed,
and the backlog grows at the arrival rate (10/s).
With a DLQ (quorum queue, delivery limit 3, dead-lettering): the poison is tried
1 + 3 = 4 times, then parked in payments.dlq (depth exactly 1); every real order is
processed and the backlog never exceeds a handful.
On Kafka (the same load and poison, a topic of 3 partitions keyed by order id, 3
competing members of payments' group): a log cannot skip one message. Without a retry
policy the member that owns the poison's partition (0) retries it in place, every 50 ms,
and the orders behind it in that partition wait; the other two partitions flow. So
the backlog grows at the rate of partition 0's orders (about a third of 10/s; the model
knows which orders land there: the same order ids, CRC-32 of the key), and exactly
those orders are not processed. With retry and dead-letter topics (3 retries, 1 s
apart): the poison is tried 4 times, parked in payments.dlq, and every order flows.
Every number is the model's (testbed.model, simulated before the run).
Negative control: the DLQ hypotheses read on the run without DLQ must fail, measured
and on the model.
"""

from __future__ import annotations

import pytest

from testbed.analysis import Hypotheses
from testbed.load import constant
from testbed.observe import RunResult
from testbed.scenario import Experiment, Results, fault
from testbed.scenario import metrics as m
from testbed.scenario.predicted import predicted
from testbed.topology import Knobs, Topology, async_pipeline

pytestmark = pytest.mark.flagship

RATE, AT, DURATION, BACKOFF_MS, LIMIT = 10, 2.0, 8.0, 50, 3
WITHOUT_DLQ = Knobs(prefetch=1, error_backoff_ms=BACKOFF_MS)
WITH_DLQ = Knobs(prefetch=1, error_backoff_ms=BACKOFF_MS, queue_type="quorum",
                 delivery_limit=LIMIT, dead_letter=True)


PARTITIONS = 3
KAFKA_BLOCKING = Knobs(replicas=PARTITIONS, error_backoff_ms=BACKOFF_MS)
KAFKA_DLQ = Knobs(replicas=PARTITIONS, error_backoff_ms=BACKOFF_MS, consumer_retries=LIMIT,
                  dead_letter=True)
POISON = [fault("poison", "payments", at=AT)]


@pytest.fixture(scope="module")
def results(experiment: Experiment) -> Results:
    """The same poison message into both queues, at the same time; then the same into
    the two Kafka topologies (apart: four brokers' clients at once would crowd 2 cores)."""
    rabbitmq = experiment.paired([async_pipeline(1, knobs=WITHOUT_DLQ, name="without_dlq"),
                                  async_pipeline(1, knobs=WITH_DLQ, name="with_dlq")],
                                 constant(RATE, DURATION), POISON, drain_timeout_s=3)
    kafka = experiment.paired([on_kafka(KAFKA_BLOCKING, "kafka_blocking"),
                               on_kafka(KAFKA_DLQ, "kafka_dlq")],
                              constant(RATE, DURATION), POISON, drain_timeout_s=3)
    return rabbitmq | kafka


def on_kafka(knobs: Knobs, name: str) -> Topology:
    return async_pipeline(1, overrides={"payments": knobs}, name=name, broker="kafka",
                          partitions=PARTITIONS)


def handler_errors(result: RunResult) -> float:
    return m.counter(result, "payments", "handler_errors")


def behind_the_poison(result: RunResult) -> float:
    return m.processed_between(result, "payments", start=AT + 0.5)


def dlq_hypotheses(result: RunResult, model: RunResult,
                   title: str = "E3 with DLQ: one poison message, delivery limit 3"
                   ) -> Hypotheses:
    h = Hypotheses(title)
    h.check(predicted("DLQ depth", m.dlq_peak, result, model, "payments.dlq",
                      unit="messages"))
    h.check(predicted("handler failures on the poison", handler_errors, result, model))
    h.check(predicted("orders lost", m.lost, result, model, "payments", unit="orders"))
    h.check(predicted("backlog peak", m.backlog_peak, result, model, "payments", abs=2,
                      unit="messages"))
    return h


def test_without_dlq_the_poison_blocks_the_queue(experiment: Experiment,
                                                 results: Results) -> None:
    result, model = results["without_dlq"], results.predicted("without_dlq")
    h = Hypotheses("E3 without DLQ: one poison message, classic queue")
    h.check(predicted("handler failures", handler_errors, result, model))
    h.check(predicted("backlog growth after the poison", m.backlog_growth, result, model,
                      AT + 0.5, DURATION, "payments", unit="msg/s"))
    h.check(predicted("orders processed behind the poison", behind_the_poison, result, model,
                      abs=1, unit="orders"))
    h.check(predicted("queue drained", m.drained, result, model))
    experiment.check(h)


def test_with_dlq_the_poison_is_parked_and_orders_flow(experiment: Experiment,
                                                       results: Results) -> None:
    experiment.check(dlq_hypotheses(results["with_dlq"], results.predicted("with_dlq")))


def test_negative_control_without_dlq_the_dlq_claims_fail(experiment: Experiment,
                                                          results: Results) -> None:
    model = results.predicted("with_dlq")
    experiment.negative_control(dlq_hypotheses(results["without_dlq"], model), "DLQ depth",
                                "handler failures on the poison", "backlog peak",
                                model=dlq_hypotheses(results.predicted("without_dlq"), model))


def stuck(result: RunResult) -> float:
    """Accepted orders payments never processed."""
    return float(len(m.accepted(result) - set(m.processed(result, "payments"))))


def test_on_kafka_the_poison_blocks_its_partition_only(experiment: Experiment,
                                                       results: Results) -> None:
    result, model = results["kafka_blocking"], results.predicted("kafka_blocking")
    h = Hypotheses("E3 on Kafka without retry topics: one poison message, 3 partitions")
    h.check(predicted("handler failures", handler_errors, result, model))
    h.check(predicted("backlog growth after the poison", m.backlog_growth, result, model,
                      AT + 0.5, DURATION, "payments", unit="msg/s"))
    h.check(predicted("orders stuck behind the poison (its partition's)", stuck, result,
                      model, abs=1, unit="orders"))
    h.check(predicted("orders processed behind the poison", behind_the_poison, result, model,
                      abs=2, unit="orders"))
    h.check(predicted("queue drained", m.drained, result, model))
    experiment.check(h)


def test_on_kafka_retry_topics_park_the_poison(experiment: Experiment,
                                               results: Results) -> None:
    experiment.check(dlq_hypotheses(results["kafka_dlq"], results.predicted("kafka_dlq"),
                                    "E3 on Kafka with retry and DLQ topics: 3 retries"))
