"""Own services in a topology file: what is accepted, what is refused and why, and what
the program is told (the TESTBED_* contract)."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.errors import TopologyError
from testbed.services.config import AmqpTarget, ServiceConfig
from testbed.services.contract import contract_environment
from testbed.topology import Knobs, load_topology, topology_from_dict

SYNC = """
name = "sync"
shape = "sync"
entry = "gateway"
[[services]]
name = "gateway"
role = "http_stage"
[[services]]
name = "payments"
role = "http_stage"
knobs = { timeout_s = 1.5, work_ms = 5 }
[services.own]
command = ["./bin/own-service", "--quiet"]
build = ["make", "build"]
health = "/ready"
ledger = false
env = { GREETING = "hi" }
[[links]]
source = "gateway"
target = "payments"
protocol = "http"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "topology.toml"
    path.write_text(text)
    return path


def test_an_own_service_is_read_with_paths_from_the_topology_files_folder(
        tmp_path: Path) -> None:
    topology = load_topology(write(tmp_path, SYNC))
    own = topology.service("payments").own
    assert own is not None
    assert own.command == ("./bin/own-service", "--quiet")
    assert own.build == ("make", "build")
    assert own.health == "/ready" and own.ledger is False
    assert own.env == (("GREETING", "hi"),)
    assert own.resolved_command() == [str(tmp_path.resolve() / "bin" / "own-service"),
                                      "--quiet"]
    assert [s.name for s in topology.own_services] == ["payments"]
    assert topology.service("gateway").own is None


@pytest.mark.parametrize(("change", "field", "says"), [
    ('[services.own]\ncommand = ["x"]', "services[gateway].own", "cannot be your own"),
    ("[services.own]\nhealth = \"/h\"", "services[0].own", "neither a command nor an image"),
    ('[services.own]\ncommand = 3', "services[0].own.command", "is not a command"),
    ('[services.own]\ncommand = ["x"]\nhealth = "ready"', "services[0].own.health",
     "is not a path"),
    ('[services.own]\ncommand = ["x"]\ncolour = 1', "services[0].own.colour", "unknown key"),
    ('[services.own]\ncommand = ["x"]\nenv = { TESTBED_PORT = "1" }',
     "services[0].own.env.TESTBED_PORT", "not a name of yours"),
    ('[services.own]\ncommand = ["x"]\ndockerfile = "Dockerfile"', "services[0].own.dockerfile",
     "no image is named"),
])
def test_an_own_gateway_or_a_malformed_own_table_is_refused_by_name(
        tmp_path: Path, change: str, field: str, says: str) -> None:
    # the own table goes on the first service: the async gateway (refused by role), or
    # on an http stage in the cases that are about the table itself
    role = "http_stage" if "cannot be" not in says else "async_gateway"
    text = f"""
name = "t"
shape = "sync"
entry = "gateway"
[[services]]
name = "gateway"
role = "{role}"
{'publishes = "order.placed"' if role == "async_gateway" else ""}
{change}
"""
    with pytest.raises(TopologyError) as caught:
        load_topology(write(tmp_path, text))
    assert caught.value.field == field, caught.value
    assert says in str(caught.value)


def test_a_knob_the_testbeds_services_implement_is_refused_on_an_own_service(
        tmp_path: Path) -> None:
    text = SYNC.replace("knobs = { timeout_s = 1.5, work_ms = 5 }",
                        "knobs = { retries = 2 }")
    with pytest.raises(TopologyError) as caught:
        load_topology(write(tmp_path, text))
    assert caught.value.field == "services[payments].knobs.retries"
    assert "your program must do it itself" in str(caught.value)


def test_an_own_consumer_on_kafka_is_refused() -> None:
    data = {
        "name": "a", "shape": "async", "entry": "gateway",
        "broker": {"kind": "kafka"},
        "services": [
            {"name": "gateway", "role": "async_gateway", "publishes": "order.placed"},
            {"name": "payments", "role": "async_consumer", "consumes": "order.placed",
             "own": {"command": ["x"]}}],
        "links": [{"source": "gateway", "target": "broker", "protocol": "kafka"},
                  {"source": "payments", "target": "broker", "protocol": "kafka"}]}
    with pytest.raises(TopologyError) as caught:
        topology_from_dict(data)
    assert caught.value.field == "services[payments].own"
    assert "speak AMQP" in str(caught.value)


def test_the_contract_tells_a_consumer_its_broker_through_its_proxy_and_its_queue() -> None:
    config = ServiceConfig(
        name="payments", role="async_consumer", host="127.0.0.1", port=4100,
        knobs=Knobs(work_ms=2.5, prefetch=4), ledger_path="/tmp/x/payments.ledger",
        amqp=AmqpTarget("127.0.0.1", 4200, "run.async1", "user", "p@ss/w", "orders"),
        consumes="order.placed", publishes="payment.done", queue="payments")
    env = contract_environment(config)
    assert env == {
        "TESTBED_SERVICE": "payments", "TESTBED_ROLE": "async_consumer",
        "TESTBED_HOST": "127.0.0.1", "TESTBED_PORT": "4100",
        "TESTBED_LEDGER_PATH": "/tmp/x/payments.ledger", "TESTBED_WORK_MS": "2.5",
        "TESTBED_TIMEOUT_S": "2",
        "TESTBED_AMQP_URL": "amqp://user:p%40ss%2Fw@127.0.0.1:4200/run.async1",
        "TESTBED_EXCHANGE": "orders", "TESTBED_PREFETCH": "4", "TESTBED_QUEUE": "payments",
        "TESTBED_PUBLISHES": "payment.done"}


def test_the_contract_tells_a_stage_its_downstream_only_when_it_has_one() -> None:
    middle = ServiceConfig(name="orders", role="http_stage", host="0.0.0.0", port=8080,
                           knobs=Knobs(timeout_s=0.5), ledger_path="/data/orders.ledger",
                           downstream_url="http://toxiproxy:4001")
    assert contract_environment(middle)["TESTBED_DOWNSTREAM_URL"] == "http://toxiproxy:4001"
    assert contract_environment(middle)["TESTBED_TIMEOUT_S"] == "0.5"
    last = ServiceConfig(name="payments", role="http_stage", host="0.0.0.0", port=8080,
                         knobs=Knobs(), ledger_path="/data/payments.ledger")
    assert "TESTBED_DOWNSTREAM_URL" not in contract_environment(last)
    assert "TESTBED_AMQP_URL" not in contract_environment(last)
