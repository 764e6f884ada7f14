"""A user's own service (the Go program of examples/own-service-go) in both shapes, on
whichever runtime the session runs: it is told its neighbours through the proxies, faults
reach it, its ledger is audited; and what it cannot have is refused by name."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from testbed.errors import TopologyError
from testbed.faults import FaultSpecError, Timeline, injected, make_fault
from testbed.load import constant
from testbed.observe import run_trial
from testbed.report.incident import incident
from testbed.scenario.metrics import MetricError, lost
from testbed.topology import Topology, load_topology
from testbed.topology.own import OwnService

from .conftest import Deploy, eventually, leftovers, place, processed

EXAMPLE = Path(__file__).parents[2] / "examples" / "own-service-go"


def sync_topology() -> Topology:
    return load_topology(EXAMPLE / "sync.toml")


def without_ledger(topology: Topology, name: str) -> Topology:
    services = []
    for spec in topology.services:
        if spec.name == name:
            assert spec.own is not None
            spec = dataclasses.replace(spec, own=dataclasses.replace(spec.own, ledger=False))
        services.append(spec)
    return dataclasses.replace(topology, services=tuple(services))


def test_an_order_crosses_two_own_stages_and_both_ledgers_have_it(deploy: Deploy) -> None:
    chain = deploy(sync_topology())
    answer = chain.place_order("own-1")
    assert answer.status_code == 200, answer.text
    assert answer.json()["path"] == ["gateway", "orders", "payments"]
    assert processed(chain, "orders") == processed(chain, "payments") == {"own-1"}


def test_latency_on_the_link_into_an_own_stage_is_waited_for_at_the_edge(
        deploy: Deploy) -> None:
    chain = deploy(sync_topology())
    chain.place_order("warm")
    with injected(make_fault(chain, "latency", "orders-payments", latency=400)):
        answer = chain.place_order("slow")
    assert answer.status_code == 200
    assert answer.elapsed.total_seconds() >= 0.4


@pytest.mark.own_ledger_survives_restart
def test_a_killed_own_stage_fails_its_callers_and_keeps_its_ledger_on_restart(
        deploy: Deploy) -> None:
    chain = deploy(sync_topology())
    assert chain.place_order("before").status_code == 200
    timeline = Timeline()
    with injected(make_fault(chain, "kill", "payments"), timeline):
        failed = chain.place_order("while-dead")
        assert failed.status_code == 502, failed.text  # orders 504, the gateway 502
        assert "downstream did not answer" in failed.text
    assert chain.place_order("after").status_code == 200
    # recorded by orders (before its call failed), never by payments; payments' history
    # came back from its ledger file
    assert processed(chain, "payments") == {"before", "after"}
    assert processed(chain, "orders") == {"before", "while-dead", "after"}


def test_an_own_consumer_works_through_an_amqp_outage_and_loses_nothing(
        deploy: Deploy) -> None:
    pipeline = deploy(load_topology(EXAMPLE / "async.toml"))
    ids = place(pipeline, "pre", 5)
    assert eventually(lambda: processed(pipeline, "inventory") >= set(ids))
    with injected(make_fault(pipeline, "link_down", "payments-broker")):
        queued = place(pipeline, "cut", 10)
        assert eventually(lambda: pipeline.broker is not None
                          and pipeline.broker.queue_state("payments").ready == 10, 5)
    assert eventually(lambda: processed(pipeline, "inventory") >= set(ids + queued), 20)
    assert set(queued) <= processed(pipeline, "payments")


def test_faults_that_work_inside_the_testbeds_services_are_refused_on_an_own_one(
        deploy: Deploy) -> None:
    chain = deploy(sync_topology())
    for fault in ("error_rate", "crash_at"):
        with pytest.raises(FaultSpecError, match="payments is your own service"):
            make_fault(chain, fault, "payments", p=0.5) if fault == "error_rate" else \
                make_fault(chain, fault, "payments", point="after_process")
    make_fault(chain, "error_rate", "gateway", p=0.5)  # the testbed's gateway: fine


def test_without_a_ledger_only_edge_metrics_are_available(deploy: Deploy) -> None:
    chain = deploy(without_ledger(sync_topology(), "payments"))
    assert "payments" not in chain.ledgers() and "orders" in chain.ledgers()
    result = run_trial(chain, constant(10, 1.0), [], name="no-ledger", drain_timeout_s=5,
                       tail_s=0.2)
    assert result.meta["unaudited"] == ["payments"]
    with pytest.raises(MetricError, match="only edge metrics are available"):
        lost(result)
    facts = incident(result)
    assert facts.lost is None and "only edge metrics are available" in facts.summary()
    assert facts.edge_errors == 0 and facts.orders == 10


@pytest.mark.local_only
def test_a_missing_program_is_named_before_anything_starts(testbed_runtime: object,
                                                           tmp_path: Path) -> None:
    topology = sync_topology()
    missing = OwnService(command=("./bin/not-built",), directory=str(tmp_path))
    services = tuple(dataclasses.replace(s, own=missing) if s.name == "payments" else s
                     for s in topology.services)
    broken = dataclasses.replace(topology, services=services)
    with pytest.raises(TopologyError) as caught:
        testbed_runtime.deploy(broken)  # type: ignore[attr-defined]
    assert caught.value.field == "services[payments].own.command"
    assert "not-built is not an executable program" in str(caught.value)
    run_id = testbed_runtime.run_id  # type: ignore[attr-defined]
    assert not [item for item in leftovers(run_id) if "process" in item
                and ("own-service" in item or "not-built" in item)]
