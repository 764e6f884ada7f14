"""E9 duplicate delivery: at-least-once delivery means duplicates, and a consumer that is
not idempotent charges twice (seeds 003, 004). Async only: a sync call that dies before
answering is an error the caller sees, not a silent second charge.

Fault: payments crashes right after charging an order and before acking it
(``crash_at after_process``), N = 3 times from t = 2 s, under 10 orders/s for 6 s; each
time it is started again at once. The broker never got the ack, so it redelivers that
order to the restarted consumer.
Model: every crash leaves exactly one charged-but-unacked order, so a naive consumer
charges N = 3 orders twice: charges = orders + 3, exactly. An idempotent consumer (it
checks its charge record before charging, in the same step) charges each order once:
charges = orders, and it saw (and skipped) the redelivery. Nothing is lost in either.
Negative control: the naive run fails the "charges = orders" hypothesis.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testbed.analysis import Hypotheses, at_least, equals, ledger_audit
from testbed.faults import Planned, make_fault
from testbed.load import constant
from testbed.observe import RunResult, run_trial
from testbed.runtime import Runtime
from testbed.topology import Knobs, async_pipeline

from .conftest import accepted, charges, counter, report, save

RATE, AT, DURATION, CRASHES = 10, 2.0, 6.0, 3


def crash_trial(runtime: Runtime, idempotent: bool) -> RunResult:
    topology = async_pipeline(1, knobs=Knobs(prefetch=1, idempotent=idempotent))
    with runtime.deploy(topology) as deployment:
        plan = [Planned(make_fault(deployment, "crash_at", "payments", point="after_process",
                                   times=CRASHES), at=AT)]
        return run_trial(deployment, constant(RATE, DURATION), plan, drain_timeout_s=10)


@pytest.fixture(scope="module")
def results(testbed_runtime: Runtime,
            pytestconfig: pytest.Config) -> Iterator[dict[str, RunResult]]:
    found = {"naive": crash_trial(testbed_runtime, idempotent=False),
             "idempotent": crash_trial(testbed_runtime, idempotent=True)}
    save(pytestconfig, "e09-duplicate-delivery", found)
    yield found


def no_double_charge(result: RunResult) -> Hypotheses:
    hypotheses = Hypotheses(f"E9: payments crashes {CRASHES}x between charge and ack")
    audit = ledger_audit(accepted(result), result.processed("payments"))
    hypotheses.check(equals("orders lost", 0, audit.lost, unit="orders"))
    hypotheses.check(equals("charges - orders charged", 0,
                            charges(result, "payments") - len(result.processed("payments")),
                            unit="charges"))
    return hypotheses


def test_naive_consumer_double_charges_once_per_crash(results: dict[str, RunResult]) -> None:
    result = results["naive"]
    hypotheses = Hypotheses(f"E9 naive consumer: {CRASHES} crashes before the ack")
    audit = ledger_audit(accepted(result), result.processed("payments"))
    hypotheses.check(equals("orders charged twice", CRASHES, audit.duplicated, unit="orders"))
    hypotheses.check(equals("extra charges", CRASHES, audit.duplicates, unit="charges"))
    hypotheses.check(equals("orders lost", 0, audit.lost, unit="orders"))
    report(hypotheses)


def test_idempotent_consumer_charges_each_order_once(results: dict[str, RunResult]) -> None:
    result = results["idempotent"]
    hypotheses = no_double_charge(result)
    hypotheses.check(at_least("redeliveries seen and skipped (last process's count)", 1,
                              counter(result, "payments", "duplicates_skipped")))
    report(hypotheses)


def test_negative_control_naive_consumer_fails_no_double_charge(
        results: dict[str, RunResult]) -> None:
    failed = {v.name for v in no_double_charge(results["naive"]).failed}
    assert failed == {"charges - orders charged"}
