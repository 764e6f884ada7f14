"""The fault plan of a model run: the same ServiceFault list a real trial resolves,
applied to the model's links, services, queues and broker at the same times.

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
  the remove event is recorded once it is ready, ``Calibration.restart_s`` later. A
  restarted process counts its /stats from zero and holds no application fault.
- pause: the service is frozen (SIGSTOP). Sync: calls to it hang (the kernel still
  accepts them), its work stops and resumes where it was. Async consumer: it holds its
  deliveries; after ``heartbeat_s`` the broker drops its connection (requeue), and on
  the resume it reconnects.
- restart: a kill and a start ``restart_s`` later, once (the inject event once it is
  back, as the real inject returns then). crash_loop(down_s, up_s): killed, started
  again after down_s (ready restart_s later), up for up_s, killed again, until removed.
- crash_at(point, times): the service dies at a point of its code (testbed.services
  .crash): ``after_process`` (consumer: side effect done, not acked: redelivered after
  the restart) or ``after_write`` (async gateway: order stored, event not published;
  with the outbox the restarted relay publishes it); ``times`` crashes, each started
  again ``restart_s`` later and armed again a readiness poll (50 ms) after that (so an
  order redelivered at once is handled first); the inject event after the last, as the real
  inject returns then. No order reaching the point within wait_s is a ModelError, as
  the real fault's FaultError.
- error_rate(p, status, seed), fail_first(n, status), route_error(route, status): the
  service's application fault (testbed.model.chaos): an HTTP service answers the status
  before its handler (no work, no ledger: injected_errors); a consumer's handler fails
  the message (injected_errors, handler_errors), which goes where its knobs send it
  (see testbed.model.async_).
- poison(count): undecodable messages published at the tail of the consumer's queue;
  they fail the handler on every delivery (handler_errors).
- purge: the queue's ready messages are thrown away.
- consumer_stall: the consumer's handler hangs before its next message, holding what
  it was delivered, heartbeats going (no requeue), until removed.
- replay (Kafka only, one-shot): the consumer is stopped gracefully (each thread
  finishes the message in its hands, then leaves its group at once), its group's
  committed offsets go back to 0 on every partition of its topic, and it is started
  again: ready ``restart_s`` later (a new process: counters from zero, nothing read
  yet), its group formed ``kafka_rejoin_s`` after that, and every message the topic
  holds is handled once more (see testbed.model.kafka). The inject event once it is
  back, as the real inject returns then; the remove event as poison's. On RabbitMQ it
  is NotModelled (RABBIT_NOT_MODELLED: a queue keeps nothing it has delivered; the real
  fault refuses it, FaultSpecError).
- broker_down(graceful): every AMQP connection drops (as a cut of every broker link);
  messages in the queues survive (durable, persistent); the removal starts the broker
  again, the remove event once it answers, ``Calibration.broker_restart_s`` later.
- memory_alarm: the broker blocks publishers: a publish (gateway, relay, a consumer's
  forward) waits until the alarm clears; pika's blocked-connection timeout (30 s)
  fails it.
Not modelled: the other toxics (timeout, bandwidth, ...) and partition.
On Kafka (``topology.on_kafka``; the mechanisms: testbed.model.kafka) the same faults
mean: a cut link or the broker down holds produces (503 only after the producer's
timeout_s) and commits; a consumer's session (6 s) decides whether a cut, a pause or a
kill makes its group form again from the committed offsets (``kafka_rejoin_s`` after
it can); a poison message goes to partition 0 of the consumer's topic; the broker is
back ``Calibration.kafka_restart_s`` after the removal. Not modelled on Kafka
(KAFKA_NOT_MODELLED): purge and memory_alarm (RabbitMQ's), crash_loop, route_error and
crash_at after_write.
Events: "inject" at the fault's time (detail: what was injected), "remove" at its
end; a fault without a duration is removed once the load is done (and every timed
fault has run), as the real schedule's stop does. Targets read "model/<link, service
or queue>", broker faults "broker of model", as a deployment's read.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

import simpy

from testbed.model.chaos import spec_of
from testbed.model.errors import ModelError, NotModelled
from testbed.model.flow import Gate
from testbed.model.links import STREAMS, Link
from testbed.model.service import Service
from testbed.topology.model import Topology

if TYPE_CHECKING:
    from testbed.scenario.faults import ServiceFault

LINK_FAULTS = ("latency", "link_down", "amqp_link_cut")
APP_FAULTS = {"error_rate": "error_rate", "fail_first": "fail_first",
              "route_error": "route"}  # fault name -> the service's chaos mode
SERVICE_FAULTS = ("kill", "pause", "restart", "crash_loop", "crash_at", *APP_FAULTS)
QUEUE_FAULTS = ("poison", "purge", "consumer_stall", "replay")
BROKER_FAULTS = ("broker_down", "memory_alarm")
MODELLED = (*LINK_FAULTS, *SERVICE_FAULTS, *QUEUE_FAULTS, *BROKER_FAULTS)
CRASH_POINTS = {"async_consumer": ("after_process",), "async_gateway": ("after_write",),
                "http_stage": ()}  # as each role's CrashPoints offers them
KAFKA_NOT_MODELLED = {  # fault -> why, on a Kafka topology
    "purge": "a log is not purged (RabbitMQ's fault)",
    "memory_alarm": "RabbitMQ's resource alarm",
    "crash_loop": "not modelled on Kafka",
    "route_error": "not modelled on Kafka"}
RABBIT_NOT_MODELLED = {  # fault -> why, on a RabbitMQ topology (the real one refuses it)
    "replay": "a RabbitMQ queue keeps nothing it has delivered, so there is nothing to "
              "replay (the real fault refuses it: FaultSpecError); run the topology on "
              "Kafka (broker kind 'kafka')"}
DEPLOYMENT = "model"  # stands where a real run's deployment id stands
READY_POLL_S = 0.05  # testbed.components.readiness polls a (re)started service so often
EventRow = tuple[float, str, str, str, str]
_NO_PARAMS = ("link_down", "amqp_link_cut", "kill", "pause", "restart", "purge",
              "consumer_stall", "memory_alarm", "replay")
_PARAMS: dict[str, dict[str, Any]] = {  # name -> parameter -> default
    "poison": {"count": 1}, "broker_down": {"graceful": True},
    "crash_at": {"point": None, "times": 1, "wait_s": 10.0},
    "crash_loop": {"down_s": 1.0, "up_s": 1.0}}


class Shape(Protocol):
    """What a fault acts on: the shape's links and services."""

    links: dict[str, Link]
    services: dict[str, Service]


class Pipeline(Shape, Protocol):
    """An async shape: also queues and a broker (testbed.model.async_.AsyncPipeline)."""

    queues: dict[str, Any]

    def poison(self, queue: str, count: int) -> None: ...
    def purge(self, queue: str) -> None: ...
    def replay(self, queue: str, restart_s: float) -> Generator[simpy.Event, Any, None]: ...
    def broker_down(self) -> None: ...
    def broker_up(self) -> None: ...
    alarm: Gate  # a memory alarm


@dataclass(frozen=True)
class PlannedFault:
    """One fault on one target of this topology, at a time, for a duration."""

    kind: str  # a name of MODELLED
    target: str  # a link, service or queue name; "" for the whole broker
    at: float
    duration: float | None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"broker of {DEPLOYMENT}" if self.kind in BROKER_FAULTS \
            else f"{DEPLOYMENT}/{self.target}"

    def describe(self) -> str:
        """As the real fault describes itself (testbed.faults)."""
        p = self.params
        if self.kind == "latency":
            streams = "upstream+downstream" if p["stream"] == "both" else p["stream"]
            return (f"latency(latency={p['latency']}, jitter={p['jitter']}) on "
                    f"{self.where} {streams}")
        if self.kind in APP_FAULTS:
            shown = ", ".join(f"{k}={v}" for k, v in p["shown"].items())
            return f"{self.kind}({shown}) on {self.where}"
        if self.kind == "crash_at":
            return f"crash_at({p['point']}, {p['times']}x) on {self.where}"
        if self.kind == "crash_loop":
            return f"crash_loop(down {p['down_s']} s, up {p['up_s']} s) on {self.where}"
        if self.kind == "broker_down":
            return f"broker_down({'stop' if p['graceful'] else 'kill'}) on {self.where}"
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
        if topology.on_kafka:
            _check_kafka(name, params, fault.describe())
        elif topology.shape != "sync":
            _check_rabbit(name, fault.describe())
        for target in fault.targets(topology):
            plan.append(PlannedFault(name, target, float(fault.at), fault.duration, params))
    return plan


def _check_kafka(name: str, params: dict[str, Any], described: str) -> None:
    why = KAFKA_NOT_MODELLED.get(name)
    if why is None and name == "crash_at" and params["point"] == "after_write":
        why = "the Kafka gateway's crash point after_write is not modelled"
    if why is not None:
        modelled = [n for n in MODELLED if n not in KAFKA_NOT_MODELLED]
        raise NotModelled(f"fault {name!r} ({described}) on Kafka: {why}; on Kafka the "
                          f"model reproduces: {', '.join(modelled)}")


def _check_rabbit(name: str, described: str) -> None:
    why = RABBIT_NOT_MODELLED.get(name)
    if why is not None:
        raise NotModelled(f"fault {name!r} ({described}) on RabbitMQ: {why}")


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
    if name == "latency":
        return _latency_params(params)
    if name in APP_FAULTS:
        try:
            spec = spec_of(APP_FAULTS[name], params)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{name}: {exc}") from exc
        shown = {k: getattr(spec, k) for k in ("p", "n", "route") if getattr(spec, k)
                 is not None}
        shown["status"] = spec.status
        if spec.mode == "error_rate":
            shown["seed"] = spec.seed
        return {"spec": spec, "shown": shown}
    if name in _NO_PARAMS:
        if params:
            raise ModelError(f"{name} takes no parameters, got {sorted(params)}")
        return {}
    known = _PARAMS[name]
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ModelError(f"{name} has no parameter {unknown[0]!r}; its parameters: "
                         f"{', '.join(known)}")
    checked = {**known, **params}
    _check_values(name, checked)
    return checked


def _check_values(name: str, p: dict[str, Any]) -> None:
    """The same bounds as the real faults (testbed.faults.broker, process)."""
    def whole(key: str, low: int, high: int | None = None) -> None:
        value = p[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low \
                or (high is not None and value > high):
            bound = f"from {low} to {high}" if high is not None else f"of {low} or more"
            raise ModelError(f"{name} {key}={value!r}; give a whole number {bound}")

    def positive(key: str) -> None:
        value = p[key]
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value) or value <= 0:
            raise ModelError(f"{name} {key}={value!r}; give seconds > 0")

    if name == "poison":
        whole("count", 1)
    elif name == "crash_at":
        if p["point"] is None:
            raise ModelError("crash_at needs point= (after_process or after_write)")
        whole("times", 1, 20)
        positive("wait_s")
    elif name == "crash_loop":
        positive("down_s")
        positive("up_s")
    elif name == "broker_down" and not isinstance(p["graceful"], bool):
        raise ModelError(f"broker_down graceful={p['graceful']!r}; give True or False")


def _latency_params(params: dict[str, Any]) -> dict[str, Any]:
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
        if fault.kind in BROKER_FAULTS:
            continue  # whole broker: fault_plan only keeps them for an async shape
        if fault.kind in QUEUE_FAULTS:
            known: dict[str, Any] = cast(Pipeline, shape).queues
            what = "queue"
        elif fault.kind in LINK_FAULTS:
            known, what = shape.links, "link"
        else:
            known, what = shape.services, "service"
        if fault.target not in known:
            raise ModelError(f"{fault.kind}: no {what} {fault.target!r} in the model; it "
                             f"has {', '.join(known)}")
        if fault.kind == "crash_at":
            role = shape.services[fault.target].spec.role
            points = CRASH_POINTS.get(role, ())
            if fault.params["point"] not in points:
                raise ModelError(f"crash_at: {fault.target} has no crash point "
                                 f"{fault.params['point']!r}; its points: "
                                 f"{', '.join(points) or 'none'}")


def inject(fault: PlannedFault, shape: Shape) -> None:
    """Put the fault in place (the one-step faults; the runners do the others)."""
    p, target = fault.params, fault.target
    if fault.kind == "latency":
        shape.links[target].add_latency(p["stream"], p["latency"], p["jitter"])
    elif fault.kind in ("link_down", "amqp_link_cut"):
        shape.links[target].cut()
    elif fault.kind in ("kill", "crash_loop"):
        shape.services[target].kill()
    elif fault.kind == "pause":
        shape.services[target].pause()
    elif fault.kind in APP_FAULTS:
        shape.services[target].chaos.set(p["spec"])
    elif fault.kind == "consumer_stall":
        cast(Any, shape.services[target]).stall_gate.close()
    else:
        pipeline = cast(Pipeline, shape)
        if fault.kind == "poison":
            pipeline.poison(target, p["count"])
        elif fault.kind == "purge":
            pipeline.purge(target)
        elif fault.kind == "broker_down":
            pipeline.broker_down()
        elif fault.kind == "memory_alarm":
            pipeline.alarm.close()


def remove(fault: PlannedFault, shape: Shape) -> None:
    """Take the fault back (one-shot faults: nothing to take back)."""
    p, target = fault.params, fault.target
    if fault.kind == "latency":
        shape.links[target].remove_latency(p["stream"], p["latency"], p["jitter"])
    elif fault.kind in ("link_down", "amqp_link_cut"):
        shape.links[target].restore()
    elif fault.kind in ("kill", "crash_loop"):
        if not shape.services[target].alive:
            shape.services[target].revive()
    elif fault.kind == "pause":
        shape.services[target].resume()
    elif fault.kind in APP_FAULTS:
        shape.services[target].chaos.clear()
    elif fault.kind == "consumer_stall":
        cast(Any, shape.services[target]).stall_gate.open()
    elif fault.kind == "broker_down":
        cast(Pipeline, shape).broker_up()
    elif fault.kind == "memory_alarm":
        cast(Pipeline, shape).alarm.open()


def schedule(env: simpy.Environment, plan: list[PlannedFault], shape: Shape,
             events: list[EventRow], load_done: simpy.Event, restart_s: float,
             broker_restart_s: float = 0.0, lag_s: float = 0.0) -> simpy.Event:
    """Start the plan; the returned event succeeds once every fault is removed."""
    _check_targets(plan, shape)
    for fault in plan:  # only calls a planned cut or kill can fail need tracking
        if fault.kind in ("link_down", "amqp_link_cut"):
            shape.links[fault.target].tracked = True
        elif fault.kind == "broker_down":
            for link in shape.links.values():
                link.tracked = True
        elif fault.kind in ("kill", "restart", "crash_loop", "crash_at"):
            into = getattr(shape.services[fault.target], "into", None)
            if into is not None:
                into.tracked = True
    plan_end = max((f.at + (f.duration or 0.0) for f in plan), default=0.0)
    timing = Timing(load_done, plan_end, restart_s, broker_restart_s, lag_s)
    processes = [env.process(_run(env, f, shape, events, timing)) for f in plan]
    return env.all_of(processes)


@dataclass(frozen=True)
class Timing:
    """What a fault's runner waits for: the load, the plan's end, the restarts."""

    load_done: simpy.Event
    plan_end: float
    restart_s: float
    broker_restart_s: float
    lag_s: float  # a fault's call, after its planned time (Calibration.fault_ms)


def _run(env: simpy.Environment, fault: PlannedFault, shape: Shape, events: list[EventRow],
         timing: Timing) -> Generator[simpy.Event, Any, None]:
    yield env.timeout(fault.at + timing.lag_s)
    if fault.kind == "crash_at":
        yield from _crash_at(env, fault, shape.services[fault.target], timing.restart_s)
    elif fault.kind == "restart":
        service = shape.services[fault.target]
        service.kill()
        yield env.timeout(timing.restart_s)
        service.revive()
    elif fault.kind == "replay":
        yield from cast(Pipeline, shape).replay(fault.target, timing.restart_s)
    else:
        inject(fault, shape)
    events.append((env.now, "inject", fault.kind, fault.where, fault.describe()))
    loop = env.process(_crash_loop(env, fault, shape.services[fault.target], timing)) \
        if fault.kind == "crash_loop" else None
    if fault.duration is not None:
        yield env.timeout(fault.duration)
    else:
        yield env.all_of([timing.load_done,
                          env.timeout(max(0.0, timing.plan_end - env.now))])
    if loop is not None:
        if loop.is_alive:
            loop.interrupt()
        if not shape.services[fault.target].alive:
            yield env.timeout(timing.restart_s)
    elif fault.kind == "kill":
        yield env.timeout(timing.restart_s)  # still down until it is started and ready
    elif fault.kind == "broker_down":
        yield env.timeout(timing.broker_restart_s)  # until it answers AMQP again
    remove(fault, shape)
    events.append((env.now, "remove", fault.kind, fault.where, ""))


def _crash_at(env: simpy.Environment, fault: PlannedFault, service: Service,
              restart_s: float) -> Generator[simpy.Event, Any, None]:
    """Arm, wait for an order to reach the point, start the service again; N times."""
    for _ in range(fault.params["times"]):
        crashed = service.arm(fault.params["point"])
        yield env.any_of([crashed, env.timeout(fault.params["wait_s"])])
        if not crashed.triggered:
            service.disarm()
            raise ModelError(f"crash_at: no order reached {fault.params['point']!r} on "
                             f"{fault.where} within {fault.params['wait_s']} s; is load "
                             "flowing to it?")
        yield env.timeout(restart_s)
        service.revive()
        # the injector sees it ready at its next readiness poll and arms it then: a
        # redelivered order handled at once is not the next one to crash
        yield env.timeout(READY_POLL_S)


def _crash_loop(env: simpy.Environment, fault: PlannedFault, service: Service,
                timing: Timing) -> Generator[simpy.Event, Any, None]:
    """Down down_s, started (ready restart_s later), up up_s, killed again; until the
    removal interrupts it."""
    try:
        while True:
            yield env.timeout(fault.params["down_s"] + timing.restart_s)
            service.revive()
            yield env.timeout(fault.params["up_s"])
            service.kill()
    except simpy.Interrupt:
        return
