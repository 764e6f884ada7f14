"""Faults addressed by the service they hurt, resolved per shape to a link or a process.

"payments is unreachable" means the orders -> payments hop in the sync chain, and
payments' own AMQP link in the async pipeline; "payments is 400 ms slower" likewise. An
experiment (or a scenario file) says what happens to which service, once, and each
shape gets the fault that means that for it:

    hurt = [unreachable("payments", at=2, duration=3)]
    plan = resolve(hurt, deployment)          # -> [Planned(LinkDown(... link ...))]

Network faults (link_down, latency, timeout, bandwidth, ...) go on the links INTO the
service in a sync chain (its callers wait on it), and on the service's own broker link
in an async pipeline (its deliveries and publishes cross it). Process, application and
queue faults go to the service itself (a queue fault to the queue it consumes). Whole
broker faults (broker_down, memory_alarm) take no service. A fault that means nothing
for a shape (a poison message in an HTTP chain) is an error naming the fault and shape.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from testbed.faults import FAULTS, FaultSpecError, Planned, make_fault
from testbed.faults.catalog import BROKER, NETWORK
from testbed.runtime.base import Deployment
from testbed.topology import Topology

ALIASES = {"unreachable": "link_down", "slower": "latency"}  # how people say it
WHOLE_BROKER = ("broker_down", "memory_alarm")
ASYNC_ONLY = (*BROKER, "amqp_link_cut")
KINDS = tuple(sorted({*FAULTS, *ALIASES}))


@dataclass(frozen=True)
class ServiceFault:
    """One fault on one service (or the broker), at a time, for a duration."""

    kind: str  # a fault name from testbed.faults.FAULTS, or "unreachable" / "slower"
    service: str  # the service it hurts; "" for broker_down and memory_alarm
    at: float = 0.0
    duration: float | None = None  # None: a one-off (poison), or until the load ends
    params: dict[str, Any] = field(default_factory=dict)
    link: str | None = None  # an explicit link, overriding the per-shape resolution
    only: str | None = None  # "sync" or "async": this shape only (None: every shape)

    def __post_init__(self) -> None:
        if self.only not in (None, "sync", "async"):
            raise FaultSpecError(f"{self.kind}: only={self.only!r}; give 'sync' or 'async' "
                                 "(or leave it out for both)")
        if self.kind not in KINDS:
            raise FaultSpecError(f"unknown fault {self.kind!r}; known: {', '.join(KINDS)}")
        if self.fault_name in WHOLE_BROKER and self.service:
            raise FaultSpecError(f"{self.kind} acts on the whole broker: leave the service "
                                 f"out (got {self.service!r})")
        if self.fault_name not in WHOLE_BROKER and not (self.service or self.link):
            raise FaultSpecError(f"{self.kind}: name the service it hurts")

    @property
    def fault_name(self) -> str:
        return ALIASES.get(self.kind, self.kind)

    def describe(self) -> str:
        what = self.kind.replace("_", " ")
        if self.kind == "slower":
            what = f"{self.params.get('latency', '?')} ms slower"
        subject = self.service or self.link or "the broker"
        when = f"at {self.at:g} s" + (f" for {self.duration:g} s" if self.duration else "")
        return f"{subject} {what} {when}"

    def applies_to(self, topology: Topology) -> bool:
        if self.only is not None and topology.shape != self.only:
            return False
        return not (topology.shape == "sync" and self.fault_name in ASYNC_ONLY)

    def targets(self, topology: Topology) -> list[str]:
        """What make_fault aims at in this topology: links, the service, or ""."""
        name = self.fault_name
        if topology.shape == "sync" and name in ASYNC_ONLY:
            raise FaultSpecError(f"{self.kind} on {self.service or 'the broker'}: a sync "
                                 f"chain has no broker or queue ({topology.name!r}); put "
                                 "it on the async topology only")
        if name in WHOLE_BROKER:
            return [""]
        if self.service and self.service not in {s.name for s in topology.services}:
            known = ", ".join(s.name for s in topology.services)
            raise FaultSpecError(f"{self.kind}: no service {self.service!r} in "
                                 f"{topology.name!r}; its services: {known}")
        if name not in NETWORK:
            return [self.service]
        if self.link is not None:
            if self.link not in {link.name for link in topology.proxied_links}:
                known = ", ".join(link.name for link in topology.proxied_links)
                raise FaultSpecError(f"{self.kind}: no proxied link {self.link!r} in "
                                     f"{topology.name!r}; its links: {known}")
            return [self.link]
        return links_hurting(topology, self.service, self.kind)

    def planned(self, deployment: Deployment) -> list[Planned]:
        return [Planned(make_fault(deployment, self.fault_name, target, **dict(self.params)),
                        at=self.at, duration=self.duration)
                for target in self.targets(deployment.topology)]


def links_hurting(topology: Topology, service: str, kind: str = "fault") -> list[str]:
    """The proxied links a network fault on ``service`` goes on, in this shape: the
    callers' hops into it (sync), or its own broker link (async)."""
    if topology.shape == "sync":
        found = [link.name for link in topology.proxied_links
                 if link.target == service and link.protocol == "http"]
        where = "no proxied link leads to it (the load generator calls the entry directly)"
    else:
        found = [link.name for link in topology.proxied_links
                 if link.source == service and link.protocol != "http"]
        where = "it has no proxied broker link"
    if not found:
        raise FaultSpecError(f"{kind} on {service!r} in {topology.name!r}: {where}; hurt "
                             "another service or name a link")
    return found


def resolve(faults: Iterable[ServiceFault], deployment: Deployment) -> list[Planned]:
    """The fault plan for one deployment; faults that mean nothing for its shape are an
    error (filter with ``applies_to`` for faults meant for one shape only)."""
    return [planned for fault in faults for planned in fault.planned(deployment)]


def unreachable(service: str, at: float, duration: float | None) -> ServiceFault:
    """The service cannot be reached (its link is down) for ``duration`` seconds."""
    return ServiceFault("unreachable", service, at, duration)


def slower(service: str, ms: float, at: float, duration: float | None,
           jitter_ms: float = 0.0) -> ServiceFault:
    """Everything to and from the service takes ``ms`` longer (Toxiproxy latency)."""
    params: dict[str, Any] = {"latency": ms}
    if jitter_ms:
        params["jitter"] = jitter_ms
    return ServiceFault("slower", service, at, duration, params)


def fault(kind: str, service: str = "", at: float = 0.0, duration: float | None = None,
          link: str | None = None, **params: Any) -> ServiceFault:
    """Any fault of the catalog by name, e.g. ``fault("poison", "payments", at=2)``."""
    return ServiceFault(kind, service, at, duration, params, link)
