"""The fault plan of a model run: the same ServiceFault list a real trial resolves,
applied to the model's links and services at the same times.

Modelled (anything else raises NotModelled naming the fault):
- latency (alias "slower") on a link: each chunk on the stream ("downstream" by
  default, "upstream" or "both") held latency +- jitter ms (uniform), as Toxiproxy does;
  toxicity must be 1 (per-connection toxicity is not modelled).
- link_down (alias "unreachable"), amqp_link_cut: the link is cut. Sync: calls over it
  are refused and open ones fail at once (502 for the caller). Async: the consumer's
  connection drops, its unacked deliveries go back to the head of its queue, it
  reconnects a random wait in (0, reconnect_max_s] after the link is back; the gateway's
  publishes fail (503, compensated) while its link is down.
- kill: the service is gone (sync: refused, open calls reset; async consumer: its
  connections drop, as above); the removal starts it again, and, as in a real trial,
  the remove event is recorded once it is ready, ``Calibration.restart_s`` later.
- pause: the service is frozen (SIGSTOP). Sync: calls to it hang (the kernel still
  accepts them), its work stops and resumes where it was. Async consumer: it holds its
  deliveries; after ``heartbeat_s`` the broker drops its connection (requeue), and on
  the resume it reconnects.
Events: "inject" at the fault's time (detail: what was injected), "remove" at its
end; a fault without a duration is removed once the load is done (and every timed
fault has run), as the real schedule's stop does. Targets read "model/<link or
service>", as a deployment's read "<deployment id>/<...>".
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import simpy

from testbed.model.errors import ModelError, NotModelled
from testbed.model.links import STREAMS, Link
from testbed.model.service import Service
from testbed.topology.model import Topology

if TYPE_CHECKING:
    from testbed.scenario.faults import ServiceFault

LINK_FAULTS = ("latency", "link_down", "amqp_link_cut")
SERVICE_FAULTS = ("kill", "pause")
MODELLED = (*LINK_FAULTS, *SERVICE_FAULTS)
DEPLOYMENT = "model"  # stands where a real run's deployment id stands
EventRow = tuple[float, str, str, str, str]


class Shape(Protocol):
    """What a fault acts on: the shape's links and services."""

    links: dict[str, Link]
    services: dict[str, Service]


@dataclass(frozen=True)
class PlannedFault:
    """One fault on one target of this topology, at a time, for a duration."""

    kind: str  # latency | link_down | amqp_link_cut | kill | pause
    target: str  # a link name or a service name
    at: float
    duration: float | None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{DEPLOYMENT}/{self.target}"

    def describe(self) -> str:
        """As the real fault describes itself (testbed.faults)."""
        if self.kind == "latency":
            streams = "upstream+downstream" if self.params["stream"] == "both" \
                else self.params["stream"]
            return (f"latency(latency={self.params['latency']}, "
                    f"jitter={self.params['jitter']}) on {self.where} {streams}")
        return f"{self.kind} on {self.where}"

    def text(self) -> str:
        """As a trial's meta lists it: what, when, for how long."""
        when = f"at {self.at:g} s"
        if self.duration is not None:
            when += f" for {self.duration:g} s"
        return f"{self.describe()} {when}"


def fault_plan(faults: Iterable[ServiceFault], topology: Topology) -> list[PlannedFault]:
    """Resolve each fault for this topology (faults meant for the other shape are
    skipped); raise NotModelled for a fault the model does not reproduce."""
    plan = []
    for fault in faults:
        if not fault.applies_to(topology):
            continue
        name = fault.fault_name
        if name not in MODELLED:
            raise NotModelled(f"fault {name!r} ({fault.describe()}) is not modelled; the "
                              f"model reproduces: {', '.join(MODELLED)}")
        _check_time(fault.at, fault.duration, name)
        params = _params(name, dict(fault.params))
        for target in fault.targets(topology):
            plan.append(PlannedFault(name, target, float(fault.at), fault.duration, params))
    return plan


def _check_time(at: float, duration: float | None, name: str) -> None:
    if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at) \
            or at < 0:
        raise ModelError(f"{name}: at={at!r}; give the seconds after the start, 0 or more")
    if duration is not None and (isinstance(duration, bool)
                                 or not isinstance(duration, int | float)
                                 or not math.isfinite(duration) or duration <= 0):
        raise ModelError(f"{name}: duration={duration!r}; give seconds > 0, or None for "
                         "until the load ends")


def _params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    if name != "latency":
        if params:
            raise ModelError(f"{name} takes no parameters, got {sorted(params)}")
        return {}
    unknown = sorted(set(params) - {"latency", "jitter", "stream", "toxicity"})
    if unknown:
        raise ModelError(f"latency has no parameter {unknown[0]!r}; its parameters: "
                         "latency, jitter, stream, toxicity")
    checked: dict[str, Any] = {}
    for key, default in (("latency", None), ("jitter", 0)):
        value = params.get(key, default)
        if value is None:
            raise ModelError("latency needs latency= (ms, a whole number)")
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 \
                or not math.isfinite(value):
            raise ModelError(f"latency {key}={value!r} is impossible; give ms, 0 or more")
        checked[key] = value
    stream = params.get("stream", "downstream")
    if stream not in STREAMS:
        raise ModelError(f"latency stream={stream!r}; use one of {', '.join(STREAMS)}")
    checked["stream"] = stream
    if params.get("toxicity", 1.0) != 1.0:
        raise NotModelled(f"latency with toxicity={params['toxicity']!r}: Toxiproxy decides "
                          "toxicity per connection, which the model does not follow; "
                          "use toxicity 1")
    return checked


def _check_targets(plan: list[PlannedFault], shape: Shape) -> None:
    for fault in plan:
        on_link = fault.kind in LINK_FAULTS
        known = shape.links if on_link else shape.services
        if fault.target not in known:
            raise ModelError(f"{fault.kind}: no {'link' if on_link else 'service'} "
                             f"{fault.target!r} in the model; it has {', '.join(known)}")


def inject(fault: PlannedFault, shape: Shape) -> None:
    if fault.kind == "latency":
        p = fault.params
        shape.links[fault.target].add_latency(p["stream"], p["latency"], p["jitter"])
    elif fault.kind in ("link_down", "amqp_link_cut"):
        shape.links[fault.target].cut()
    elif fault.kind == "kill":
        shape.services[fault.target].kill()
    else:
        shape.services[fault.target].pause()


def remove(fault: PlannedFault, shape: Shape) -> None:
    if fault.kind == "latency":
        p = fault.params
        shape.links[fault.target].remove_latency(p["stream"], p["latency"], p["jitter"])
    elif fault.kind in ("link_down", "amqp_link_cut"):
        shape.links[fault.target].restore()
    elif fault.kind == "kill":
        shape.services[fault.target].revive()
    else:
        shape.services[fault.target].resume()


def schedule(env: simpy.Environment, plan: list[PlannedFault], shape: Shape,
             events: list[EventRow], load_done: simpy.Event,
             restart_s: float) -> simpy.Event:
    """Start the plan; the returned event succeeds once every fault is removed."""
    _check_targets(plan, shape)
    for fault in plan:  # only calls a planned cut or kill can fail need tracking
        if fault.kind in ("link_down", "amqp_link_cut"):
            shape.links[fault.target].tracked = True
        elif fault.kind == "kill":
            into = getattr(shape.services[fault.target], "into", None)
            if into is not None:
                into.tracked = True
    plan_end = max((f.at + (f.duration or 0.0) for f in plan), default=0.0)
    processes = [env.process(_run(env, f, shape, events, load_done, plan_end, restart_s))
                 for f in plan]
    return env.all_of(processes)


def _run(env: simpy.Environment, fault: PlannedFault, shape: Shape, events: list[EventRow],
         load_done: simpy.Event, plan_end: float,
         restart_s: float) -> Generator[simpy.Event, Any, None]:
    yield env.timeout(fault.at)
    inject(fault, shape)
    events.append((env.now, "inject", fault.kind, fault.where, fault.describe()))
    if fault.duration is not None:
        yield env.timeout(fault.duration)
    else:
        yield env.all_of([load_done, env.timeout(max(0.0, plan_end - env.now))])
    if fault.kind == "kill":
        yield env.timeout(restart_s)  # still down until it is started and ready
    remove(fault, shape)
    events.append((env.now, "remove", fault.kind, fault.where, ""))
