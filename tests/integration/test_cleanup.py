"""Nothing of a run survives its controller: SIGKILL, the watchdog, and `testbed gc`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from testbed.cli import main
from testbed.ports import ports_dir
from testbed.runs import STATE_ROOT_ENV, run_dir, state_root, tagged_processes
from testbed.runtime.sweep import collect_garbage, dead_runs

from .conftest import leftovers, process_names, wait_until_gone

pytestmark = pytest.mark.local_only


@contextlib.contextmanager
def controller(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Run `testbed up` as a separate controller; yield it once it says it is up."""
    with subprocess.Popen([sys.executable, "-m", "testbed.cli", "up", *args],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        try:
            lines = []
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                line = proc.stdout.readline()
                lines.append(line)
                if line.startswith("run ") and " is up " in line:
                    yield proc, line.split()[1]
                    return
                if not line and proc.poll() is not None:
                    break
            raise AssertionError("testbed up did not come up:\n" + "".join(lines))
        finally:
            if proc.poll() is None:
                proc.kill()


def test_sigkill_of_the_controller_leaves_nothing_running() -> None:
    with controller("--shape", "paired") as (proc, run_id):
        names = process_names(run_id)
        assert {"beam.smp", "toxiproxy-server", "epmd"} <= names
        assert len(tagged_processes(run_id)) >= 11  # 8 services + broker + epmd + toxiproxy
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        killed_at = time.monotonic()
        assert wait_until_gone(run_id, timeout=15) == []
        print(f"run swept {time.monotonic() - killed_at:.1f} s after SIGKILL")


def test_gc_cleans_up_when_even_the_watchdog_was_killed() -> None:
    with controller("--shape", "sync", "--depth", "1") as (proc, run_id):
        watchdogs = [p for p in psutil.process_iter(["cmdline"])
                     if p.info["cmdline"] and "testbed.runtime.watchdog" in p.info["cmdline"]
                     and run_id in p.info["cmdline"]]
        assert len(watchdogs) == 1
        os.kill(watchdogs[0].pid, signal.SIGKILL)
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        time.sleep(1)
        assert leftovers(run_id) != []  # nobody cleaned up: this is gc's job now
        done = subprocess.run([sys.executable, "-m", "testbed.cli", "gc"],
                              capture_output=True, text=True, timeout=60, check=True)
        assert run_id in done.stdout
        assert leftovers(run_id) == []


def private_tmp(tmp_path: Path) -> dict[str, str]:
    """A private TMPDIR (where `up --detach` once left its log), the state root shared."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    return {**os.environ, "TMPDIR": str(tmp), STATE_ROOT_ENV: str(state_root())}


def test_down_tears_down_a_detached_up_and_its_log(tmp_path: Path) -> None:
    env = private_tmp(tmp_path)
    up = subprocess.run([sys.executable, "-m", "testbed.cli", "up", "--shape", "sync",
                         "--depth", "1", "--detach"],
                        capture_output=True, text=True, timeout=180, check=True, env=env)
    run_id = up.stdout.split()[1]
    assert "curl -s -X POST" in up.stdout
    assert f"waiting for run {run_id} to come up" in up.stderr  # what it waited for
    assert tagged_processes(run_id)
    log = Path(up.stdout.split("(log ")[1].split(")")[0])
    assert log.parent.parent == run_dir(run_id), "the log lives in the run's directory"
    assert f"run {run_id} is up" in log.read_text()  # the child's output, renamed in
    assert not (run_dir(run_id).parent / f".up-{run_id}.log").exists()
    down = subprocess.run([sys.executable, "-m", "testbed.cli", "down", run_id],
                          capture_output=True, text=True, timeout=120, check=True, env=env)
    assert f"run {run_id} is down" in down.stdout
    assert wait_until_gone(run_id, timeout=10) == []
    assert not run_dir(run_id).exists() and not log.exists()
    assert list(Path(env["TMPDIR"]).glob("testbed-up-*")) == []


def test_a_failed_detached_up_prints_what_it_said_and_leaves_no_log(tmp_path: Path) -> None:
    env = private_tmp(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        up = subprocess.run([sys.executable, "-m", "testbed.cli", "up", "--shape", "sync",
                             "--depth", "1", "--port", f"sync.gateway={port}", "--detach"],
                            capture_output=True, text=True, timeout=180, env=env)
    assert up.returncode == 1, up.stdout + up.stderr
    assert f"port {port} on 127.0.0.1" in up.stderr  # the child's own error, printed
    assert "before it was up" in up.stderr
    run_id = up.stderr.split("waiting for run ")[1].split()[0]
    assert not (run_dir(run_id).parent / f".up-{run_id}.log").exists()
    assert wait_until_gone(run_id, timeout=10) == []
    assert list(Path(env["TMPDIR"]).glob("testbed-up-*")) == []


def test_gc_drops_what_a_controller_killed_mid_step_left(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A reservation file created but not yet written, a run directory made but not yet
    renamed into place: gc removes them once they are stale, and never a fresh one (the
    owner may be between the two steps right now)."""
    monkeypatch.setenv("TESTBED_HOME", str(tmp_path))
    old = time.time() - 60
    stale_port, fresh_port = ports_dir() / "31990", ports_dir() / "31991"
    stale_port.touch()
    fresh_port.touch()
    os.utime(stale_port, (old, old))
    stale_run = state_root() / "runs" / ".new-tbdead0000000"
    fresh_run = state_root() / "runs" / ".new-tbbusy0000000"
    for directory in (stale_run, fresh_run):
        directory.mkdir(parents=True)
    os.utime(stale_run, (old, old))
    report = collect_garbage()
    assert report.ports == [31990] and report.runs == ["tbdead0000000"]
    assert fresh_port.exists() and fresh_run.exists()
    assert not stale_port.exists() and not stale_run.exists()


def test_gc_check_and_status_name_a_dead_run_and_remove_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A run whose controller is dead, with a process, its directory and a port left:
    `status` and `gc --check` name them all and touch nothing; `gc` removes them."""
    monkeypatch.setenv("TESTBED_HOME", str(tmp_path))
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")  # no engine: not others' objects
    run_id = "tbdead0000001"
    run_dir(run_id).mkdir(parents=True)
    (run_dir(run_id) / "run.json").write_text(json.dumps(
        {"run_id": run_id, "controller_pid": 999999999, "controller_started": 1.0,
         "runtime": "local"}))
    (ports_dir() / "31992").write_text(run_id)
    env = {**os.environ, "TESTBED_RUN_ID": run_id, "TESTBED_STATE_ROOT": str(state_root())}
    with subprocess.Popen(["sleep", "60"], env=env) as left:
        try:
            [dead] = dead_runs()
            assert (dead.run_id, dead.controller_pid, dead.ports) == (run_id, 999999999,
                                                                      (31992,))
            assert dead.processes == (f"{left.pid} sleep",) and dead.directory == run_dir(run_id)
            assert main(["status"]) == 0
            said = capsys.readouterr().out
            assert "nothing is up" not in said
            assert (f"run {run_id}: controller (pid 999999999) is dead; left: 1 process, its "
                    "run directory, 1 port reservation; `testbed gc` removes them") in said
            assert f"{left.pid} sleep" in said and "31992" in said
            assert main(["gc", "--check"]) == 1
            said = capsys.readouterr().out
            assert f"would kill process {left.pid} sleep ({run_id})" in said
            assert f"would remove run directory {run_id}" in said
            assert left.poll() is None and run_dir(run_id).exists()  # nothing removed
            assert (ports_dir() / "31992").exists()
            assert main(["gc"]) == 0
            assert f"killed process {left.pid}" in capsys.readouterr().out
            assert leftovers(run_id) == [] and left.wait(5) is not None
            assert main(["gc", "--check"]) == 0
            assert "nothing to collect" in capsys.readouterr().out
            assert main(["status"]) == 0
            assert capsys.readouterr().out.strip() == "nothing is up"
        finally:
            left.kill()
