"""Nothing of a run survives its controller: SIGKILL, the watchdog, and `testbed gc`."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from testbed.ports import ports_dir
from testbed.runs import state_root, tagged_processes
from testbed.runtime.sweep import collect_garbage

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


def test_down_tears_down_a_detached_up() -> None:
    up = subprocess.run([sys.executable, "-m", "testbed.cli", "up", "--shape", "sync",
                         "--depth", "1", "--detach"],
                        capture_output=True, text=True, timeout=120, check=True)
    run_id = up.stdout.split()[1]
    assert "curl -s -X POST" in up.stdout
    assert tagged_processes(run_id)
    down = subprocess.run([sys.executable, "-m", "testbed.cli", "down", run_id],
                          capture_output=True, text=True, timeout=120, check=True)
    assert f"run {run_id} is down" in down.stdout
    assert wait_until_gone(run_id, timeout=10) == []


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
