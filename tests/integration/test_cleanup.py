"""Nothing of a run survives its controller: SIGKILL, the watchdog, and `testbed gc`."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import psutil
import pytest

from testbed.runs import tagged_processes

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
