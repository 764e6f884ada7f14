"""Benchmark: the flagship suite's wall time, serial vs two workers, and the controller's
memory peak while it runs.

Runs `testbed run` (the flagship experiments, local runtime, reports included) twice in
one go, with -n 1 and -n 2, each into a report folder of its own. A sampler walks the
suite's process tree every 0.2 s and keeps the largest resident set of a controller
process (pytest and its xdist workers; not the services, RabbitMQ or Toxiproxy they
start). The memory baseline is a Python process that has imported the controller's
libraries and nothing else, measured in the same run.

    .venv/bin/python benchmarks/bench_suite.py
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from figures import Figure

ROOT = Path(__file__).resolve().parents[1]
NOT_CONTROLLER = ("testbed.services", "testbed.runtime.watchdog", "testbed.runtime.docker")


def is_controller(proc: psutil.Process) -> bool:
    try:
        command = " ".join(proc.cmdline())
    except psutil.Error:
        return False
    return "python" in proc.name() and not any(m in command for m in NOT_CONTROLLER)


def peak_rss(root: psutil.Process, stop: threading.Event, found: list[float]) -> None:
    """Largest RSS of any controller process in root's tree until stop (MiB)."""
    peak = 0.0
    while not stop.wait(0.2):
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for proc in procs:
            if is_controller(proc):
                with contextlib.suppress(psutil.Error):
                    peak = max(peak, proc.memory_info().rss / 2**20)
    found.append(peak)


def timed_suite(workers: int) -> tuple[float, float, int]:
    """(wall seconds, controller peak MiB, exit status) of one flagship run."""
    with tempfile.TemporaryDirectory(prefix="bench-suite-") as reports:
        argv = [sys.executable, "-m", "testbed.cli", "run", "-n", str(workers),
                "--report-dir", reports]
        started = time.monotonic()
        proc = psutil.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
        stop, found = threading.Event(), []
        sampler = threading.Thread(target=peak_rss, args=(proc, stop, found))
        sampler.start()
        status = proc.wait(timeout=1800)
        seconds = time.monotonic() - started
        stop.set()
        sampler.join()
    return seconds, found[0], status


def import_baseline() -> float:
    """RSS (MiB) of a Python process with the controller's libraries imported."""
    code = ("import resource, testbed.pytest_plugin, testbed.report.suite_report; "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    return int(out.split()[-1]) / 1024


def measure() -> list[Figure]:
    baseline = import_baseline()
    serial_s, serial_peak, serial_status = timed_suite(1)
    parallel_s, parallel_peak, parallel_status = timed_suite(2)
    print(f"flagship suite: serial {serial_s:.0f} s (exit {serial_status}), -n 2 "
          f"{parallel_s:.0f} s (exit {parallel_status}); speed-up {serial_s / parallel_s:.2f}x")
    print(f"controller peak RSS: serial {serial_peak:.0f} MiB, -n 2 {parallel_peak:.0f} MiB "
          f"per process; libraries alone {baseline:.0f} MiB")
    verdicts = "" if serial_status == parallel_status == 0 else " (a verdict FAILED)"
    return [Figure("suite", "flagship suite wall time, -n 2 (reports included)", parallel_s,
                   "s", "the same suite serial (-n 1)", serial_s, "speed-up = 1 / ratio"
                   + verdicts),
            Figure("memory", "controller peak RSS, largest process, flagship -n 2",
                   parallel_peak, "MiB", "Python with the controller's imports only", baseline,
                   f"serial run: {serial_peak:.0f} MiB")]


def main() -> None:
    measure()


if __name__ == "__main__":
    main()
