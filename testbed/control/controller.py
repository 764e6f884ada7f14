"""The running `testbed up` as other tools drive it: faults by name, and probes.

Faults are the catalog's (testbed.faults.catalog), injected and verified exactly as a
trial does; the controller removes whatever is still active when it tears down. The
probes measure with the testbed's own definitions: the edge probe is a bounded open-loop
load (testbed.load), the queue depth is the sampler's "ready", and the lost count is the
ledger audit of the orders the probes placed against the last stage's ledger.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from testbed.analysis.metrics import ledger_audit
from testbed.errors import TestbedError
from testbed.faults.base import Fault, FaultSpecError, inject_and_verify
from testbed.faults.catalog import make_fault
from testbed.faults.timeline import Timeline
from testbed.load import LoadGenerator
from testbed.load.profile import constant
from testbed.observe.dead_letters import dead_letters
from testbed.observe.sampler import ready_now
from testbed.observe.trial import queues_drained
from testbed.runtime.base import Deployment

MAX_PROBE_RATE = 200.0  # orders/s: a probe measures, it is not a load test
MAX_PROBE_S = 60.0
MAX_WAIT_S = 120.0


class ControlError(TestbedError):
    """A request the controller cannot carry out (names what is wrong and what is known)."""


@dataclass(frozen=True)
class ActiveFault:
    id: str
    topology: str
    fault: str
    target: str
    description: str
    verified: str


@dataclass(frozen=True)
class EdgeProbe:
    """A short burst of orders at the edge: what users saw."""

    topology: str
    orders: int
    ok: int
    errors: int
    error_rate: float
    p50_s: float  # of the time each user waited for an answer (from its scheduled send)
    p95_s: float
    max_s: float


@dataclass(frozen=True)
class LostProbe:
    """The audit of every order the probes placed on one topology."""

    topology: str
    accepted: int
    processed: int
    lost: int
    duplicated: int
    dead_lettered: int
    still_queued: int
    drained: bool


def _percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else math.nan


class Controller:
    """Owns nothing it did not inject: the deployments belong to the `up` command."""

    def __init__(self, deployments: dict[str, Deployment]) -> None:
        self.deployments = deployments
        self._faults: dict[str, tuple[ActiveFault, Fault]] = {}
        self._accepted: dict[str, set[str]] = {name: set() for name in deployments}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def deployment(self, topology: str) -> Deployment:
        if topology not in self.deployments:
            raise ControlError(f"no topology {topology!r} is up; up: "
                               f"{', '.join(sorted(self.deployments))}")
        return self.deployments[topology]

    # -- faults ---------------------------------------------------------------------------

    def inject(self, topology: str, fault: str, target: str, params: dict[str, Any],
               verify: bool = True) -> ActiveFault:
        """Build the fault by name, inject it, check its effect (undone if none)."""
        built = make_fault(self.deployment(topology), fault, target, **params)
        timeline = Timeline()
        inject_and_verify(built, timeline, verify)  # undone if it shows no effect
        checks = timeline.of_kind("verify")
        observed = checks[0].detail if checks else "not verified"
        with self._lock:
            fault_id = f"f{next(self._ids)}"
            active = ActiveFault(fault_id, topology, fault, target, built.describe(), observed)
            self._faults[fault_id] = (active, built)
        return active

    def active(self) -> list[ActiveFault]:
        with self._lock:
            return [active for active, _ in self._faults.values()]

    def remove(self, fault_id: str) -> ActiveFault:
        with self._lock:
            if fault_id not in self._faults:
                raise ControlError(f"no active fault {fault_id!r}; active: "
                                   f"{', '.join(sorted(self._faults)) or 'none'}")
            active, built = self._faults.pop(fault_id)
        built.remove()
        built.active = False
        return active

    def remove_matching(self, topology: str, fault: str, target: str) -> list[ActiveFault]:
        """Remove the active faults of that name on that target (a rollback that only
        knows what it injected, not the id it got)."""
        ids = [a.id for a in self.active() if (a.topology, a.fault, a.target)
               == (topology, fault, target)]
        return [self.remove(fault_id) for fault_id in ids]

    def remove_all(self) -> list[str]:
        """Every active fault, removed; what could not be removed, described."""
        problems = []
        for active in self.active():
            try:
                self.remove(active.id)
            except Exception as exc:  # the teardown goes on; the run's down removes all
                problems.append(f"{active.description}: {exc}")
        return problems

    # -- probes ---------------------------------------------------------------------------

    def edge(self, topology: str, rate: float = 20.0, duration_s: float = 2.0,
             timeout_s: float = 5.0) -> EdgeProbe:
        """Orders at ``rate`` for ``duration_s`` through the entry, open loop."""
        for what, value, top in (("rate", rate, MAX_PROBE_RATE),
                                 ("duration_s", duration_s, MAX_PROBE_S),
                                 ("timeout_s", timeout_s, MAX_PROBE_S)):
            if not isinstance(value, int | float) or not 0 < value <= top:
                raise FaultSpecError(f"edge probe {what}={value!r}; give a number in "
                                     f"(0, {top:g}]")
        deployment = self.deployment(topology)
        prefix = f"probe{next(self._ids)}"
        requests = LoadGenerator(deployment.entry_url, constant(rate, duration_s), topology,
                                 timeout_s=timeout_s, order_prefix=prefix).run()
        ok = requests["ok"].astype(bool)
        with self._lock:
            self._accepted[topology].update(requests.loc[ok, "order_id"])
        waits = requests["waited_s"].dropna().to_numpy()
        return EdgeProbe(topology, len(requests), int(ok.sum()), int((~ok).sum()),
                         float((~ok).mean()) if len(ok) else math.nan,
                         _percentile(waits, 50), _percentile(waits, 95),
                         float(waits.max()) if len(waits) else math.nan)

    def queues(self, topology: str) -> dict[str, int]:
        return ready_now(self.deployment(topology))

    def lost(self, topology: str, wait_s: float = 30.0) -> LostProbe:
        """Wait (up to ``wait_s``) for the queues to drain, then audit the probes' orders:
        what is still queued is not counted lost."""
        if not isinstance(wait_s, int | float) or not 0 <= wait_s <= MAX_WAIT_S:
            raise FaultSpecError(f"lost probe wait_s={wait_s!r}; give 0 to {MAX_WAIT_S:g}")
        deployment = self.deployment(topology)
        sink = deployment.topology.services[-1].name
        if sink in deployment.unaudited:
            raise ControlError(f"{sink} is your own service and offers no /ledger: only "
                               "edge metrics are available for it")
        deadline = time.monotonic() + wait_s
        drained = queues_drained(deployment)
        while not drained and time.monotonic() < deadline:
            time.sleep(0.25)
            drained = queues_drained(deployment)
        queued = 0 if drained else sum(ready_now(deployment).values())
        dead = {order for ledger in dead_letters(deployment).values() for order in ledger}
        with self._lock:
            accepted = set(self._accepted[topology])
        audit = ledger_audit(accepted, deployment.ledger(sink), dead, queued)
        return LostProbe(topology, audit.accepted, audit.processed, audit.lost,
                         audit.duplicated, audit.dead_lettered, queued, drained)
