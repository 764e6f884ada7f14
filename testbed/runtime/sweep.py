"""Removing what a run left behind: its tagged processes, port reservations and files.

Shared by the watchdog (one run, right after its controller died) and ``testbed gc``
(every run whose controller is gone). Brokers need no case of their own: RabbitMQ's VM
and epmd, Kafka's JVM and its format tool are found by the run id in their environment
like any other process of the run, and their data lives in the run directory.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field

import psutil

from testbed.ports import release_abandoned_reservations, release_ports, reservations
from testbed.runs import (
    kill_processes,
    known_runs,
    process_run_id,
    remove_abandoned_staging,
    remove_run_dir,
    run_dir,
    state_root,
    tagged_processes,
)


@dataclass
class SweepReport:
    """What a sweep removed, for the gc command's output and for tests."""

    runs: list[str] = field(default_factory=list)
    processes: list[str] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.runs or self.processes or self.ports)


def _log_sweep(run_id: str, processes: list[str]) -> None:
    """Who swept which run, in <state>/sweeps.log: a run that vanished under a live
    controller can then be traced to the sweeper."""
    with contextlib.suppress(OSError), (state_root() / "sweeps.log").open("a") as log:
        log.write(f"{time.strftime('%H:%M:%S')} pid {os.getpid()} "
                  f"({' '.join(psutil.Process().cmdline()[:4])}) swept {run_id}: "
                  f"{', '.join(processes) or 'no processes'}\n")


def sweep_run(run_id: str, report: SweepReport | None = None) -> SweepReport:
    """Kill a run's processes, free its ports, delete its directory."""
    if not run_id:
        raise ValueError("sweep_run needs a run id (an empty one names every run's files)")
    report = report or SweepReport()
    procs = tagged_processes(run_id)
    for proc in procs:
        try:
            report.processes.append(f"{proc.pid} {proc.name()} ({run_id})")
        except Exception:
            report.processes.append(f"{proc.pid} ({run_id})")
    if procs or run_dir(run_id).exists():
        _log_sweep(run_id, report.processes)
    kill_processes(procs)
    held = [port for port, owner in reservations().items() if owner == run_id]
    release_ports(run_id)
    report.ports.extend(held)
    if run_dir(run_id).exists():
        remove_run_dir(run_id)
        report.runs.append(run_id)
    return report


def live_runs() -> set[str]:
    """Runs whose controller process is still alive."""
    return {record.run_id for _, record in known_runs()
            if record is not None and record.controller_alive()}


def collect_garbage() -> SweepReport:
    """Sweep every run whose controller is gone (what ``testbed gc`` does)."""
    report = SweepReport()
    # Candidates first, liveness after: a run that starts while gc looks has its record in
    # place before any of its ports or processes exist (create_run comes first), so it is
    # alive by the time it is judged. The other order swept runs born mid-gc.
    seen = {directory.name for directory, _ in known_runs()}
    seen |= {tag for proc in tagged_processes() if (tag := process_run_id(proc))}
    seen |= set(reservations().values())
    dead = seen - live_runs()
    # A reservation file is empty between its creation and its write: that is no run (as
    # a run id, "" would name the runs directory itself, and sweep every live run's files).
    dead.discard("")
    for run_id in sorted(dead):
        sweep_run(run_id, report)
    report.ports += release_abandoned_reservations()
    report.runs += remove_abandoned_staging()
    return report
