"""The async shape on Kafka as data: the topology's broker kind and partitions, what it
refuses, customer keys on the load, the message key, and the model's traces."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest

from testbed.errors import TopologyError
from testbed.load import LoadSpecError, constant
from testbed.model import simulate
from testbed.scenario import metrics as m
from testbed.scenario import slower
from testbed.scenario.spec import ScenarioError, scenario_from_dict
from testbed.services.kafka_client import message_key
from testbed.services.kafka_settings import partition_of
from testbed.topology import Knobs, async_pipeline, sync_chain, topology_from_dict


def test_the_builder_puts_every_link_on_the_brokers_protocol() -> None:
    topology = async_pipeline(2, broker="kafka", partitions=3)
    assert topology.on_kafka and topology.broker is not None
    assert topology.broker.partitions == 3
    assert {link.protocol for link in topology.links} == {"kafka"}
    assert not async_pipeline(2).on_kafka


@pytest.mark.parametrize(("knob", "value"), [("queue_type", "quorum"), ("max_length", 10),
                                             ("overflow", "reject-publish"),
                                             ("request_reply", True), ("outbox", True)])
def test_rabbitmq_settings_are_refused_on_kafka_by_name(knob: str, value: object) -> None:
    with pytest.raises(TopologyError, match=rf"knobs.{knob}.*RabbitMQ setting"):
        async_pipeline(1, overrides={"payments" if knob != "request_reply" and
                                     knob != "outbox" else "gateway": Knobs(**{knob: value})},
                       broker="kafka")


@pytest.mark.parametrize(("broker", "problem"), [
    ({"kind": "sqs"}, "unknown broker"),
    ({"kind": "kafka", "partitions": 0}, "not allowed"),
    ({"kind": "kafka", "partitions": 17}, "not allowed"),
    ({"partitions": 3}, "RabbitMQ queues have no partitions"),
])
def test_a_bad_broker_table_names_the_field(broker: dict[str, object], problem: str) -> None:
    data = {"name": "bad", "shape": "async", "entry": "gateway", "broker": broker,
            "services": [{"name": "gateway", "role": "async_gateway",
                          "publishes": "order.placed"}],
            "links": [{"source": "gateway", "target": "broker", "protocol": "kafka"}]}
    with pytest.raises(TopologyError, match=problem):
        topology_from_dict(data)


def test_a_link_that_speaks_the_wrong_protocol_is_refused() -> None:
    data = {"name": "mixed", "shape": "async", "entry": "gateway", "broker": {"kind": "kafka"},
            "services": [{"name": "gateway", "role": "async_gateway",
                          "publishes": "order.placed"}],
            "links": [{"source": "gateway", "target": "broker", "protocol": "amqp"}]}
    with pytest.raises(TopologyError, match=r"does not speak amqp.*protocol = 'kafka'"):
        topology_from_dict(data)


def test_orders_carry_a_customer_key_only_when_asked() -> None:
    profile = constant(10, 1, keys=3)
    assert [profile.key_of(i) for i in range(4)] == ["key-0", "key-1", "key-2", "key-0"]
    assert constant(10, 1).key_of(5) is None
    with pytest.raises(LoadSpecError, match="keys"):
        constant(10, 1, keys=-1)


def test_the_message_key_is_the_customer_key_else_the_order_id() -> None:
    assert message_key(json.dumps({"order_id": "o-1", "key": "key-2"}).encode()) == "key-2"
    assert message_key(json.dumps({"order_id": "o-1"}).encode()) == "o-1"
    assert message_key(b"\x00poison{") is None
    assert partition_of("o-1", 4) == zlib.crc32(b"o-1") % 4


def test_the_model_keeps_a_keys_orders_in_one_partition() -> None:
    """Keyed by customer, each key's orders are read in order by one member."""
    topology = async_pipeline(1, overrides={"payments": Knobs(replicas=4, work_ms=40,
                                                              work_jitter_ms=200)},
                              broker="kafka", partitions=4)
    keyed = simulate(topology, constant(10, 12, keys=8))
    by_order = simulate(topology, constant(10, 12))
    assert sum(m.out_of_order(keyed, "payments", 8)) == 0
    assert sum(m.out_of_order(by_order, "payments", 8)) > 0


def test_a_scenario_file_puts_the_async_shape_on_kafka() -> None:
    data = {"scenario": {"title": "on kafka"},
            "topology": {"shape": "async", "depth": 1, "broker": "kafka", "partitions": 2},
            "load": {"rate": 5, "duration": 2},
            "hypotheses": [{"metric": "lost", "predicted": 0, "check": "exact"}]}
    scenario = scenario_from_dict(data, Path("kafka.toml"))
    assert [t.on_kafka for t in scenario.topologies] == [True]
    data["topology"]["partitions"] = 0
    with pytest.raises(ScenarioError, match="partitions"):
        scenario_from_dict(data, Path("kafka.toml"))


def test_the_models_traces_follow_the_context() -> None:
    """Sync: one trace; async without propagation: 1 + consumers; with it: one. The
    slowed hop's span has the most self time in every shape."""
    slow = [slower("payments", 100, at=1, duration=2)]
    for topology, traces, hop in ((sync_chain(3), 1, "orders-payments"),
                                  (async_pipeline(3), 4, "payments-broker"),
                                  (async_pipeline(3, Knobs(trace_propagation=True)), 1,
                                   "payments-broker")):
        result = simulate(topology, constant(5, 4), slow, traced=True)
        assert m.traces_per_order(result) == traces
        assert m.whole_path_share(result) == (1.0 if traces == 1 else 0.0)
        assert m.slowest_hop_share(result, hop, 1.2, 2.8) == 1.0
        assert m.slowest_hop_share(result, hop, 3.2, 4.0) == 0.0  # after the fault


def test_an_untraced_run_has_no_traces_to_read() -> None:
    with pytest.raises(m.MetricError, match="not traced"):
        m.whole_path_share(simulate(sync_chain(1), constant(5, 1)))
