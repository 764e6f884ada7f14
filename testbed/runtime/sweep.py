"""Removing what a run left behind: its tagged processes, port reservations and files.

Shared by the watchdog (one run, right after its controller died), ``testbed gc``
(every run whose controller is gone), and ``gc --check`` and ``testbed status``, which
only look (``remove=False``: the same finding, nothing removed). Brokers need no case
of their own: RabbitMQ's VM and epmd, Kafka's JVM and its format tool are found by the
run id in their environment like any other process of the run, and their data lives in
the run directory.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from testbed.ports import release_abandoned_reservations, release_ports, reservations
from testbed.runs import (
    kill_processes,
    known_runs,
    process_run_id,
    read_run,
    remove_abandoned_staging,
    remove_run_dir,
    run_dir,
    state_root,
    tagged_processes,
)


@dataclass
class SweepReport:
    """What a sweep removed (or, dry, would remove), for the gc command's output and for
    tests."""

    runs: list[str] = field(default_factory=list)
    processes: list[str] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.runs or self.processes or self.ports)


@dataclass(frozen=True)
class DeadRun:
    """A run whose controller is gone, and what of it is still there: what `testbed
    status` shows, so a leak is seen before `testbed gc` removes it."""

    run_id: str
    controller_pid: int | None  # None: no run record left to name it
    processes: tuple[str, ...]  # "<pid> <name>"
    directory: Path | None
    ports: tuple[int, ...]
    docker: tuple[str, ...]  # "container <name>", "network <name>", "volume <name>"
    k8s: tuple[str, ...] = ()  # "namespace <name>" on the configured cluster


def _log_sweep(run_id: str, processes: list[str]) -> None:
    """Who swept which run, in <state>/sweeps.log: a run that vanished under a live
    controller can then be traced to the sweeper."""
    with contextlib.suppress(OSError), (state_root() / "sweeps.log").open("a") as log:
        log.write(f"{time.strftime('%H:%M:%S')} pid {os.getpid()} "
                  f"({' '.join(psutil.Process().cmdline()[:4])}) swept {run_id}: "
                  f"{', '.join(processes) or 'no processes'}\n")


def _describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.pid} {proc.name()}"
    except psutil.Error:
        return str(proc.pid)


def sweep_run(run_id: str, report: SweepReport | None = None,
              remove: bool = True) -> SweepReport:
    """Kill a run's processes, free its ports, delete its directory. With
    ``remove=False`` only report what that would remove."""
    if not run_id:
        raise ValueError("sweep_run needs a run id (an empty one names every run's files)")
    report = report or SweepReport()
    procs = tagged_processes(run_id)
    report.processes += [f"{_describe(proc)} ({run_id})" for proc in procs]
    held = [port for port, owner in reservations().items() if owner == run_id]
    report.ports.extend(held)
    if not remove:
        if run_dir(run_id).exists():
            report.runs.append(run_id)
        return report
    if procs or run_dir(run_id).exists():
        _log_sweep(run_id, report.processes)
    kill_processes(procs)
    release_ports(run_id)
    if run_dir(run_id).exists():
        remove_run_dir(run_id)
        report.runs.append(run_id)
    return report


def live_runs() -> set[str]:
    """Runs whose controller process is still alive."""
    return {record.run_id for _, record in known_runs()
            if record is not None and record.controller_alive()}


def dead_run_ids() -> list[str]:
    """Runs something of which is left (directory, tagged process, port reservation)
    while their controller is gone."""
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
    return sorted(dead)


def collect_garbage(remove: bool = True) -> SweepReport:
    """Sweep every run whose controller is gone (what ``testbed gc`` does); with
    ``remove=False`` report what it would sweep and touch nothing (``gc --check``)."""
    report = SweepReport()
    for run_id in dead_run_ids():
        sweep_run(run_id, report, remove)
    report.ports += release_abandoned_reservations(remove=remove)
    report.runs += remove_abandoned_staging(remove=remove)
    return report


def dead_runs(docker_objects: dict[str, list[str]] | None = None,
              k8s_objects: dict[str, list[str]] | None = None) -> list[DeadRun]:
    """Every run whose controller is dead, with what it left; ``docker_objects`` (run id
    -> labelled objects of dead controllers) adds the engine's side, ``k8s_objects`` the
    cluster's (namespaces), and runs only they still hold."""
    docker_objects = docker_objects or {}
    k8s_objects = k8s_objects or {}
    found = []
    for run_id in sorted(set(dead_run_ids()) | set(docker_objects) | set(k8s_objects)):
        left = sweep_run(run_id, remove=False)
        directory = run_dir(run_id)
        record = read_run(directory) if directory.exists() else None
        processes = tuple(p.removesuffix(f" ({run_id})") for p in left.processes)
        if not (processes or left.runs or left.ports or docker_objects.get(run_id)
                or k8s_objects.get(run_id)):
            continue  # gone between the two looks
        found.append(DeadRun(run_id, record.controller_pid if record else None, processes,
                             directory if left.runs else None, tuple(left.ports),
                             tuple(docker_objects.get(run_id, ())),
                             tuple(k8s_objects.get(run_id, ()))))
    return found


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def render_dead_run(run: DeadRun) -> str:
    """What `testbed status` prints for a dead run: one line saying what is left, then
    the details (pids and names, the directory, the ports, the docker objects)."""
    controller = (f"controller (pid {run.controller_pid}) is dead"
                  if run.controller_pid is not None
                  else "controller is gone (no run record names it)")
    left = [_count(len(run.processes), "process", "processes")] if run.processes else []
    if run.directory is not None:
        left.append("its run directory")
    if run.ports:
        left.append(_count(len(run.ports), "port reservation", "port reservations"))
    kinds: dict[str, int] = {}
    for item in run.docker:
        kind = item.split()[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    left += [_count(n, f"docker {kind}", f"docker {kind}s") for kind, n in kinds.items()]
    if run.k8s:
        left.append(_count(len(run.k8s), "k8s namespace", "k8s namespaces"))
    lines = [f"run {run.run_id}: {controller}; left: {', '.join(left)}; "
             "`testbed gc` removes them"]
    if run.processes:
        lines.append(f"  processes    {', '.join(run.processes)}")
    if run.directory is not None:
        lines.append(f"  directory    {run.directory}")
    if run.ports:
        lines.append(f"  ports        {', '.join(map(str, run.ports))}")
    if run.docker:
        lines.append(f"  docker       {', '.join(run.docker)}")
    if run.k8s:
        lines.append(f"  k8s          {', '.join(run.k8s)}")
    return "\n".join(lines)
