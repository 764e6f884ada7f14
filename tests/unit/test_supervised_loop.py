"""The pods' supervising loop (manifests.Supervised), run by a real /bin/sh here: a
signalled command ends and stays down until the word, then starts again in the same
place, as a stopped container's process does under ``docker start``."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testbed.runtime.k8s.manifests import Supervised

TIMEOUT_S = 5.0


def _sh(argv: list[str]) -> int:
    return subprocess.run(argv, capture_output=True, timeout=TIMEOUT_S).returncode


def _until(check: Callable[[], bool], timeout: float = TIMEOUT_S) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[tuple[Supervised, Path]]:
    """A loop around a command that counts its starts in a file, ended after the test."""
    starts = tmp_path / "starts"
    supervised = Supervised(f"sh -c 'echo x >> {starts}; exec sleep 30'",
                            f"unit-{uuid.uuid4().hex[:8]}")
    shell = subprocess.Popen(["/bin/sh", "-c", supervised.script()],
                             start_new_session=True)
    try:
        yield supervised, starts
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, 9)
        shell.wait(TIMEOUT_S)
        for leftover in (supervised.pid_file, supervised.go_file):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)


def _started(starts: Path) -> int:
    return len(starts.read_text().splitlines()) if starts.exists() else 0


def test_a_killed_command_stays_down_until_the_word_and_then_starts_again(
        loop: tuple[Supervised, Path]) -> None:
    supervised, starts = loop
    assert _until(lambda: _started(starts) == 1 and _sh(supervised.alive()) == 0)
    assert _sh(supervised.signal("KILL")) == 0
    assert _until(lambda: _sh(supervised.alive()) != 0)
    time.sleep(0.3)  # the loop waits: no start of its own
    assert _started(starts) == 1
    assert _sh(supervised.resume()) == 0
    assert _until(lambda: _started(starts) == 2 and _sh(supervised.alive()) == 0)


def test_a_frozen_command_is_alive_and_thaws(loop: tuple[Supervised, Path]) -> None:
    supervised, starts = loop
    assert _until(lambda: _sh(supervised.alive()) == 0)
    pid = int(Path(supervised.pid_file).read_text())
    assert _sh(supervised.signal("STOP")) == 0
    assert _until(lambda: Path(f"/proc/{pid}/stat").read_text().split()[2] == "T")
    assert _sh(supervised.alive()) == 0
    assert _sh(supervised.signal("CONT")) == 0
    assert _until(lambda: Path(f"/proc/{pid}/stat").read_text().split()[2] != "T")
    assert _started(starts) == 1
