"""A child process the testbed owns: tagged, logged, signalled as a process group.

Each one starts in its own session (so Ctrl-C at the terminal reaches only the
controller, which then tears down in order) and carries TESTBED_RUN_ID in its
environment so the watchdog and ``testbed gc`` can find it without the controller.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from testbed.errors import ComponentError, StateError
from testbed.runs import process_tags


def tail(path: Path, lines: int = 25) -> str:
    """The last lines of a log file, for error messages."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 16384))
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class ManagedProcess:
    """Start, signal and stop one tagged child process (and its children)."""

    def __init__(self, name: str, argv: Sequence[str], run_id: str, log_path: Path,
                 env: Mapping[str, str] | None = None, cwd: Path | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.run_id = run_id
        self.log_path = log_path
        self.extra_env = dict(env or {})
        self.cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        if self.running():
            raise StateError(f"{self.name} is already running (pid {self.pid})")
        env = {**os.environ, **self.extra_env, **process_tags(self.run_id)}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            try:
                self._proc = subprocess.Popen(
                    self.argv, stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, env=env, cwd=self.cwd,
                    start_new_session=True)
            except OSError as exc:
                raise ComponentError(f"cannot start {self.name} ({self.argv[0]}): {exc}") from exc
        self.paused = False

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def exit_code(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def signal_group(self, sig: int) -> None:
        """Send a signal to the whole process group (the child and whatever it forked),
        while its leader is not yet reaped: after that its pid may name another
        process's group (pids wrap at 32768 here), and a stale signal killed it."""
        if self._proc is None or self._proc.returncode is not None:
            return
        self._killpg(sig)

    def _killpg(self, sig: int) -> None:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    def pause(self) -> None:
        if not self.running():
            raise StateError(f"cannot pause {self.name}: it is not running")
        self.signal_group(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self.signal_group(signal.SIGCONT)
        self.paused = False

    def kill(self) -> None:
        """SIGKILL, no grace: the crash a fault wants to simulate."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self.signal_group(signal.SIGKILL)
        if self._wait(10.0):
            self._killpg(signal.SIGKILL)  # at once: what the leader forked
        self.paused = False

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; the group is gone afterwards."""
        if self._proc is None or self._proc.poll() is not None:
            return  # gone already (a kill, a crash): its group was swept or is gone
        if self.paused:
            self.signal_group(signal.SIGCONT)
        self.signal_group(signal.SIGTERM)
        if not self._wait(grace):
            self.signal_group(signal.SIGKILL)
            self._wait(10.0)
        # Grandchildren (e.g. erl_child_setup) may outlive the leader; sweep the group
        # at once, before its pid can be handed out again.
        self._killpg(signal.SIGKILL)
        self.paused = False

    def _wait(self, timeout: float) -> bool:
        assert self._proc is not None
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def log_tail(self, lines: int = 25) -> str:
        return tail(self.log_path, lines)
