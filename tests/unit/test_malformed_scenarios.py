"""Malformed scenario files are rejected with an error naming the field and the fix, and
nothing starts. Every case starts from the valid scenario below and applies ONE mistake
a user could make; the shipped scenario files must all load."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from testbed.scenario.faults import ServiceFault, fault, resolve, slower, unreachable
from testbed.scenario.spec import ScenarioError, load_scenario, scenario_from_dict
from testbed.topology import paired, sync_chain

from .test_malformed_inputs import Snapshot, _private_state_root  # noqa: F401 (autouse: a private state root)

ROOT = Path(__file__).resolve().parents[2]
VALID: dict[str, Any] = {
    "scenario": {"title": "outage"},
    "topology": {"shape": "paired", "depth": 3},
    "knobs": {"timeout_s": 1.0},
    "services": {"payments": {"work_ms": 20}},
    "load": {"rate": 20, "duration": 8, "timeout_s": 1.0},
    "faults": [{"kind": "unreachable", "service": "payments", "at": 2.0, "duration": 3.0},
               {"kind": "slower", "service": "inventory", "ms": 100, "at": 1.0,
                "duration": 1.0},
               {"kind": "poison", "service": "payments", "at": 1.0}],
    "hypotheses": [
        {"name": "sync edge errors", "topology": "sync", "metric": "edge_errors",
         "predicted": 60, "check": "within", "rel": 0.2, "unit": "orders"},
        {"name": "async backlog", "topology": "async", "metric": "backlog_peak",
         "queue": "payments", "predicted": 65, "check": "within", "abs": 10},
        {"name": "async edge p99", "topology": "async", "metric": "edge_latency", "q": 99,
         "predicted": 0.1, "check": "at_most", "unit": "s"}],
    "controls": [{"hypotheses": ["async backlog"], "on": "sync"}],
}
Mistake = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mistake:
    def apply(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        node[int(last) if last.isdigit() else last] = value
    return apply


def _drop(table: str, key: str) -> Mistake:
    def apply(data: dict[str, Any]) -> None:
        node: Any = data
        for part in filter(None, table.split(".")):
            node = node[int(part)] if part.isdigit() else node[part]
        del node[key]
    return apply


MISTAKES: dict[str, tuple[Mistake, str, str]] = {
    # id: (the mistake, the field the error must name, a word of the problem)
    "unknown top-level table": (_set("hypothesis", []), "hypothesis", "unknown key"),
    "unknown shape": (_set("topology.shape", "pipeline"), "topology.shape", "unknown value"),
    "depth out of range": (_set("topology.depth", 9), "topology.depth", "not allowed"),
    "unknown knob": (_set("knobs.pool", 4), "knobs.pool", "unknown knob"),
    "bad knob value": (_set("services.payments.work_ms", -5), "services.payments.work_ms",
                       "not allowed"),
    "knobs of a service not in the topology": (
        _set("services.email", {"work_ms": 3}), "services.email", "no such service"),
    "no load": (_drop("", "load"), "load", "missing"),
    "zero rate": (_set("load.rate", 0), "load.rate", "missing or 0"),
    "negative duration": (_set("load.duration", -1), "load.duration", "not allowed"),
    "steps beside rate": (_set("load.steps", [[5, 10]]), "load.steps", "together"),
    "unbounded load": (_set("load.duration", 7200), "load", "limit"),
    "unknown load key": (_set("load.users", 5), "load.users", "unknown key"),
    "unknown fault": (_set("faults.0.kind", "meteor"), "faults[0].kind", "unknown value"),
    "fault on an unknown service": (_set("faults.0.service", "email"), "faults[0]",
                                    "no service 'email'"),
    "fault parameter it does not take": (_set("faults.0.latency", 5), "faults[0].latency",
                                         "not a parameter"),
    "slower without ms": (_drop("faults.1", "ms"), "faults[1].ms", "missing"),
    "negative fault time": (_set("faults.0.at", -2), "faults[0].at", "not allowed"),
    "zero fault duration": (_set("faults.0.duration", 0), "faults[0].duration",
                            "not allowed"),
    "broker fault naming a service": (_set("faults.0.kind", "broker_down"), "faults[0]",
                                      "whole broker"),
    "fault for a shape that is not there": (
        lambda d: (d["topology"].update(shape="sync"), d["hypotheses"].__setitem__(
            slice(None), d["hypotheses"][:1]), d.pop("controls"),
            d["faults"].__setitem__(slice(None), d["faults"][2:])),
        "faults[0].only", "applies to no topology"),
    "no hypotheses": (_set("hypotheses", []), "hypotheses", "none stated"),
    "unknown metric": (_set("hypotheses.0.metric", "joy"), "hypotheses[0].metric",
                       "unknown value"),
    "metric argument it does not take": (_set("hypotheses.0.queue", "x"),
                                         "hypotheses[0].queue", "not an argument"),
    "metric without its required argument": (_drop("hypotheses.2", "q"),
                                             "hypotheses[2].q", "needs it"),
    "hypothesis on an unknown topology": (_set("hypotheses.0.topology", "kafka"),
                                          "hypotheses[0].topology", "unknown value"),
    "no prediction": (_drop("hypotheses.0", "predicted"), "hypotheses[0].predicted",
                      "missing"),
    "prediction not a number": (_set("hypotheses.0.predicted", "sixty"),
                                "hypotheses[0].predicted", "not a number"),
    "within without a tolerance": (_drop("hypotheses.0", "rel"), "hypotheses[0].rel",
                                   "needs a tolerance"),
    "unknown check": (_set("hypotheses.0.check", "about"), "hypotheses[0].check",
                      "unknown value"),
    "a tolerance on a bound": (_set("hypotheses.2.rel", 0.1), "hypotheses[2].check",
                               "takes no rel"),
    "two hypotheses named alike": (_set("hypotheses.1.name", "sync edge errors"),
                                   "hypotheses[1].name", "stated twice"),
    "control naming no hypothesis": (_set("controls.0.hypotheses", ["joy"]),
                                     "controls[0].hypotheses", "no hypothesis named"),
    "control on an unknown topology": (_set("controls.0.on", "kafka"), "controls[0].on",
                                       "unknown value"),
}


def test_the_valid_scenario_loads() -> None:
    scenario = scenario_from_dict(VALID, Path("outage.toml"))
    assert scenario.name == "outage"
    assert [t.name for t in scenario.topologies] == ["sync", "async"]
    assert scenario.topology("sync").service("payments").knobs.work_ms == 20
    assert scenario.topology("async").service("payments").knobs.timeout_s == 1.0
    assert scenario.profile.count == 160
    assert scenario.faults[1].params == {"latency": 100}


@pytest.mark.parametrize("mistake", sorted(MISTAKES), ids=str)
def test_a_malformed_scenario_is_rejected_clearly(mistake: str) -> None:
    apply, field, problem = MISTAKES[mistake]
    data = copy.deepcopy(VALID)
    apply(data)
    before = Snapshot.take()
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict(data, Path("bad.toml"))
    message = str(info.value)
    assert info.value.field == field, message
    assert message.startswith(f"bad.toml: field {field!r}: "), message
    assert problem in message, message
    assert "Fix: " in message and info.value.fix.strip(), message
    before.assert_nothing_started_since()


def test_a_file_that_is_not_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[load\nrate = 2\n")
    with pytest.raises(ScenarioError, match=r"broken.toml: field 'file': not valid TOML"):
        load_scenario(path)
    with pytest.raises(ScenarioError, match=r"field 'file': cannot read it"):
        load_scenario(tmp_path / "missing.toml")


def test_every_shipped_scenario_file_loads() -> None:
    files = [p for p in (ROOT / "scenarios").rglob("*.toml") if "topologies" not in p.parts]
    assert files, "no scenario files shipped"
    for path in files:
        assert load_scenario(path).hypotheses, path


# -- faults addressed by the service they hurt ----------------------------------------------

def test_a_network_fault_goes_on_the_hop_into_the_service_or_its_broker_link() -> None:
    pair = paired(3)
    assert unreachable("payments", 2, 3).targets(pair.sync) == ["orders-payments"]
    assert unreachable("payments", 2, 3).targets(pair.async_) == ["payments-broker"]
    assert slower("inventory", 400, 2, 3).targets(pair.sync) == ["payments-inventory"]
    assert slower("gateway", 50, 0, 1).targets(pair.async_) == ["gateway-broker"]


def test_process_and_queue_faults_go_to_the_service() -> None:
    pair = paired(2)
    assert fault("kill", "payments", at=1).targets(pair.sync) == ["payments"]
    assert fault("poison", "payments", at=1).targets(pair.async_) == ["payments"]
    assert fault("broker_down", at=1, duration=2).targets(pair.async_) == [""]


def test_a_fault_that_means_nothing_for_a_shape_is_refused_or_left_out() -> None:
    poison = fault("poison", "payments", at=1)
    assert not poison.applies_to(sync_chain(2))
    with pytest.raises(Exception, match="sync chain has no broker"):
        poison.targets(sync_chain(2))
    with pytest.raises(Exception, match="no proxied link leads to it"):
        unreachable("gateway", 1, 1).targets(sync_chain(2))
    assert not ServiceFault("unreachable", "payments", only="async").applies_to(sync_chain(2))


def test_resolving_checks_every_fault_before_building_any() -> None:
    with pytest.raises(Exception, match="no service 'email'"):
        resolve([unreachable("email", 1, 1)], deployment=_NoDeployment(sync_chain(2)))


class _NoDeployment:
    """Only a topology: resolution must fail before it asks a deployment for anything."""

    def __init__(self, topology: Any) -> None:
        self.topology = topology
