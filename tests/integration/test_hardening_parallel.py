"""Four controllers at once, ten times, in a port window barely big enough for them: no
port, run id, proxy or process collides, every order goes through, nothing is left.

The fast in-suite form of "the integration tests with -n 4, ten times" (`make soak`
runs that literally): separate processes contend for the same ports through the
reservation files, which is what xdist workers and parallel runs do.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from .conftest import wait_until_gone

pytestmark = pytest.mark.local_only

CONTROLLERS, ROUNDS = 4, 10
# 4 controllers x (1 Toxiproxy API + 2 deployments x (2 services + 1 proxy)) = 28 ports.
WINDOW = (31000, 31040)

# Each controller reports what it holds, then keeps it until told to go on, so all four
# hold their ports at the same moment: a port in two reports is a true collision, not a
# port one run released and the next took.
CONTROLLER = """
import json, sys
from testbed.ports import reservations
from testbed.runtime.local import LocalRuntime
from testbed.topology import sync_chain

with LocalRuntime() as runtime:
    deployments = [runtime.deploy(sync_chain(1)) for _ in range(2)]
    answers = [d.place_order().status_code for d in deployments]
    print(json.dumps({
        "run": runtime.run_id,
        "ports": sorted(p for p, owner in reservations().items() if owner == runtime.run_id),
        "proxies": sorted(e.proxy_name for d in deployments for e in d.proxies.values()),
        "answers": answers,
    }), flush=True)
    sys.stdin.readline()
"""


def start_controller() -> subprocess.Popen[str]:
    env = {**os.environ, "TESTBED_PORT_RANGE": f"{WINDOW[0]}-{WINDOW[1]}"}
    return subprocess.Popen([sys.executable, "-c", CONTROLLER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def report_of(proc: subprocess.Popen[str]) -> dict[str, object]:
    """The controller's report line, once it is up and holding everything."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(10)
        raise AssertionError(f"controller exited {proc.returncode}: "
                             f"{proc.stderr.read()[-3000:] if proc.stderr else ''}")
    found: dict[str, object] = json.loads(line)
    return found


def test_four_controllers_at_once_never_collide() -> None:
    """The rounds run one after another in one test: two xdist workers running rounds at
    the same time would need twice the window."""
    for _ in range(ROUNDS):
        check_round()


def check_round() -> None:
    procs = [start_controller() for _ in range(CONTROLLERS)]
    pool = ThreadPoolExecutor(CONTROLLERS)
    try:
        runs = list(pool.map(report_of, procs, timeout=120))
        check_reports(runs)
    finally:  # let them go (or kill them when stuck), then the readers end too
        for proc in procs:
            with contextlib.suppress(OSError, ValueError, subprocess.TimeoutExpired):
                proc.communicate("go\n", timeout=60)
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        pool.shutdown(wait=True)
    assert all(proc.returncode == 0 for proc in procs)
    for run in runs:
        assert wait_until_gone(str(run["run"]), timeout=10) == []


def check_reports(runs: list[dict[str, object]]) -> None:
    ports = [p for run in runs for p in run["ports"]]  # type: ignore[attr-defined]
    assert len(ports) == len(set(ports)) == CONTROLLERS * 7, ports
    assert all(WINDOW[0] <= p < WINDOW[1] for p in ports)
    assert len({run["run"] for run in runs}) == CONTROLLERS
    for run in runs:  # each run has a Toxiproxy of its own: names are unique within it
        proxies = run["proxies"]
        assert len(proxies) == len(set(proxies)), proxies  # type: ignore[arg-type]
        assert proxies == ["sync.gateway-orders", "sync2.gateway-orders"], proxies
    for run in runs:
        assert all(code in (200, 201, 202) for code in run["answers"]), run  # type: ignore[attr-defined]
