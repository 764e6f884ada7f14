"""Four controllers at once, ten times, in a port window barely big enough for them: no
port, run id, proxy or process collides, every order goes through, nothing is left.

The fast in-suite form of "the integration tests with -n 4, ten times" (`make soak`
runs that literally): separate processes contend for the same ports through the
reservation files, which is what xdist workers and parallel runs do.
"""

from __future__ import annotations

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

CONTROLLER = """
import json
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
    }))
"""


def one_controller() -> dict[str, object]:
    env = {**os.environ, "TESTBED_PORT_RANGE": f"{WINDOW[0]}-{WINDOW[1]}"}
    done = subprocess.run([sys.executable, "-c", CONTROLLER], capture_output=True, text=True,
                          timeout=120, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    found: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def test_four_controllers_at_once_never_collide() -> None:
    """The rounds run one after another in one test: two xdist workers running rounds at
    the same time would need twice the window."""
    for _ in range(ROUNDS):
        check_round()


def check_round() -> None:
    with ThreadPoolExecutor(CONTROLLERS) as pool:
        runs = list(pool.map(lambda _: one_controller(), range(CONTROLLERS)))
    ports = [p for run in runs for p in run["ports"]]  # type: ignore[attr-defined]
    assert len(ports) == len(set(ports)) == CONTROLLERS * 7, ports
    assert all(WINDOW[0] <= p < WINDOW[1] for p in ports)
    assert len({run["run"] for run in runs}) == CONTROLLERS
    proxies = [p for run in runs for p in run["proxies"]]  # type: ignore[attr-defined]
    assert len(proxies) == len(set(proxies))
    for run in runs:
        assert all(code in (200, 201, 202) for code in run["answers"]), run  # type: ignore[attr-defined]
        assert wait_until_gone(str(run["run"]), timeout=10) == []
