"""E12 broker outage: async adds a broker, which can itself fail (seeds 001, 003).

Fault: the broker is killed (SIGKILL) at t = 2 s and started again 2 s later; its restart
takes a few seconds more, so the outage W is measured from the fault's own window
(inject to the end of the restart, cut at the end of the load), not assumed. Load:
10 orders/s for 12 s, on the sync chain and the async pipeline AT THE SAME TIME (the
sync chain has no broker).
Model: sync is unaffected: 0 edge errors. Async with direct publish: every order placed
while the broker is away fails at the edge (503; the gateway takes the order back), so
edge errors ~ rate x W (+-25%), and no accepted order is lost (persistent messages,
publisher confirms, durable queues). Async with the outbox: the edge keeps accepting
(0 errors); the relay publishes the backlog once the broker is back, so every stored
order is processed: 0 lost.
Negative control: the direct-publish run fails the outbox's "0 edge errors" claim.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from testbed.analysis import Hypotheses, close_to, equals, fault_windows, ledger_audit
from testbed.faults import Planned, make_fault
from testbed.load import constant
from testbed.observe import RunResult, run_trial
from testbed.runtime import Runtime
from testbed.topology import Knobs, async_pipeline, sync_chain

from .conftest import accepted, edge_errors, report, save, stored

RATE, AT, DOWN, DURATION = 10, 2.0, 2.0, 12.0


def outage_trials(runtime: Runtime, outbox: bool) -> tuple[RunResult, RunResult]:
    """The async pipeline through a broker outage, and the sync chain beside it."""
    pipeline = async_pipeline(1, overrides={"gateway": Knobs(outbox=outbox)})
    with runtime.deploy(sync_chain(1)) as chain, runtime.deploy(pipeline) as deployment:
        plan = [Planned(make_fault(deployment, "broker_down", "", graceful=False), at=AT,
                        duration=DOWN)]
        with ThreadPoolExecutor(max_workers=2) as pool:
            beside = pool.submit(run_trial, chain, constant(RATE, DURATION), [])
            through = run_trial(deployment, constant(RATE, DURATION), plan,
                                drain_timeout_s=20)
            return through, beside.result()


@pytest.fixture(scope="module")
def results(testbed_runtime: Runtime,
            pytestconfig: pytest.Config) -> Iterator[dict[str, RunResult]]:
    direct, sync = outage_trials(testbed_runtime, outbox=False)
    outbox, _ = outage_trials(testbed_runtime, outbox=True)
    found = {"sync": sync, "direct": direct, "outbox": outbox}
    save(pytestconfig, "e12-broker-outage", found)
    yield found


def outage_s(result: RunResult) -> float:
    """Seconds of load that met the outage: the fault's window cut at the load's end."""
    window = fault_windows(result.events)[0]
    assert window.end is not None, "the broker was never brought back"
    return min(window.end, DURATION) - window.start


def no_loss(hypotheses: Hypotheses, result: RunResult) -> None:
    audit = ledger_audit(accepted(result), result.processed("payments"))
    hypotheses.check(equals("accepted orders lost", 0, audit.lost, unit="orders"))
    events = ledger_audit(stored(result), result.processed("payments"))
    hypotheses.check(equals("stored orders whose event was lost", 0, events.lost,
                            unit="orders"))


def outbox_hypotheses(result: RunResult) -> Hypotheses:
    hypotheses = Hypotheses(f"E12 outbox: broker killed for {DOWN:.0f} s plus its restart")
    hypotheses.check(equals("edge errors", 0, edge_errors(result), unit="orders"))
    no_loss(hypotheses, result)
    return hypotheses


def test_sync_chain_is_unaffected(results: dict[str, RunResult]) -> None:
    hypotheses = Hypotheses("E12 sync chain beside the broker outage")
    hypotheses.check(equals("edge errors", 0, edge_errors(results["sync"]), unit="orders"))
    report(hypotheses)


def test_direct_publish_fails_at_the_edge_but_loses_nothing(
        results: dict[str, RunResult]) -> None:
    result = results["direct"]
    window = outage_s(result)
    hypotheses = Hypotheses(f"E12 direct publish: broker killed for {DOWN:.0f} s plus its "
                            "restart")
    hypotheses.check(close_to("edge errors", RATE * window, edge_errors(result), rel=0.25,
                              unit="orders"))
    no_loss(hypotheses, result)
    report(hypotheses)


def test_outbox_keeps_accepting_and_delivers_after_recovery(
        results: dict[str, RunResult]) -> None:
    report(outbox_hypotheses(results["outbox"]))


def test_negative_control_direct_publish_fails_the_outbox_claim(
        results: dict[str, RunResult]) -> None:
    failed = {v.name for v in outbox_hypotheses(results["direct"]).failed}
    assert failed == {"edge errors"}
