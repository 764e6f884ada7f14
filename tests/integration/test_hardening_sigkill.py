"""SIGKILL the controller at a random point of a real experiment, then `testbed gc`:
nothing of the run may be left (processes, containers, networks, proxies, vhosts, files).

CONTROLLER runs one short experiment as experiments do (open, deploy, constant load, a
latency fault, drain, close) and prints a marker line as each phase starts (with the
time it did, so where a kill landed is exact). A seeded plan
picks the phase, a delay into it, the topology and whether the watchdog dies too (then
only gc can clean up). Proxies and vhosts live inside the run's Toxiproxy and RabbitMQ
(processes locally, containers on docker), so they are gone when those are. The run gets
a private TMPDIR (the state root stays shared, for gc), so any temp file it made shows.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import psutil
import pytest

from testbed.runs import STATE_ROOT_ENV, new_run_id, process_run_id, state_root

from .conftest import eventually, leftovers, wait_until_gone
from .test_docker_runtime import labelled

CONTROLLER = textwrap.dedent("""
    import sys, time
    from testbed.faults import injected, make_fault
    from testbed.load import LoadGenerator, constant
    from testbed.observe import Sampler
    from testbed.observe.trial import wait_until_drained
    from testbed.runtime import get_runtime
    from testbed.topology import async_pipeline, sync_chain

    def phase(name):  # with the time on the clock every process shares (CLOCK_MONOTONIC)
        print("phase", name, time.monotonic(), flush=True)

    runtime_name, run_id, shape = sys.argv[1:]
    topology, link = ((sync_chain(1), "gateway-orders") if shape == "sync"
                      else (async_pipeline(1), "payments-broker"))
    runtime = get_runtime(runtime_name, run_id=run_id)
    phase("open")
    with runtime:
        phase("deploy")
        deployment = runtime.deploy(topology)
        phase("load")
        load = LoadGenerator(deployment.entry_url, constant(20, 4.0)).start()
        sampler = Sampler(deployment, 0.25, origin=load.start_time).start()
        time.sleep(1.5)
        phase("fault")
        with injected(make_fault(deployment, "latency", link, latency=100)):
            load.wait()
        phase("drain")
        wait_until_drained(deployment, 20.0, 0.1)
        sampler.stop()
        phase("teardown")
    phase("done")
""")

PHASES = ("open", "deploy", "load", "fault", "drain", "teardown")
# The latest a kill may come after its phase began, inside the phase as measured here:
# a local open takes milliseconds, a one-service deploy ~0.5 s, load 2 s, the fault the
# remaining ~2.5 s of load, drain >= 0.5 s (it must settle), a teardown 0.01-0.09 s for a
# local sync chain (hence an async one in LOCAL_SEEDS: ~0.3 s), ~0.6 s on docker.
MAX_DELAY_S = {"open": 0.02, "deploy": 0.4, "load": 1.2, "fault": 1.2, "drain": 0.3,
               "teardown": 0.06}
# Seeds whose plans cover every phase and both cleaners (test_the_seeds_cover... checks).
LOCAL_SEEDS = (2, 4, 7, 12, 5, 24)
DOCKER_SEEDS = (39, 13, 20)
PHASE_TIMEOUT_S = 120.0  # an async deploy boots RabbitMQ: ~10 s, ~25 s on a busy machine
ORPHAN_GRACE_S = 10.0  # untagged children must die by themselves (they notice in 0.1 s;
# a machine loaded with four xdist workers on two cores took over 1 s), or nobody ends them
SWEEP_TIMEOUT_S = 60.0
GC_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class KillPlan:
    """Where one seed kills the controller, on which topology, and who may clean up."""

    seed: int
    phase: str
    delay_s: float
    shape: str
    kill_watchdog: bool


def kill_plan(seed: int) -> KillPlan:
    """Everything random comes from the seed, so a failure replays with its id."""
    rng = random.Random(seed)
    phase = rng.choice(PHASES)
    return KillPlan(seed, phase, rng.uniform(0, 1) * MAX_DELAY_S[phase],
                    rng.choice(("sync", "sync", "async")), rng.random() < 0.5)


class Markers:
    """The controller's stdout, read in a thread: the phase markers, in order. Its stderr
    goes to a file: children inherit stderr, and would hold a pipe open after its death."""

    def __init__(self, proc: subprocess.Popen[str], errors: Path) -> None:
        self.errors = errors
        self.lines: list[str] = []
        self.phases: list[tuple[str, float]] = []  # name, when it began
        self.exited = False
        self._seen = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._seen:
                self.lines.append(line)
                fields = line.split()
                # a SIGKILL can land mid-line: a marker cut short is no phase
                if line.startswith("phase ") and len(fields) == 3 and line.endswith("\n"):
                    self.phases.append((fields[1], float(fields[2])))
                self._seen.notify_all()
        with self._seen:
            self.exited = True
            self._seen.notify_all()

    def output(self) -> str:
        return "".join(self.lines) + self.errors.read_text(errors="replace")

    def began(self, phase: str) -> float | None:
        return next((began for name, began in self.phases if name == phase), None)

    def wait_for(self, phase: str, timeout: float) -> float:
        """Block until the phase began; returns when it did."""
        with self._seen:
            if not self._seen.wait_for(
                    lambda: self.began(phase) is not None or self.exited, timeout):
                raise AssertionError(f"no 'phase {phase}' within {timeout:.0f} s:\n"
                                     + self.output())
            began = self.began(phase)
            if began is None:
                raise AssertionError(f"the controller exited before 'phase {phase}':\n"
                                     + self.output())
            return began

    def landed(self, killed_at: float) -> tuple[str, float]:
        """The phase a kill at ``killed_at`` interrupted, and how far into it (call once the
        controller is dead: all it printed is in the pipe by then)."""
        self.join()
        before = [(name, killed_at - began) for name, began in self.phases
                  if began <= killed_at]
        return before[-1] if before else ("start-up", 0.0)

    def join(self) -> None:
        self._thread.join(10)


def watchdogs(run_id: str) -> list[psutil.Process]:
    """The run's watchdog (untagged by design; named by its command line)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if run_id in cmdline and any(part.startswith("testbed.runtime") for part in cmdline):
            found.append(proc)
    return found


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return list(proc.cmdline())
    except psutil.Error:
        return []


def kill(procs: list[psutil.Process]) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGKILL)


def alive(procs: list[psutil.Process]) -> list[str]:
    """Those still running (a zombie holds nothing and counts as gone)."""
    running = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                running.append(f"pid {proc.pid} {' '.join(proc.cmdline()[:4])}")
    return running


def run_gc() -> str:
    done = subprocess.run([sys.executable, "-m", "testbed.cli", "gc"], capture_output=True,
                          text=True, timeout=GC_TIMEOUT_S, check=True)
    return done.stdout


def leftover_files(directory: Path) -> list[str]:
    return [f"temp file {p}" for p in sorted(directory.rglob("*"))]


@contextlib.contextmanager
def controller(runtime: str, plan: KillPlan, run_id: str,
               tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Markers, Path]]:
    """Start the controller; afterwards kill it if it lives, and gc when the test failed."""
    script, private_tmp, errors = tmp_path / "controller.py", tmp_path / "tmp", tmp_path / "err"
    script.write_text(CONTROLLER)
    private_tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(private_tmp), STATE_ROOT_ENV: str(state_root())}
    with errors.open("w") as stderr, subprocess.Popen(
            [sys.executable, str(script), runtime, run_id, plan.shape], stdout=subprocess.PIPE,
            stderr=stderr, text=True, env=env) as proc:
        markers = Markers(proc, errors)
        passed = False
        try:
            yield proc, markers, private_tmp
            passed = True
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
            markers.join()
            if not passed:
                with contextlib.suppress(Exception):
                    run_gc()


def sigkill_then_gc(runtime: str, seed: int, tmp_path: Path,
                    left_elsewhere: Callable[[str], list[str]] = lambda run_id: []) -> None:
    """Kill the controller where the seed says, let the watchdog or gc clean up, and
    check nothing of the run is left; ``left_elsewhere`` adds the runtime's own objects."""
    plan = kill_plan(seed)
    run_id = new_run_id()
    started = time.monotonic()
    with controller(runtime, plan, run_id, tmp_path) as (proc, markers, private_tmp):
        began = markers.wait_for(plan.phase, PHASE_TIMEOUT_S)
        if plan.kill_watchdog:  # now: the controller never talks to it, and runs on
            kill(watchdogs(run_id))
        time.sleep(max(0.0, began + plan.delay_s - time.monotonic()))
        controller_proc = psutil.Process(proc.pid)
        descendants = controller_proc.children(recursive=True)
        guards = watchdogs(run_id)
        if plan.kill_watchdog:
            kill(guards)  # one spawned meanwhile (in open)
        # Untagged children (a load engine, say): neither the watchdog nor gc can find
        # them. A child not exec'd yet still shows the controller's command line: skip it.
        untagged = [p for p in descendants if p not in guards
                    and process_run_id(p) != run_id and _cmdline(p) != _cmdline(controller_proc)]
        killed_at = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        phase, into = markers.landed(killed_at)
        landed = f"{phase} (+{into:.2f} s)"
        if plan.kill_watchdog:
            cleaner = "gc alone (watchdog killed)"
        else:
            cleaner = "watchdog, then gc" if guards else "gc alone (no watchdog yet)"
        print(f"\n[{runtime} seed {seed}] {plan.shape}: planned {plan.phase} "
              f"+{plan.delay_s:.2f} s, landed in {landed}; cleaner: {cleaner}")

        assert eventually(lambda: not alive(untagged), ORPHAN_GRACE_S), (
            f"children of the controller that nothing can sweep outlived it "
            f"(landed in {landed}): {alive(untagged)}")
        if guards and not plan.kill_watchdog:
            left = wait_until_gone(run_id, SWEEP_TIMEOUT_S)
            assert left == [], f"the watchdog did not sweep (landed in {landed}): {left}"
            assert eventually(lambda: not left_elsewhere(run_id), SWEEP_TIMEOUT_S), (
                f"the watchdog did not sweep (landed in {landed}): {left_elsewhere(run_id)}")
            print(f"  watchdog swept in {time.monotonic() - killed_at:.1f} s")
        before_gc = leftovers(run_id) + left_elsewhere(run_id)
        gc_started = time.monotonic()
        collected = run_gc()
        print(f"  gc in {time.monotonic() - gc_started:.1f} s; it found "
              f"{len(before_gc)} object(s) of the run: {before_gc[:6]}")
        if guards and not plan.kill_watchdog:
            assert run_id not in collected, f"gc found what the watchdog left:\n{collected}"
        def left_over() -> list[str]:
            return (leftovers(run_id) + left_elsewhere(run_id) + leftover_files(private_tmp)
                    + alive(guards))

        # A watchdog that swept exits a moment later (seconds on a loaded machine).
        assert eventually(lambda: not left_over(), 10.0), (
            f"left after gc (landed in {landed}): {left_over()}")
        assert eventually(lambda: not alive(descendants), 5.0), (
            f"processes of the run outlived gc (landed in {landed}): {alive(descendants)}")
        print(f"  total {time.monotonic() - started:.1f} s")


def test_the_seeds_cover_every_phase_and_both_cleaners() -> None:
    """The seeds were picked for coverage; a changed plan must not lose it silently."""
    plans = [kill_plan(seed) for seed in LOCAL_SEEDS]
    assert {p.phase for p in plans} == set(PHASES)
    assert {p.kill_watchdog for p in plans} == {True, False}
    assert "async" in {p.shape for p in plans}
    docker_plans = [kill_plan(seed) for seed in DOCKER_SEEDS]
    assert {"deploy", "teardown"} <= {p.phase for p in docker_plans}
    assert {p.kill_watchdog for p in docker_plans} == {True, False}


@pytest.mark.local_only
@pytest.mark.parametrize("seed", LOCAL_SEEDS, ids=lambda s: f"seed{s}")
def test_local_run_killed_anywhere_leaves_nothing_after_gc(seed: int, tmp_path: Path) -> None:
    sigkill_then_gc("local", seed, tmp_path)


@pytest.mark.docker
@pytest.mark.parametrize("seed", DOCKER_SEEDS, ids=lambda s: f"seed{s}")
def test_docker_run_killed_anywhere_leaves_nothing_after_gc(
        seed: int, tmp_path: Path, docker_client: docker.DockerClient) -> None:
    sigkill_then_gc("docker", seed, tmp_path,
                    lambda run_id: labelled(docker_client, run_id))
