"""The k8s runtime's manifests, read as data: labels, hostAliases, nothing node-local,
images only from the node, placement, ports. No cluster needed."""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

import pytest

from testbed.errors import TopologyError
from testbed.images.build import SERVICE_COMMAND
from testbed.runtime.docker.containers import (
    AMQP_PORT,
    LABEL_CONTROLLER,
    LABEL_DEPLOYMENT,
    LABEL_ROLE,
    LABEL_RUN,
    LABEL_SERVICE,
    MANAGEMENT_PORT,
    SERVICE_CONFIG_PATH,
    SERVICE_PORT,
    TOXIPROXY_API_PORT,
)
from testbed.runtime.docker.plan import kafka_plan, service_config
from testbed.runtime.k8s.forward import forward_argv
from testbed.runtime.k8s.manifests import (
    HOSTNAME_KEY,
    KAFKA,
    SERVICE,
    Owner,
    broker_pod,
    config_map,
    controller_of,
    controller_value,
    dns_label,
    host_aliases,
    kafka_pod,
    label_value,
    namespace_manifest,
    namespace_name,
    object_name,
    service_manifest,
    service_pod,
    toxiproxy_pod,
)
from testbed.topology.builders import async_pipeline, paired
from testbed.topology.model import Knobs

OWNER = Owner("tb0123456789", "4242:12345.67")
ALIASES = {"broker": "10.0.0.10", "toxiproxy": "10.0.0.11", "gateway": "10.0.0.12",
           "orders": "10.0.0.13"}
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _pods() -> list[dict[str, Any]]:
    return [
        service_pod(OWNER, "sync1", "gateway", "testbed/service:x", ALIASES, "sync1-config",
                    Knobs()),
        toxiproxy_pod(OWNER, "sync1", "testbed/toxiproxy:x", ALIASES, [21001, 21002]),
        kafka_pod(OWNER, "async1", "testbed/kafka:x", ALIASES, 21500, [9092, 9100],
                  "async1-kafka-config", {"TESTBED_KAFKA_CLUSTER_ID": "abc"}),
        broker_pod(OWNER, "testbed/rabbitmq:x", "user", "secret"),
    ]


def _walk(obj: Any) -> list[str]:
    """Every key anywhere in a manifest."""
    if isinstance(obj, dict):
        return [*obj, *(k for v in obj.values() for k in _walk(v))]
    if isinstance(obj, list):
        return [k for item in obj for k in _walk(item)]
    return []


def test_names_are_dns_labels() -> None:
    assert namespace_name("tb0123456789") == "tb-tb0123456789"
    for text in ("tb0123456789", "Sync_1", "1abc", "x" * 80, "a--b__c"):
        label = dns_label(text)
        assert DNS_LABEL.match(label) and len(label) <= 63, (text, label)
    assert dns_label("x" * 80) != dns_label("x" * 81)  # cut, yet still unique
    assert object_name("sync1", "gateway") == "sync1-gateway"


def test_label_values_are_valid_and_the_controller_round_trips() -> None:
    value = controller_value("4242:12345.67")
    assert ":" not in value and LABEL_VALUE.match(value)
    assert controller_of(value) == "4242:12345.67"
    for text in ("tb0123456789", "sync1", "a:b", "_x_", "y" * 80):
        assert LABEL_VALUE.match(label_value(text)) and len(label_value(text)) <= 63


def test_every_object_carries_the_run_labels() -> None:
    objects = [*_pods(), namespace_manifest(OWNER),
               service_manifest(OWNER, "sync1-gateway", "service", [SERVICE_PORT], "sync1",
                                "gateway"),
               config_map(OWNER, "sync1-config", "sync1", {"gateway.json": "{}"})]
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels[LABEL_RUN] == OWNER.run_id
        assert controller_of(labels[LABEL_CONTROLLER]) == OWNER.controller
        assert obj["metadata"]["annotations"][LABEL_CONTROLLER] == OWNER.controller
        assert LABEL_ROLE in labels
        assert all(LABEL_VALUE.match(v) for v in labels.values()), labels
    gateway = objects[0]["metadata"]["labels"]
    assert gateway[LABEL_DEPLOYMENT] == "sync1" and gateway[LABEL_SERVICE] == "gateway"
    assert gateway[LABEL_ROLE] == "service"


def test_pods_are_bare_local_and_never_pulled() -> None:
    for pod in _pods():
        spec = pod["spec"]
        assert spec["restartPolicy"] == "Never"
        assert spec["automountServiceAccountToken"] is False
        assert spec["terminationGracePeriodSeconds"] == 3
        assert spec["enableServiceLinks"] is False
        keys = set(_walk(pod))
        assert not keys & {"hostPath", "hostNetwork", "hostPID", "hostIPC", "nodeName",
                           "hostPort"}, keys
        for container in spec["containers"]:
            assert container["imagePullPolicy"] == "Never"
            assert "readinessProbe" in container


def test_host_aliases_name_the_services_but_not_the_pod_itself() -> None:
    gateway = _pods()[0]["spec"]
    names = {h: entry["ip"] for entry in gateway["hostAliases"] for h in entry["hostnames"]}
    assert gateway["hostname"] == "gateway"
    assert names == {k: v for k, v in ALIASES.items() if k != "gateway"}
    grouped = host_aliases({"a": "10.0.0.1", "b": "10.0.0.1", "c": "10.0.0.2"})
    assert grouped == [{"ip": "10.0.0.1", "hostnames": ["a", "b"]},
                       {"ip": "10.0.0.2", "hostnames": ["c"]}]
    assert "hostAliases" not in _pods()[3]["spec"]  # the broker needs no one else


@pytest.mark.parametrize(("placement", "key"), [("spread", "podAntiAffinity"),
                                                ("pack", "podAffinity")])
def test_placement_is_in_the_pod_spec(placement: str, key: str) -> None:
    owner = Owner(OWNER.run_id, OWNER.controller, placement)
    pod = service_pod(owner, "sync1", "gateway", "img", ALIASES, "cfg", Knobs())
    affinity = pod["spec"]["affinity"]
    assert list(affinity) == [key]
    (term,) = affinity[key]["preferredDuringSchedulingIgnoredDuringExecution"]
    selector = term["podAffinityTerm"]["labelSelector"]["matchLabels"]
    assert term["podAffinityTerm"]["topologyKey"] == HOSTNAME_KEY
    assert selector == {LABEL_RUN: OWNER.run_id, LABEL_DEPLOYMENT: "sync1"}


def test_placement_is_checked() -> None:
    from testbed.runtime.k8s import K8sRuntime

    with pytest.raises(TopologyError, match="placement"):
        K8sRuntime(placement="scatter")
    assert K8sRuntime(placement="pack").placement == "pack"
    assert K8sRuntime().placement == "spread"


def test_ports_of_pods_and_services() -> None:
    gateway, toxiproxy, kafka, broker = _pods()

    def ports(pod: dict[str, Any]) -> list[int]:
        return [p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]]

    assert ports(gateway) == [SERVICE_PORT]
    assert ports(toxiproxy) == [TOXIPROXY_API_PORT, 21001, 21002]
    assert ports(kafka) == [9092, 9100, 21500]
    assert ports(broker) == [AMQP_PORT, MANAGEMENT_PORT]
    service = service_manifest(OWNER, "sync1-toxiproxy", "toxiproxy",
                               [TOXIPROXY_API_PORT, 21002, 21001], "sync1")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {"testbed.name": "sync1-toxiproxy"}
    assert [p["port"] for p in service["spec"]["ports"]] == [TOXIPROXY_API_PORT, 21001, 21002]
    assert all(p["port"] == p["targetPort"] for p in service["spec"]["ports"])


def test_the_service_config_is_mounted_where_the_image_reads_it() -> None:
    gateway = _pods()[0]["spec"]
    (container,) = gateway["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    directory, file = SERVICE_CONFIG_PATH.rsplit("/", 1)
    assert mounts["config"] == directory
    (volume,) = [v for v in gateway["volumes"] if v["name"] == "config"]
    assert volume["configMap"]["items"] == [{"key": "gateway.json", "path": file}]
    assert {"name": "state", "emptyDir": {}} in gateway["volumes"]


def test_an_own_service_gets_its_environment_and_no_config() -> None:
    pod = service_pod(OWNER, "sync1", "mine", "me/mine:1", ALIASES, None, Knobs(),
                      {"TESTBED_PORT": "8080"})
    (container,) = pod["spec"]["containers"]
    assert container["env"] == [{"name": "TESTBED_PORT", "value": "8080"}]
    assert "volumes" not in pod["spec"] and "volumeMounts" not in container


def test_resource_knobs_become_limits_without_requests_that_block_scheduling() -> None:
    pod = service_pod(OWNER, "sync1", "gateway", "img", ALIASES, "cfg",
                      Knobs(cpus=0.5, memory_mb=256))
    resources = pod["spec"]["containers"][0]["resources"]
    assert resources["limits"] == {"cpu": "500m", "memory": "256Mi"}
    assert resources["requests"] == {"cpu": "0", "memory": "0"}
    plain = service_pod(OWNER, "sync1", "gateway", "img", ALIASES, "cfg", Knobs())
    assert "resources" not in plain["spec"]["containers"][0]


def test_the_brokers_run_under_their_restart_loop() -> None:
    kafka, broker = _pods()[2], _pods()[3]
    assert kafka["spec"]["containers"][0]["command"] == ["/bin/sh", "-c", KAFKA.script()]
    assert "testbed-kafka" in KAFKA.script() and KAFKA.pid_file in KAFKA.script()
    assert "testbed-rabbitmq" in broker["spec"]["containers"][0]["command"][2]
    env = {e["name"]: e["value"] for e in broker["spec"]["containers"][0]["env"]}
    assert env == {"TESTBED_BROKER_USER": "user", "TESTBED_BROKER_PASSWORD": "secret"}
    assert broker["spec"]["hostname"] == "broker"


def test_the_testbed_service_runs_its_image_command_under_a_loop_and_an_own_image_its_own(
        ) -> None:
    """So kill, stop and pause reach the process and the pod (its ledger, its IP) stays."""
    pod = service_pod(OWNER, "sync1", "gateway", "img", ALIASES, "cfg", Knobs())
    (container,) = pod["spec"]["containers"]
    assert container["command"] == ["/bin/sh", "-c", SERVICE.script()]
    assert shlex.join(SERVICE_COMMAND) in SERVICE.script()
    assert pod["spec"]["shareProcessNamespace"] is True
    own = service_pod(OWNER, "sync1", "gateway", "own:1", ALIASES, None, Knobs(), {})
    assert "command" not in own["spec"]["containers"][0]


def test_the_docker_configs_name_only_aliased_hosts() -> None:
    """What the services and Toxiproxy resolve is what hostAliases provide."""
    sync, async_ = paired()
    for topology in (sync, async_):
        ports = {link.name: 21000 + i for i, link in enumerate(topology.proxied_links)}
        creds = ("vh", "u", "p") if topology.broker is not None else None
        known = {"toxiproxy", "broker", *(s.name for s in topology.services)}
        for spec in topology.services:
            config = json.loads(service_config(topology, spec.name, ports, creds).to_json())
            if config.get("downstream_url"):
                assert config["downstream_url"].split("//")[1].split(":")[0] in known
            if config.get("amqp"):
                assert config["amqp"]["host"] in known


def test_kafka_listeners_name_toxiproxy() -> None:
    topology = async_pipeline(broker="kafka")
    ports = {link.name: 21000 + i for i, link in enumerate(topology.proxied_links)}
    plan = kafka_plan(topology, 21500, ports)
    assert "toxiproxy:" in plan.properties()


def test_forwards_bind_loopback_only() -> None:
    from pathlib import Path

    argv = forward_argv(Path("/k"), "tb-x", "sync1-gateway", {21001: 8080})
    assert argv[:1] == ["kubectl"] and "port-forward" in argv
    assert argv[argv.index("--address") + 1] == "127.0.0.1"
    assert "pod/sync1-gateway" in argv and "21001:8080" in argv
