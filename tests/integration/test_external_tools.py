"""The ecosystem's tools against `testbed up`, as a user would point them: the real Chaos
Toolkit (`chaos run` of examples/chaostoolkit/), Toxiproxy's own CLI and vegeta, through
the addresses `up` and `status --json` give."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from testbed.components.tools import TOXIPROXY_CLI, VEGETA
from testbed.ports import allocate_port, release_ports
from testbed.runs import new_run_id
from tests.integration.conftest import wait_until_gone

# A whole paired `up` (its own broker and Toxiproxy) driven by `chaos run` and vegeta for
# a minute: load like a Kafka JVM's, so in the heavy session, not beside the timing tests.
pytestmark = [pytest.mark.local_only, pytest.mark.heavy]
EXAMPLES = Path(__file__).parents[2] / "examples" / "chaostoolkit"
CHAOS = Path(sys.executable).with_name("chaos")
PORTS_OWNER = "test-external-tools"


def cli(*argv: str, timeout: float = 180,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "testbed.cli", *argv], capture_output=True,
                          text=True, timeout=timeout, check=check)


def status() -> list[dict[str, Any]]:
    return list(json.loads(cli("status", "--json").stdout))


@pytest.fixture(scope="module")
def up() -> Iterator[dict[str, Any]]:
    """A paired topology brought up by the CLI with its two API ports fixed, as a user
    who writes them into another tool's config would."""
    toxiproxy_port, control_port = allocate_port(PORTS_OWNER), allocate_port(PORTS_OWNER)
    release_ports(PORTS_OWNER)  # free again: `up` claims them by number
    started = cli("up", "--detach", "--depth", "2", "--toxiproxy-port",
                      str(toxiproxy_port), "--control-port", str(control_port), "--json")
    state = json.loads(started.stdout[:started.stdout.rindex("}") + 1])
    try:
        yield state
    finally:
        cli("down", state["run_id"], check=False)
        assert wait_until_gone(state["run_id"], timeout=15) == []
        assert not Path(state["log"]).exists(), "up --detach left its log behind"


def test_up_and_status_give_every_address_with_stable_proxy_names(
        up: dict[str, Any]) -> None:
    [found] = [s for s in status() if s["state"]["run_id"] == up["run_id"]]
    state = found["state"]
    assert state == up
    assert requests.get(state["toxiproxy_url"] + "/version", timeout=5).ok
    sync, async_ = state["topologies"]["sync"], state["topologies"]["async"]
    assert [p["name"] for p in sync["proxies"]] == ["sync.gateway-orders",
                                                    "sync.orders-payments"]
    assert [p["name"] for p in async_["proxies"]] == [
        "async.gateway-broker", "async.payments-broker", "async.inventory-broker"]
    listed = requests.get(state["toxiproxy_url"] + "/proxies", timeout=5).json()
    for proxy in sync["proxies"] + async_["proxies"]:
        assert listed[proxy["name"]]["listen"] == proxy["listen"]
        assert listed[proxy["name"]]["upstream"] == proxy["upstream"]
    order = requests.post(sync["orders_url"], json={"order_id": "external-1"}, timeout=10)
    assert order.status_code == 200, order.text
    broker = async_["broker"]
    assert broker["amqp_url"].startswith("amqp://") and broker["queues"] == [
        "payments", "inventory"]
    overview = requests.get(broker["management_url"] + "/api/overview", timeout=10,
                            auth=tuple(broker["amqp_url"][7:].split("@")[0].split(":")))
    assert overview.ok, overview.text
    assert found["faults"] == [] and found["foreign_toxics"] == []


def test_a_toxic_added_with_toxiproxy_cli_is_listed_as_not_the_testbeds(
        up: dict[str, Any]) -> None:
    toxi = [TOXIPROXY_CLI.require(), "-h", up["toxiproxy_url"].removeprefix("http://")]
    subprocess.run([*toxi, "toxic", "add", "-t", "latency", "-a", "latency=250", "-n",
                    "left-behind", "sync.orders-payments"], check=True, timeout=30,
                   capture_output=True)
    try:
        [found] = [s for s in status() if s["state"]["run_id"] == up["run_id"]]
        assert [(t["proxy"], t["name"], t["type"], t["attributes"]["latency"])
                for t in found["foreign_toxics"]] == [
            ("sync.orders-payments", "left-behind", "latency", 250)]
        text = cli("status").stdout
        assert "NOT THE TESTBED'S: toxic 'left-behind'" in text
        waited = requests.post(up["topologies"]["sync"]["orders_url"],
                               json={"order_id": "slow-1"}, timeout=10).elapsed
        assert waited.total_seconds() >= 0.25  # the toxic is real: the chain waits on it
    finally:
        subprocess.run([*toxi, "toxic", "remove", "-n", "left-behind", "sync.orders-payments"],
                       check=True, timeout=30, capture_output=True)
    [found] = [s for s in status() if s["state"]["run_id"] == up["run_id"]]
    assert found["foreign_toxics"] == []


def test_vegeta_attacks_the_printed_orders_url(up: dict[str, Any], tmp_path: Path) -> None:
    body = tmp_path / "order.json"
    body.write_text('{"order_id": "vegeta"}')
    target = f"POST {up['topologies']['sync']['orders_url']}\nContent-Type: application/json\n"
    attack = subprocess.run([VEGETA.require(), "attack", "-rate", "20/s", "-duration", "2s",
                             "-body", str(body), "-timeout", "5s"], input=target.encode(),
                            capture_output=True, timeout=60, check=True)
    report = subprocess.run([VEGETA.require(), "report", "-type", "json"], input=attack.stdout,
                            capture_output=True, timeout=30, check=True)
    metrics = json.loads(report.stdout)
    assert metrics["requests"] == 40
    assert metrics["status_codes"] == {"200": 40}


def chaos_run(experiment: str, journal: Path, env_run: str) -> dict[str, Any]:
    subprocess.run([str(CHAOS), "--no-version-check", "--log-file", str(journal) + ".log",
                    "run", "--journal-path", str(journal), str(EXAMPLES / experiment)],
                   timeout=300, capture_output=True, check=False, cwd=journal.parent,
                   env={**os.environ, "TESTBED_RUN_ID": env_run})
    return dict(json.loads(journal.read_text()))


def test_chaos_toolkit_runs_the_async_outage_and_its_rollback_leaves_no_fault(
        up: dict[str, Any], tmp_path: Path) -> None:
    journal = chaos_run("async-payments-outage.json", tmp_path / "journal.json", up["run_id"])
    assert journal["status"] == "completed" and not journal["deviated"], journal
    assert journal["steady_states"]["before"]["steady_state_met"]
    assert journal["steady_states"]["after"]["steady_state_met"]
    runs = {r["activity"]["name"]: r for r in journal["run"]}
    assert runs["cut-payments-off-the-broker"]["status"] == "succeeded"
    assert runs["orders-during-the-outage"]["output"]["errors"] == 0
    # 60 orders went in while payments was cut off: all of them waited in its queue
    assert runs["payments-backlog"]["output"] == 60
    assert [r["status"] for r in journal["rollbacks"]] == ["succeeded"]
    [found] = [s for s in status() if s["state"]["run_id"] == up["run_id"]]
    assert found["faults"] == [] and found["disabled_proxies"] == []


def test_chaos_toolkit_finds_the_sync_chain_deviating_and_rolls_the_latency_back(
        up: dict[str, Any], tmp_path: Path) -> None:
    journal = chaos_run("sync-payments-latency.json", tmp_path / "journal.json", up["run_id"])
    # Chaos Toolkit's journal: the run completed, and its steady state deviated
    assert journal["status"] == "completed" and journal["deviated"], journal
    assert journal["steady_states"]["before"]["steady_state_met"]
    after = journal["steady_states"]["after"]
    assert not after["steady_state_met"]
    assert after["probes"][0]["output"] >= 1.5  # every user waited out the 1.5 s toxic
    assert [r["status"] for r in journal["rollbacks"]] == ["succeeded"]
    toxics = requests.get(up["toxiproxy_url"] + "/proxies/sync.orders-payments/toxics",
                          timeout=5).json()
    assert toxics == []


def test_a_fixed_toxiproxy_port_in_use_is_refused_and_leaves_nothing(
        up: dict[str, Any]) -> None:
    port = up["toxiproxy_url"].rsplit(":", 1)[1]
    run_id = new_run_id()
    done = cli("up", "--shape", "sync", "--depth", "1", "--toxiproxy-port", port,
                   "--duration", "1", "--run-id", run_id, check=False)
    assert done.returncode == 1, done.stdout
    assert f"port {port} on 127.0.0.1 (asked for by the Toxiproxy API (--toxiproxy-port)) " \
        "is already in use" in done.stderr
    assert wait_until_gone(run_id, timeout=10) == []


def test_the_controller_refuses_what_it_cannot_do_by_name(up: dict[str, Any]) -> None:
    control = up["control_url"]
    unknown = requests.post(control + "/faults", json={"topology": "sync", "fault": "flood",
                                                       "target": "orders-payments"}, timeout=10)
    assert unknown.status_code == 400 and "unknown fault 'flood'" in unknown.json()["error"]
    nowhere = requests.post(control + "/faults", json={"topology": "mesh", "fault": "latency",
                                                       "target": "a-b"}, timeout=10)
    assert nowhere.status_code == 400
    assert "no topology 'mesh' is up; up: async, sync" in nowhere.json()["error"]
    flood = requests.post(control + "/probes/edge", json={"topology": "sync", "rate": 5000},
                          timeout=10)
    assert flood.status_code == 400 and "rate=5000" in flood.json()["error"]
    assert requests.get(control + "/faults", timeout=10).json() == []
