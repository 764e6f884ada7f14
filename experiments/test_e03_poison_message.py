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

from collections.abc import Iterator

import pytest

from testbed.analysis import (
    Hypotheses,
    at_least,
    at_most,
    close_to,
    equals,
    growth_rate,
    ledger_audit,
    peak,
    series,
)
from testbed.faults import Planned, make_fault
from testbed.load import constant
from testbed.observe import RunResult, run_trial
from testbed.runtime import Runtime
from testbed.topology import Knobs, async_pipeline

from .conftest import accepted, counter, report, save

pytestmark = pytest.mark.flagship

RATE, AT, DURATION, BACKOFF_MS, LIMIT = 10, 2.0, 8.0, 50, 3
WITHOUT_DLQ = Knobs(prefetch=1, error_backoff_ms=BACKOFF_MS)
WITH_DLQ = Knobs(prefetch=1, error_backoff_ms=BACKOFF_MS, queue_type="quorum",
                 delivery_limit=LIMIT, dead_letter=True)


def poison_trial(runtime: Runtime, knobs: Knobs) -> RunResult:
    with runtime.deploy(async_pipeline(1, knobs=knobs)) as deployment:
        plan = [Planned(make_fault(deployment, "poison", "payments"), at=AT)]
        return run_trial(deployment, constant(RATE, DURATION), plan, drain_timeout_s=3)


@pytest.fixture(scope="module")
def results(testbed_runtime: Runtime,
            pytestconfig: pytest.Config) -> Iterator[dict[str, RunResult]]:
    found = {"without_dlq": poison_trial(testbed_runtime, WITHOUT_DLQ),
             "with_dlq": poison_trial(testbed_runtime, WITH_DLQ)}
    save(pytestconfig, "e03-poison-message", found)
    yield found


def dlq_hypotheses(result: RunResult) -> Hypotheses:
    hypotheses = Hypotheses("E3 with DLQ: one poison message, delivery limit 3")
    dlq = series(result.samples, "queue:payments.dlq", "ready")
    hypotheses.check(equals("DLQ depth", 1, peak(dlq)[0] if len(dlq) else 0,
                            unit="messages"))
    hypotheses.check(equals("handler failures on the poison", LIMIT + 1,
                            counter(result, "payments", "handler_errors")))
    audit = ledger_audit(accepted(result), result.processed("payments"))
    hypotheses.check(equals("orders lost", 0, audit.lost, unit="orders"))
    hypotheses.check(at_most("backlog peak", 5,
                             peak(series(result.samples, "queue:payments", "ready"))[0],
                             unit="messages"))
    return hypotheses


def test_without_dlq_the_poison_blocks_the_queue(results: dict[str, RunResult]) -> None:
    result = results["without_dlq"]
    hypotheses = Hypotheses("E3 without DLQ: one poison message, classic queue")
    hypotheses.check(at_least("handler failures", 0.5 * (DURATION - AT) * 1000 / BACKOFF_MS,
                              counter(result, "payments", "handler_errors")))
    backlog = series(result.samples, "queue:payments", "ready")
    hypotheses.check(close_to("backlog growth after the poison", RATE,
                              growth_rate(backlog, AT + 0.5, DURATION), rel=0.3,
                              unit="msg/s"))
    processed_after = [order for order in result.processed("payments")
                       if order in accepted(result)
                       and result.requests.set_index("order_id").loc[order, "t_scheduled"]
                       > AT + 0.5]
    hypotheses.check(at_most("orders processed behind the poison", 1, len(processed_after),
                             unit="orders"))
    hypotheses.check(equals("queue drained", False, result.meta["drained"]))
    report(hypotheses)


def test_with_dlq_the_poison_is_parked_and_orders_flow(results: dict[str, RunResult]) -> None:
    report(dlq_hypotheses(results["with_dlq"]))


def test_negative_control_without_dlq_the_dlq_claims_fail(
        results: dict[str, RunResult]) -> None:
    failed = {v.name for v in dlq_hypotheses(results["without_dlq"]).failed}
    assert {"DLQ depth", "handler failures on the poison", "backlog peak"} <= failed
