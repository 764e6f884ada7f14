"""A run's controller is known by pid and boot-relative start, and a process the testbed
reaped is never signalled again: both once took a live run's Toxiproxy down in CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.components.process import ManagedProcess
from testbed.runs import RunRecord, process_started


def test_a_live_process_has_a_start_that_does_not_move() -> None:
    first = process_started(os.getpid())
    assert first is not None and first > 0
    assert process_started(os.getpid()) == first
    assert RunRecord("tbself", os.getpid(), first, "local").controller_alive()


def test_another_start_or_a_gone_pid_is_not_the_controller() -> None:
    started = process_started(os.getpid())
    assert started is not None
    assert not RunRecord("tbself", os.getpid(), started - 1.0, "local").controller_alive()
    with subprocess.Popen([sys.executable, "-c", "pass"]) as child:
        child.wait()
    assert process_started(child.pid) is None
    assert not RunRecord("tbgone", child.pid, started, "local").controller_alive()


def test_a_reaped_process_is_not_signalled_again(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """After it exited and was reaped its pid may name another process's group (pids
    wrap at 32768 on these machines): stop() and kill() then send nothing."""
    process = ManagedProcess("short", [sys.executable, "-c", "pass"], "tbtest",
                             tmp_path / "short.log")
    process.start()
    process._proc.wait(10)  # type: ignore[union-attr]
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "killpg", lambda pid, sig: sent.append((pid, sig)))
    process.stop()
    process.kill()
    process.resume()
    assert sent == []


def test_stop_still_sweeps_the_group_of_a_running_process(tmp_path: Path) -> None:
    """The guard does not weaken stop(): a process that ignores SIGTERM's grace and the
    child it forked are both gone afterwards."""
    script = "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"
    process = ManagedProcess("forks", [sys.executable, "-c", script], "tbtest",
                             tmp_path / "forks.log")
    process.start()
    pid = process.pid
    assert pid is not None
    process.stop(grace=1.0)
    assert not process.running()
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
