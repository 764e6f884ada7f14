"""Topology validation and builders: pure logic, no components."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from testbed.errors import TopologyError
from testbed.topology import (
    BROKER,
    Knobs,
    LinkSpec,
    ServiceSpec,
    Topology,
    async_pipeline,
    build_shape,
    load_topology,
    paired,
    sync_chain,
    topology_from_dict,
)


def test_sync_chain_default_is_gateway_orders_payments_inventory() -> None:
    topology = sync_chain()
    assert [s.name for s in topology.services] == ["gateway", "orders", "payments", "inventory"]
    assert [link.name for link in topology.links] == [
        "gateway-orders", "orders-payments", "payments-inventory"]
    assert all(link.proxied and link.protocol == "http" for link in topology.links)
    assert topology.broker is None


def test_async_pipeline_chains_events_and_proxies_every_amqp_link() -> None:
    topology = async_pipeline()
    assert [(s.name, s.consumes, s.publishes) for s in topology.services] == [
        ("gateway", None, "order.placed"),
        ("payments", "order.placed", "payments.done"),
        ("inventory", "payments.done", "inventory.done"),
        ("notification", "inventory.done", None),
    ]
    assert {link.target for link in topology.links} == {BROKER}
    assert len(topology.proxied_links) == 4


@pytest.mark.parametrize("depth", [1, 5])
def test_paired_has_same_depth_on_both_sides(depth: int) -> None:
    pair = paired(depth)
    assert len(pair.sync.services) == len(pair.async_.services) == depth + 1


@pytest.mark.parametrize("depth", [-1, 0, 6, 2.5, True, "3"])
def test_bad_depth_names_the_field_and_the_fix(depth: object) -> None:
    with pytest.raises(TopologyError) as info:
        sync_chain(depth)  # type: ignore[arg-type]
    assert info.value.field == "depth"
    assert "from 1 to 5" in str(info.value)


def test_unknown_shape_is_rejected() -> None:
    with pytest.raises(TopologyError, match=r"unknown shape 'ring'.*sync, async, paired"):
        build_shape("ring")


@pytest.mark.parametrize(("knob", "value"), [("pool_size", 0), ("timeout_s", -1.0),
                                             ("prefetch", 1.5), ("work_ms", -3),
                                             ("replicas", 0), ("replicas", 9),
                                             ("idempotent", "yes"), ("outbox", 1),
                                             ("consumer_retries", 11),
                                             ("consumer_retry_delay_ms", 0)])
def test_bad_knobs_are_rejected(knob: str, value: object) -> None:
    with pytest.raises(TopologyError, match=f"knobs.{knob}"):
        Knobs(**{knob: value})  # type: ignore[arg-type]


def test_duplicate_service_names() -> None:
    base = sync_chain(2)
    with pytest.raises(TopologyError, match="duplicate names"):
        replace(base, services=(*base.services, base.services[0]))


def test_cycle_in_http_links_is_rejected() -> None:
    a = ServiceSpec("a", "http_stage")
    b = ServiceSpec("b", "http_stage")
    with pytest.raises(TopologyError, match="cycle"):
        Topology("t", "sync", "a", (a, b), (LinkSpec("a", "b", "http"),
                                            LinkSpec("b", "a", "http")))


def test_link_to_unknown_service() -> None:
    with pytest.raises(TopologyError, match=r"links\[a-ghost\].target"):
        Topology("t", "sync", "a", (ServiceSpec("a", "http_stage"),),
                 (LinkSpec("a", "ghost", "http"),))


def test_async_service_without_broker_or_amqp_link() -> None:
    gateway = ServiceSpec("gateway", "async_gateway", publishes="x")
    with pytest.raises(TopologyError, match="need a broker"):
        Topology("t", "async", "gateway", (gateway,), ())


def test_consumer_of_an_event_nobody_publishes() -> None:
    topology = async_pipeline(1)
    consumer = replace(topology.services[1], consumes="never.published")
    with pytest.raises(TopologyError, match=r"nothing publishes 'never.published'"):
        replace(topology, services=(topology.services[0], consumer))


def test_from_dict_builds_the_same_topology_as_the_builder() -> None:
    data = {
        "name": "sync", "shape": "sync", "entry": "gateway",
        "services": [{"name": "gateway", "role": "http_stage"},
                     {"name": "orders", "role": "http_stage", "knobs": {"pool_size": 8}}],
        "links": [{"source": "gateway", "target": "orders", "protocol": "http"}],
    }
    assert topology_from_dict(data) == sync_chain(1)


@pytest.mark.parametrize(("data", "field"), [
    ({"name": "x", "shape": "sync", "entry": "a", "services": [], "colour": 1}, "topology.colour"),
    ({"name": "x", "shape": "sync", "entry": "a"}, "topology.services"),
    ({"name": "x", "shape": "sync", "entry": "a",
      "services": [{"name": "a", "role": "http_stage", "knobs": {"threads": 3}}]},
     "services[0].knobs.threads"),
])
def test_from_dict_errors_name_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(TopologyError) as info:
        topology_from_dict(data)
    assert info.value.field == field


def test_load_topology_reports_bad_toml(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text("name = \n")
    with pytest.raises(TopologyError, match="not valid TOML"):
        load_topology(path)
    with pytest.raises(TopologyError, match="cannot read"):
        load_topology(tmp_path / "missing.toml")


def test_fixed_port_must_be_usable() -> None:
    with pytest.raises(TopologyError, match="port"):
        ServiceSpec("a", "http_stage", port=80)


def test_consumer_retries_need_a_dead_letter_queue() -> None:
    with pytest.raises(TopologyError, match=r"knobs\.consumer_retries.*dead_letter=True"):
        Knobs(consumer_retries=2)
    assert Knobs(consumer_retries=2, dead_letter=True).retry_queue_arguments("payments") == {
        "x-message-ttl": 1000, "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "payments"}


def test_outbox_and_request_reply_exclude_each_other() -> None:
    with pytest.raises(TopologyError, match=r"knobs\.request_reply.*only one"):
        Knobs(outbox=True, request_reply=True)


def test_dead_letters_are_routed_by_the_queue_name() -> None:
    arguments = Knobs(dead_letter=True).queue_arguments("payments", "orders.dlx")
    assert arguments["x-dead-letter-exchange"] == "orders.dlx"
    assert arguments["x-dead-letter-routing-key"] == "payments"
