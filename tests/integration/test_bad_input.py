"""Bad input gets a clear error naming the problem and the fix, and leaves nothing behind."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from testbed import runs
from testbed.errors import MissingBinaryError, PortInUseError, TopologyError
from testbed.faults import FaultSpecError, make_fault
from testbed.runtime import Runtime
from testbed.runtime.local import LocalRuntime
from testbed.topology import Knobs, async_pipeline, sync_chain

from .conftest import leftovers

pytestmark = pytest.mark.local_only


def test_missing_toxiproxy_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TESTBED_TOXIPROXY_SERVER", "/nonexistent/toxiproxy-server")
    runtime = LocalRuntime()
    with runtime, pytest.raises(MissingBinaryError) as info:
        runtime.deploy(sync_chain(1))
    assert "toxiproxy-server not found" in str(info.value)
    assert "testbed setup" in str(info.value)
    assert leftovers(runtime.run_id) == []


def test_missing_rabbitmq_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TESTBED_RABBITMQ_SERVER", "/nonexistent/rabbitmq-server")
    runtime = LocalRuntime()
    with runtime, pytest.raises(MissingBinaryError, match=r"rabbitmq-server not found.*apt-get"):
        runtime.deploy(async_pipeline(1))
    assert leftovers(runtime.run_id) == []


def test_fixed_port_already_in_use() -> None:
    topology = sync_chain(2)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        services = tuple(replace(s, port=port) if s.name == "payments" else s
                         for s in topology.services)
        runtime = LocalRuntime()
        with runtime, pytest.raises(PortInUseError) as info:
            runtime.deploy(replace(topology, services=services))
        assert f"port {port}" in str(info.value)
        assert "service sync.payments" in str(info.value)
        assert "Fix:" in str(info.value)
    assert leftovers(runtime.run_id) == []


def test_failed_service_start_undoes_the_partial_deploy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A service that dies on start: the error carries its log; proxies and processes go."""
    runtime = LocalRuntime()
    with runtime:
        monkeypatch.setattr(sys, "executable", "/bin/false")  # every service exits at once
        with pytest.raises(Exception, match="exited with code 1"):
            runtime.deploy(sync_chain(1))
        monkeypatch.undo()
        assert runtime.toxiproxy().client.proxies() == {}
        assert not [p for p in leftovers(runtime.run_id) if "false" in p]
    assert leftovers(runtime.run_id) == []


def test_doctor_names_what_is_missing_and_how_to_install_it() -> None:
    env = {"PATH": "/nonexistent", "TESTBED_TOXIPROXY_SERVER": "/nonexistent/t",
           "HOME": "/tmp"}
    done = subprocess.run([sys.executable, "-m", "testbed.cli", "doctor"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert "MISSING  toxiproxy-server" in done.stdout
    assert "go install github.com/Shopify/toxiproxy/v2/cmd/server@v2.12.0" in done.stdout
    assert "testbed setup" in done.stderr


def test_doctor_passes_here() -> None:
    done = subprocess.run([sys.executable, "-m", "testbed.cli", "doctor"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok       rabbitmq-server" in done.stdout


def test_container_knobs_and_partition_are_refused_by_the_local_runtime(
        testbed_runtime: Runtime) -> None:
    """CPU/memory limits and partitions need containers: a clear error, nothing started."""
    limited = sync_chain(1, overrides={"orders": Knobs(cpus=0.5)})
    with pytest.raises(TopologyError, match=r"cpus/memory_mb.*--runtime docker"):
        testbed_runtime.deploy(limited)
    with testbed_runtime.deploy(sync_chain(1)) as chain, \
            pytest.raises(FaultSpecError, match="partition of orders: the local runtime"):
        make_fault(chain, "partition", "orders")


BAD_SCENARIO = """
[topology]
shape = "paired"
depth = 2
[load]
rate = 10
duration = 3
[[faults]]
kind = "unreachable"
service = "emails"
at = 1.0
duration = 1.0
[[hypotheses]]
topology = "sync"
metric = "edge_errors"
predicted = 10
check = "within"
rel = 0.2
"""


def test_a_bad_scenario_file_is_refused_before_anything_starts(tmp_path: Path) -> None:
    """`testbed run` and pytest name the file, the field and the fix; nothing started."""
    folder = tmp_path / "scenarios"
    folder.mkdir()
    bad = folder / "bad.toml"
    bad.write_text(BAD_SCENARIO)
    # a state root of its own: the other workers' runs must not count as this one's
    home = tmp_path / "state"
    env = {**os.environ, runs.STATE_ROOT_ENV: str(home)}
    done = subprocess.run([sys.executable, "-m", "testbed.cli", "run", str(bad),
                           "--report-dir", str(tmp_path / "reports")],
                          capture_output=True, text=True, timeout=120, check=False, env=env)
    assert done.returncode != 0
    assert "bad.toml: field 'faults[0]'" in done.stderr, done.stderr
    assert "no service 'emails'" in done.stderr and "Fix:" in done.stderr
    collected = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                                "--collect-only", "-q", str(bad), "--rootdir", str(tmp_path)],
                               capture_output=True, text=True, timeout=120, check=False,
                               cwd=tmp_path, env=env)
    assert collected.returncode != 0
    assert "field 'faults[0]'" in collected.stdout + collected.stderr
    assert not (home / "runs").exists() or not any((home / "runs").iterdir()), \
        "a run was started"
    assert not (tmp_path / "reports" / "runs").exists()
