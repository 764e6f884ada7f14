"""Run identity: every run has an id, a directory, and tags on all it starts.

A run is one controller's lifetime (a pytest worker, a ``testbed up``). Everything
it starts carries the run id, so the watchdog and ``testbed gc`` can find and remove
it even when the controller is gone:

- processes get the environment variable ``TESTBED_RUN_ID``;
- files live under ``<state root>/runs/<run id>/`` with a ``run.json`` naming the
  controller (pid and start time, so a recycled pid is not mistaken for it; the start
  time counts from boot, so a step of the wall clock does not make a live controller
  look like another process).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

RUN_ID_ENV = "TESTBED_RUN_ID"
# Beside the run id, the state root the run lives in: `testbed gc` with another
# TESTBED_HOME (a test, a second user) must not take this root's live runs for dead.
STATE_ROOT_TAG = "TESTBED_STATE_ROOT"
STATE_ROOT_ENV = "TESTBED_HOME"
RUN_RECORD = "run.json"


def state_root() -> Path:
    """Where runs keep their files; TESTBED_HOME overrides the default temp location."""
    root = os.environ.get(STATE_ROOT_ENV) or os.path.join(tempfile.gettempdir(), "testbed-state")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def new_run_id() -> str:
    """A short id that is safe in process env, file names, vhosts and docker labels."""
    return "tb" + secrets.token_hex(5)


def process_started(pid: int) -> float | None:
    """When a process started, in seconds since boot, or None when it is gone. Read from
    /proc (the kernel's tick count): psutil's create_time adds the boot time, which
    moves when the wall clock is stepped (a VM resumed, NTP), and a live controller
    then looked dead to its watchdog, which swept the run under it."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        if Path("/proc/self/stat").exists():
            return None
        try:  # no /proc (not Linux): the wall-clock figure is all there is
            return float(psutil.Process(pid).create_time())
        except psutil.Error:
            return None


@dataclass(frozen=True)
class RunRecord:
    """Who owns a run: the controller process, identified by pid and start time."""

    run_id: str
    controller_pid: int
    controller_started: float  # process_started() of the controller
    runtime: str

    def controller_alive(self) -> bool:
        """True while the exact controller process (not a recycled pid) still runs."""
        started = process_started(self.controller_pid)
        if started is None or abs(started - self.controller_started) > 0.05:
            return False
        try:
            return psutil.Process(self.controller_pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False


def run_dir(run_id: str) -> Path:
    return state_root() / "runs" / run_id


def create_run(run_id: str, runtime: str) -> Path:
    """Make the run directory and record this process as its controller. The directory
    appears with its record in it (made aside, then renamed), so `testbed gc` never sees
    a run without its controller and takes it for dead."""
    directory = run_dir(run_id)
    staging = directory.with_name(f".new-{run_id}")
    staging.mkdir(parents=True, exist_ok=False)
    me = os.getpid()
    record = RunRecord(run_id, me, process_started(me) or 0.0, runtime)
    (staging / RUN_RECORD).write_text(json.dumps(asdict(record)))
    try:
        staging.rename(directory)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def read_run(directory: Path) -> RunRecord | None:
    try:
        return RunRecord(**json.loads((directory / RUN_RECORD).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def known_runs() -> Iterator[tuple[Path, RunRecord | None]]:
    runs = state_root() / "runs"
    if not runs.is_dir():
        return
    for directory in sorted(runs.iterdir()):
        if directory.is_dir() and not directory.name.startswith("."):  # not a run yet
            yield directory, read_run(directory)


def process_tags(run_id: str) -> dict[str, str]:
    """The environment every process of a run carries, so gc and the watchdog find it."""
    return {RUN_ID_ENV: run_id, STATE_ROOT_TAG: str(state_root())}


def tagged_processes(run_id: str | None = None) -> list[psutil.Process]:
    """Processes of this state root's runs (of one run, or of any run when None)."""
    found = []
    me, root = os.getpid(), str(state_root())
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == me:
            continue
        try:
            env = proc.environ()
        except psutil.Error:
            continue
        tag = env.get(RUN_ID_ENV)
        if tag and env.get(STATE_ROOT_TAG) == root and (run_id is None or tag == run_id):
            found.append(proc)
    return found


def process_run_id(proc: psutil.Process) -> str | None:
    """The run a process belongs to, if it is one of this state root's."""
    try:
        env = proc.environ()
    except psutil.Error:
        return None
    return env.get(RUN_ID_ENV) if env.get(STATE_ROOT_TAG) == str(state_root()) else None


def kill_processes(procs: list[psutil.Process], timeout: float = 5.0) -> None:
    """SIGKILL the given processes and wait for them to be gone (reaped or reparented)."""
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(procs, timeout=timeout)


def remove_abandoned_staging(min_age_s: float = 10.0, remove: bool = True) -> list[str]:
    """Drop run directories still being made (``.new-<id>``) after ``min_age_s``: their
    controller died before it could rename them into place. With ``remove=False`` only
    name them (`testbed gc --check`)."""
    runs = state_root() / "runs"
    removed = []
    for staging in runs.glob(".new-*") if runs.is_dir() else []:
        with contextlib.suppress(OSError):
            if time.time() - staging.stat().st_mtime > min_age_s:
                if remove:
                    shutil.rmtree(staging, ignore_errors=True)
                removed.append(staging.name.removeprefix(".new-"))
    return removed


def remove_run_dir(run_id: str) -> None:
    shutil.rmtree(run_dir(run_id), ignore_errors=True)
