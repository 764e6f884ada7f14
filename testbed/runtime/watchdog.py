"""A watchdog that cleans up a run when its controller dies, even by SIGKILL.

In the spirit of testcontainers' Ryuk: the controller starts it with a pipe on its
stdin and never writes to it. When the controller exits for any reason the kernel
closes the pipe, the watchdog reads EOF and sweeps the run. It also polls the
controller's pid as a second line of defence. On a clean teardown the controller
closes the pipe itself and the sweep finds nothing left.

Run as: ``python -m testbed.runtime.watchdog RUN_ID``
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
from pathlib import Path

from testbed.runs import RUN_ID_ENV, read_run, run_dir
from testbed.runtime.sweep import sweep_run

POLL_S = 1.0


def spawn(run_id: str, log_path: Path) -> subprocess.Popen[bytes]:
    """Start the watchdog for a run; keep the returned Popen (its stdin is the lifeline)."""
    env = {k: v for k, v in os.environ.items() if k != RUN_ID_ENV}
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "testbed.runtime.watchdog", run_id],
            stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)


def wait_for_controller(run_id: str) -> None:
    """Block until stdin reaches EOF or the controller recorded for the run is gone."""
    record = read_run(run_dir(run_id))
    stdin = sys.stdin.buffer
    while True:
        readable, _, _ = select.select([stdin], [], [], POLL_S)
        if readable and not os.read(stdin.fileno(), 4096):
            return
        if record is not None and not record.controller_alive():
            return


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m testbed.runtime.watchdog RUN_ID", file=sys.stderr)
        return 2
    run_id = argv[0]
    wait_for_controller(run_id)
    report = sweep_run(run_id)
    if not report.empty():
        print(f"watchdog swept run {run_id}: {report}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
