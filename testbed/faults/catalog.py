"""Building faults by name, as a fault spec in a file or on a command line would say it.

Everything is checked before anything is touched: an unknown name, an unknown target
or an impossible parameter raises FaultSpecError naming what is wrong and what is known.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from testbed.faults.application import ErrorRate, FailFirst, RouteError
from testbed.faults.base import Fault, FaultSpecError
from testbed.faults.broker import (
    BrokerDown,
    ConsumerStall,
    MemberLeave,
    MemoryAlarm,
    PoisonMessage,
    QueuePurge,
    Replay,
)
from testbed.faults.container import Partition
from testbed.faults.network import TOXICS, LinkDown, ToxicFault
from testbed.faults.process import (
    CrashAt,
    CrashLoop,
    KillService,
    PauseService,
    RestartService,
)
from testbed.runtime.base import Deployment

NETWORK = (*TOXICS, "link_down")
PROCESS: dict[str, Callable[..., Fault]] = {
    "kill": KillService, "pause": PauseService, "restart": RestartService,
    "crash_loop": CrashLoop, "crash_at": CrashAt, "partition": Partition}
BROKER: dict[str, Callable[..., Fault]] = {
    "broker_down": BrokerDown, "memory_alarm": MemoryAlarm, "poison": PoisonMessage,
    "purge": QueuePurge, "consumer_stall": ConsumerStall, "replay": Replay,
    "member_leave": MemberLeave}
APPLICATION: dict[str, Callable[..., Fault]] = {
    "error_rate": ErrorRate, "fail_first": FailFirst, "route_error": RouteError}
FAULTS = (*NETWORK, "amqp_link_cut", *PROCESS, *BROKER, *APPLICATION)
# Faults switched or checked inside the testbed's own services (their /admin and /stats
# routes): a user's own service has none of them.
NEEDS_TESTBED_SERVICE = (*APPLICATION, "crash_at", "consumer_stall", "member_leave",
                         "poison")


# Faults Kubernetes has no means for, refused by name before a run starts.
NOT_ON_K8S = {
    "partition": "a pod has no network of its own to cut it off; use link_down on its links, "
                 "or the docker runtime",
}


def own_names(deployment: Deployment) -> set[str]:
    return {s.name for s in deployment.topology.own_services}


def _refuse_own(deployment: Deployment, name: str, target: str) -> None:
    if name in NEEDS_TESTBED_SERVICE and target in own_names(deployment):
        raise FaultSpecError(
            f"{name}: {target} is your own service, and {name} works through the testbed "
            "services' /admin and /stats routes; use a network fault (latency, link_down, "
            "...), a process fault (kill, pause, restart, crash_loop) or broker_down on it")


def make_fault(deployment: Deployment, name: str, target: str, **params: Any) -> Fault:
    """A fault by name. Targets: a link for network faults; a service for process and
    application faults; a queue for poison and purge; "" for broker_down, memory_alarm."""
    if not isinstance(name, str):
        raise FaultSpecError(f"fault name {name!r} is not text; known: {', '.join(FAULTS)}")
    if not isinstance(target, str):
        raise FaultSpecError(f"{name}: target {target!r} is not text; give a link, service "
                             "or queue name (or '' for the whole broker)")
    _refuse_own(deployment, name, target)
    if deployment.runtime == "k8s" and name in NOT_ON_K8S:
        raise FaultSpecError(f"{name} is not available on the k8s runtime: {NOT_ON_K8S[name]}")
    if deployment.runtime == "k8s" and name == "pause" and target in own_names(deployment):
        raise FaultSpecError(f"pause: {target} is your own service, and on the k8s runtime "
                             "only the testbed's services can be frozen (Kubernetes has no "
                             "freeze for a pod); use kill, stop or restart")
    if name in TOXICS:
        stream = params.pop("stream", "downstream")
        toxicity = params.pop("toxicity", 1.0)
        return ToxicFault(deployment, target, name, params, stream, toxicity)
    if name == "link_down":
        _no_params(name, params)
        return LinkDown(deployment, target)
    if name == "amqp_link_cut":
        _no_params(name, params)
        if not target.endswith("-broker"):
            raise FaultSpecError(f"amqp_link_cut needs an AMQP link like 'payments-broker', "
                                 f"got {target!r}")
        return LinkDown(deployment, target)
    if name in PROCESS:
        if name not in ("crash_loop", "crash_at", "partition"):
            _no_params(name, params)
        return _build(name, PROCESS[name], deployment, target, params)
    if name in BROKER:
        if name in ("broker_down", "memory_alarm"):
            if target:
                raise FaultSpecError(f"{name} acts on the whole broker; give target ''")
            return _build(name, BROKER[name], deployment, None, params)
        return _build(name, BROKER[name], deployment, target, params)
    if name in APPLICATION:
        return _build(name, APPLICATION[name], deployment, target, params)
    raise FaultSpecError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")


def _build(name: str, factory: Callable[..., Fault], deployment: Deployment,
           target: str | None, params: dict[str, Any]) -> Fault:
    args = (deployment,) if target is None else (deployment, target)
    try:
        return factory(*args, **params)
    except TypeError as exc:
        raise FaultSpecError(f"{name}: impossible parameters {sorted(params)} ({exc})") from exc


def _no_params(name: str, params: dict[str, Any]) -> None:
    if params:
        raise FaultSpecError(f"{name} takes no parameters, got {sorted(params)}")
