"""simulate(): one trial, simulated: the inputs of a real trial in, its RunResult out.

The same topology, load profile, ServiceFault list and user timeout a real trial takes
(testbed.observe.trial.run_trial), the same frames and meta keys back, so the same
metric functions (testbed.scenario.metrics) give the predicted and the measured value.
Like a real trial it samples from time 0 every ``period_s``; after the load ends and
every fault is removed it waits for the queues to drain (ready and unacked zero for
0.5 s, or ``drain_timeout_s``), then samples ``tail_s`` more.

The shape follows the topology: a sync chain (testbed.model.sync), or an async
pipeline on RabbitMQ (testbed.model.async_) or, where ``topology.on_kafka``, on Kafka
(testbed.model.kafka: topics, consumer groups; a broker_down's restart takes
``Calibration.kafka_restart_s`` there instead of ``broker_restart_s``).

Randomness: service times as the knobs make them (the services' own seeded draws,
see testbed.model.service); everything else (Poisson arrivals, latency jitter,
reconnect waits, retry jitter, exponential service times) from ``seed``. One seed,
one run: a replay gives the same frames.
"""

from __future__ import annotations

import gc
import random
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import simpy

from testbed.load.profile import LoadProfile, Step
from testbed.model.async_ import AsyncPipeline
from testbed.model.calibration import Calibration
from testbed.model.errors import ModelError
from testbed.model.faults import fault_plan, schedule
from testbed.model.kafka import KafkaPipeline
from testbed.model.record import (
    Counts,
    Samples,
    Seconds,
    counts,
    events_frame,
    ledgers_frame,
    load_summary,
    order_ids,
    requests_frame,
    times,
)
from testbed.model.sync import SyncChain
from testbed.model.timers import Timers
from testbed.model.traces import predicted_spans
from testbed.model.users import LOAD_WORKERS, Users, arrival_times, steps_of
from testbed.observe.result import RunResult
from testbed.topology.model import Knobs, Topology

if TYPE_CHECKING:
    from testbed.scenario.faults import ServiceFault

SETTLE_S = 0.5  # as testbed.observe.trial: drained must hold this long
SERVICE_TIMES = ("as_knobs", "exponential")
Shape = SyncChain | AsyncPipeline | KafkaPipeline


def simulate(topology: Topology, profile: LoadProfile | Sequence[Step],
             faults: Iterable[ServiceFault] = (), *, timeout_s: float = 5.0, seed: int = 1,
             calibration: Calibration | None = None, period_s: float = 0.25,
             drain_timeout_s: float = 30.0, tail_s: float = 1.0, arrivals: str = "even",
             service: str = "as_knobs", name: str | None = None,
             load_workers: int | None = LOAD_WORKERS,
             order_prefix: str | None = None, traced: bool = False) -> RunResult:
    """Simulate one trial of ``topology`` under ``profile`` and ``faults``.

    ``timeout_s``: how long a user waits (the load generator's timeout).
    ``arrivals``: "even" (the profile's schedule) or "poisson".
    ``service``: "as_knobs" or "exponential" (same mean) service times.
    ``load_workers``: the load generator's senders (None: as many as orders).
    ``order_prefix``: of the order ids (which decide Kafka partitions); give the measured
    run's to predict its partitions exactly.
    ``traced``: the services trace (OpenTelemetry): every HTTP hop costs
    ``traced_hop_ms`` more, and the result holds the spans the run would (model.traces).
    ``profile`` may be a plain sequence of Steps, unbounded by the real generator's
    limits (MAX_REQUESTS, MAX_DURATION_S).
    """
    calibration = calibration if calibration is not None else Calibration()
    untraced = calibration
    if traced:
        calibration = replace(calibration,
                              http_hop_ms=calibration.http_hop_ms + calibration.traced_hop_ms)
    _check(timeout_s, seed, period_s, drain_timeout_s, tail_s, service, load_workers)
    name = name or topology.name
    prefix = order_prefix or f"{name}-model-s{seed}"
    steps = steps_of(profile)
    offsets = arrival_times(steps, arrivals, np.random.default_rng(seed))
    faults = list(faults)
    plan = fault_plan(faults, topology)
    n = len(offsets)
    ids = order_ids(prefix, n)

    env = simpy.Environment()
    timers = Timers(env)
    ledgers: dict[str, Counts] = {spec.name: counts(n) for spec in topology.services}
    queued = times(n, 0.0)
    # what keys a Kafka message (its partition): the customer key, else the order id
    key_of = profile.key_of if isinstance(profile, LoadProfile) else (lambda _: None)
    keys = [key_of(index) or order_id for index, order_id in enumerate(ids)]
    shape = build_shape(env, topology, calibration, timers, ledgers, queued, seed, service,
                        keys)
    users = Users(env, offsets, timeout_s, shape.entry, timers, load_workers)
    events: list[tuple[float, str, str, str, str]] = []
    broker_restart_s = calibration.kafka_restart_s if topology.on_kafka \
        else calibration.broker_restart_s
    faults_done = schedule(env, plan, shape, events, users.all_done, calibration.restart_s,
                           broker_restart_s, calibration.fault_ms / 1000.0)
    samples = Samples()
    env.process(_sampler(env, shape, samples, period_s))
    finish = env.process(_finish(env, shape, users.all_done, faults_done, period_s,
                                 drain_timeout_s, tail_s))
    with paced_collector():  # the frames too: pandas allocates as fast as the model
        env.run(until=finish)
        unreadable: dict[str, int] = {}
        first: Mapping[str, Sequence[int]] = {}
        if not isinstance(shape, SyncChain):
            ledgers.update(shape.dlq_ledgers)
            unreadable = shape.unreadable()
            first = shape.processing_order()
        frames = (requests_frame(offsets, users.sent, users.done, users.outcome, queued,
                                 topology.name, ids), samples.frame(), events_frame(events),
                  ledgers_frame(ledgers, ids, unreadable, first))
    drained = bool(finish.value)
    meta: dict[str, Any] = {
        "topology": topology.name, "deployment": "model", "runtime": "model",
        "profile": [asdict(s) for s in steps], "load": load_summary(offsets, users.sent),
        "drained": drained, "order_prefix": prefix, "user_timeout_s": timeout_s,
        "services": [spec.name for spec in topology.services],
        "faults": [f.text() for f in plan], "knobs": knobs_changed(topology),
        "model": {"seed": seed, "arrivals": arrivals, "service": service,
                  "calibration": asdict(calibration), "simulated_s": env.now,
                  "load_workers": load_workers},
    }
    spans = pd.DataFrame()
    if traced:
        meta["traced"] = True
        spans = predicted_spans(topology, frames[0][frames[0]["ok"]], untraced, faults)
    return RunResult(name, *frames, meta, spans)


def build_shape(env: simpy.Environment, topology: Topology, calibration: Calibration,
                timers: Timers, ledgers: dict[str, Counts], queued: Seconds, seed: int,
                service: str, ids: Iterable[str]) -> Shape:
    """The topology's services, links (and broker) in ``env``, ready for orders (``ids``:
    the orders' message keys, which place a Kafka message in its partition)."""
    link_rng = random.Random(f"model:{seed}:links")
    if topology.shape == "sync":
        return SyncChain(env, topology, calibration, timers, ledgers, queued, seed, service,
                         link_rng)
    if topology.on_kafka:
        return KafkaPipeline(env, topology, calibration, timers, ledgers, queued, seed,
                             service, link_rng, ids)
    return AsyncPipeline(env, topology, calibration, timers, ledgers, queued, seed, service,
                         link_rng)


@contextmanager
def paced_collector(young: int = 100_000) -> Iterator[None]:
    """Collect the young generation every ``young`` allocations instead of 700 while
    the simulation runs. Each order allocates a few short-lived objects, and a few of
    those, caught alive by a young collection, get promoted; every ~17,000 promoted
    trigger a full collection, which walks every object in the interpreter (numpy and
    pandas included: ~35 ms): measured 25% of a sync run's time. The old thresholds are
    back afterwards; nothing is switched off (cycles are still collected)."""
    old = gc.get_threshold()
    gc.set_threshold(max(old[0], young), old[1], old[2])
    try:
        yield
    finally:
        gc.set_threshold(*old)


def knobs_changed(topology: Topology) -> dict[str, dict[str, object]]:
    """Each service's knobs that differ from the defaults (as a trial's meta has them)."""
    defaults = asdict(Knobs())
    return {spec.name: {k: v for k, v in asdict(spec.knobs).items() if defaults[k] != v}
            for spec in topology.services}


def _check(timeout_s: float, seed: int, period_s: float, drain_timeout_s: float,
           tail_s: float, service: str, load_workers: int | None) -> None:
    for label, value, zero in (("timeout_s", timeout_s, False), ("period_s", period_s, False),
                               ("drain_timeout_s", drain_timeout_s, True),
                               ("tail_s", tail_s, True)):
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not (value >= 0 if zero else value > 0) or value == float("inf"):
            bound = "0 or more" if zero else "greater than 0"
            raise ModelError(f"{label}={value!r}; give finite seconds, {bound}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ModelError(f"seed={seed!r}; give a whole number of 0 or more")
    if service not in SERVICE_TIMES:
        raise ModelError(f"service={service!r}; use one of {', '.join(SERVICE_TIMES)}")
    if load_workers is not None and (isinstance(load_workers, bool)
                                     or not isinstance(load_workers, int) or load_workers < 1):
        raise ModelError(f"load_workers={load_workers!r}; give a whole number of 1 or more, "
                         "or None")


def _sampler(env: simpy.Environment, shape: Shape,
             samples: Samples, period_s: float) -> Generator[simpy.Event, Any, None]:
    tick = 0
    while True:
        shape.sample(env.now, samples)
        tick += 1
        yield env.timeout(max(0.0, tick * period_s - env.now))


def _finish(env: simpy.Environment, shape: Shape, load_done: simpy.Event,
            faults_done: simpy.Event, period_s: float, drain_timeout_s: float,
            tail_s: float) -> Generator[simpy.Event, Any, bool]:
    """The end of a trial: load done, faults removed, drained (or given up), the tail."""
    yield load_done
    yield faults_done
    deadline = env.now + drain_timeout_s
    settled: float | None = None
    drained = False
    while True:
        if not shape.drained():
            settled = None
        elif settled is None:
            settled = env.now
        elif env.now - settled >= SETTLE_S - 1e-9:
            drained = True
            break
        if env.now > deadline:
            break
        yield env.timeout(period_s)
    yield env.timeout(tail_s)
    return drained
