"""The walking-skeleton demo: paired topology up, the same orders through both, audit.

Until the experiment suite exists this is the main job: it shows both shapes process
the same orders end to end and that every service's ledger has each order once.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from testbed.runtime.base import Deployment
from testbed.runtime.local import LocalRuntime
from testbed.topology import paired


@dataclass(frozen=True)
class ServiceTally:
    """What one service processed of the demo's orders."""

    topology: str
    service: str
    processed: int
    duplicates: int
    missing: int


def wait_for_ledgers(deployment: Deployment, orders: list[str], timeout: float) -> None:
    """Async processing lags the 202: wait until every service has seen every order."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(set(orders) <= set(ledger) for ledger in deployment.ledgers().values()):
            return
        time.sleep(0.1)


def tally(deployment: Deployment, orders: list[str]) -> list[ServiceTally]:
    rows = []
    for name, ledger in deployment.ledgers().items():
        mine = {order: ledger.get(order, 0) for order in orders}
        rows.append(ServiceTally(deployment.topology.name, name,
                                 sum(1 for n in mine.values() if n),
                                 sum(n - 1 for n in mine.values() if n > 1),
                                 sum(1 for n in mine.values() if n == 0)))
    return rows


def run_demo(orders: int = 20, depth: int = 3) -> list[ServiceTally]:
    """Bring both shapes up, send each the same orders, and tally every ledger."""
    order_ids = [uuid.uuid4().hex[:12] for _ in range(orders)]
    rows: list[ServiceTally] = []
    with LocalRuntime() as runtime:
        for topology in paired(depth):
            started = time.monotonic()
            deployment = runtime.deploy(topology)
            print(f"{topology.name}: up in {time.monotonic() - started:.1f} s, "
                  f"entry {deployment.entry_url}", flush=True)
            statuses = [deployment.place_order(order).status_code for order in order_ids]
            print(f"{topology.name}: {len(statuses)} orders sent, answers "
                  f"{sorted(set(statuses))}", flush=True)
            wait_for_ledgers(deployment, order_ids, timeout=15)
            rows += tally(deployment, order_ids)
    return rows


def render(rows: list[ServiceTally]) -> str:
    lines = [f"{'topology':8} {'service':14} {'processed':>9} {'duplicates':>10} "
             f"{'missing':>7}"]
    lines += [f"{r.topology:8} {r.service:14} {r.processed:9d} {r.duplicates:10d} "
              f"{r.missing:7d}" for r in rows]
    return "\n".join(lines)
