"""Actions and probes for Chaos Toolkit's python provider, against a running `testbed up`.

    {"type": "action", "name": "cut payments",
     "provider": {"type": "python", "module": "testbed.chaostoolkit",
                  "func": "inject_fault",
                  "arguments": {"topology": "async", "fault": "link_down",
                                "target": "payments-broker"}}}

Every function finds the run by ``run_id``, else $TESTBED_RUN_ID, else the only run that
is up, and goes through its controller (testbed/control/api.py): faults are the
testbed's catalog by name, verified as a trial verifies them; the probes measure with
the testbed's definitions. examples/chaostoolkit/ has a whole experiment.
"""

from __future__ import annotations

from typing import Any

from testbed.control.client import call, find_up

__all__ = ["edge", "edge_error_rate", "edge_latency", "inject_fault", "lost_orders",
           "queue_depth", "remove_all_faults", "remove_fault"]


# -- actions ---------------------------------------------------------------------------

def inject_fault(fault: str, target: str = "", topology: str = "sync",
                 params: dict[str, Any] | None = None, verify: bool = True,
                 run_id: str | None = None) -> dict[str, Any]:
    """Inject a fault of the catalog (latency, link_down, kill, pause, broker_down, ...)
    on a link, service or queue; returns it with its id and what the check saw."""
    return dict(call(find_up(run_id), "POST", "/faults", json={
        "topology": topology, "fault": fault, "target": target, "params": params or {},
        "verify": verify}))


def remove_fault(fault: str, target: str = "", topology: str = "sync",
                 run_id: str | None = None) -> list[dict[str, Any]]:
    """Remove the active faults of that name on that target (a rollback)."""
    return list(call(find_up(run_id), "DELETE", "/faults",
                     params={"topology": topology, "fault": fault, "target": target}))


def remove_all_faults(run_id: str | None = None) -> list[dict[str, Any]]:
    """Remove every fault injected through the controller."""
    state = find_up(run_id)
    return [call(state, "DELETE", f"/faults/{active['id']}")
            for active in call(state, "GET", "/faults")]


# -- probes ----------------------------------------------------------------------------

def edge(topology: str = "sync", rate: float = 20.0, duration_s: float = 2.0,
         timeout_s: float = 5.0, run_id: str | None = None) -> dict[str, Any]:
    """Orders at ``rate`` for ``duration_s``, open loop: errors, error rate and the
    time users waited (p50, p95, max)."""
    return dict(call(find_up(run_id), "POST", "/probes/edge", json={
        "topology": topology, "rate": rate, "duration_s": duration_s,
        "timeout_s": timeout_s}))


def edge_error_rate(topology: str = "sync", rate: float = 20.0, duration_s: float = 2.0,
                    timeout_s: float = 5.0, run_id: str | None = None) -> float:
    """The share of the probe's orders that failed (0 to 1)."""
    return float(edge(topology, rate, duration_s, timeout_s, run_id)["error_rate"])


def edge_latency(topology: str = "sync", rate: float = 20.0, duration_s: float = 2.0,
                 timeout_s: float = 5.0, quantile: str = "p95",
                 run_id: str | None = None) -> float:
    """Seconds users waited: ``p50``, ``p95`` or ``max`` over the probe's orders."""
    if quantile not in ("p50", "p95", "max"):
        raise ValueError(f"quantile {quantile!r}; use p50, p95 or max")
    return float(edge(topology, rate, duration_s, timeout_s, run_id)[f"{quantile}_s"])


def queue_depth(topology: str = "async", queue: str | None = None,
                run_id: str | None = None) -> int:
    """Messages ready in one queue, or in all of the topology's queues."""
    depths = call(find_up(run_id), "GET", "/probes/queues", params={"topology": topology})
    if queue is None:
        return sum(int(v) for k, v in depths.items() if not k.endswith(".dlq"))
    if queue not in depths:
        raise ValueError(f"no queue {queue!r} in {topology}; queues: {sorted(depths)}")
    return int(depths[queue])


def lost_orders(topology: str = "async", wait_s: float = 30.0,
                run_id: str | None = None) -> int:
    """Orders the edge accepted during the probes that the last stage never processed
    (after waiting up to ``wait_s`` for the queues to drain; still queued is not lost)."""
    return int(call(find_up(run_id), "POST", "/probes/lost", json={
        "topology": topology, "wait_s": wait_s})["lost"])
