"""E3 poison message: one malformed message makes the consumer fail again and again and
blocks the queue; a dead-letter queue keeps it flowing (seed 004). Async only: in the
sync chain the one bad request fails once, visibly, and that is the end of it.

Fault: one poison message published into payments' queue at t = 2 s, under 10 orders/s
for 8 s. The consumer takes one message at a time (prefetch 1) and nacks what it cannot
handle (with requeue, after 50 ms).
Without a DLQ (classic queue, no delivery limit): the poison goes back to the head and
comes straight back, forever. Predicted: the handler fails about every 50 ms (>= 40
times in the 6 s after it), nothing behind it is processed, and the backlog grows at
about the arrival rate (10/s +- 30%).
With a DLQ (quorum queue, delivery limit 3, dead-lettering): the poison is tried
1 + 3 = 4 times, then parked in payments.dlq (depth exactly 1); every real order is
processed and the backlog never exceeds a handful.
Negative control: the DLQ hypotheses read on the run without DLQ must fail.
"""

from __future__ import annotations

import pytest

from testbed.analysis import Hypotheses, at_least, at_most, close_to, equals
from testbed.load import constant
from testbed.observe import RunResult
from testbed.scenario import Experiment, Results, fault
from testbed.scenario import metrics as m
from testbed.topology import Knobs, async_pipeline

pytestmark = pytest.mark.flagship

RATE, AT, DURATION, BACKOFF_MS, LIMIT = 10, 2.0, 8.0, 50, 3
WITHOUT_DLQ = Knobs(prefetch=1, error_backoff_ms=BACKOFF_MS)
WITH_DLQ = Knobs(prefetch=1, error_backoff_ms=BACKOFF_MS, queue_type="quorum",
                 delivery_limit=LIMIT, dead_letter=True)


@pytest.fixture(scope="module")
def results(experiment: Experiment) -> Results:
    """The same poison message into both queues, at the same time."""
    return experiment.paired([async_pipeline(1, knobs=WITHOUT_DLQ, name="without_dlq"),
                              async_pipeline(1, knobs=WITH_DLQ, name="with_dlq")],
                             constant(RATE, DURATION), [fault("poison", "payments", at=AT)],
                             drain_timeout_s=3)


def dlq_hypotheses(result: RunResult) -> Hypotheses:
    h = Hypotheses("E3 with DLQ: one poison message, delivery limit 3")
    h.check(equals("DLQ depth", 1, m.dlq_peak(result, "payments.dlq"), unit="messages"))
    h.check(equals("handler failures on the poison", LIMIT + 1,
                   m.counter(result, "payments", "handler_errors")))
    h.check(equals("orders lost", 0, m.lost(result, "payments"), unit="orders"))
    h.check(at_most("backlog peak", 5, m.backlog_peak(result, "payments"), unit="messages"))
    return h


def test_without_dlq_the_poison_blocks_the_queue(experiment: Experiment,
                                                 results: Results) -> None:
    result = results["without_dlq"]
    h = Hypotheses("E3 without DLQ: one poison message, classic queue")
    h.check(at_least("handler failures", 0.5 * (DURATION - AT) * 1000 / BACKOFF_MS,
                     m.counter(result, "payments", "handler_errors")))
    h.check(close_to("backlog growth after the poison", RATE,
                     m.backlog_growth(result, AT + 0.5, DURATION, "payments"), rel=0.3,
                     unit="msg/s"))
    h.check(at_most("orders processed behind the poison", 1,
                    m.processed_between(result, "payments", start=AT + 0.5), unit="orders"))
    h.check(equals("queue drained", False, m.drained(result)))
    experiment.check(h)


def test_with_dlq_the_poison_is_parked_and_orders_flow(experiment: Experiment,
                                                       results: Results) -> None:
    experiment.check(dlq_hypotheses(results["with_dlq"]))


def test_negative_control_without_dlq_the_dlq_claims_fail(experiment: Experiment,
                                                          results: Results) -> None:
    experiment.negative_control(dlq_hypotheses(results["without_dlq"]), "DLQ depth",
                                "handler failures on the poison", "backlog peak")
