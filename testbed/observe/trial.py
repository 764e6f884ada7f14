"""One trial: a topology under a load profile and a fault plan, fully observed.

Load, samplers and the fault schedule share one timeline origin. After the load ends
and every fault is removed, the trial keeps sampling until the queues are drained (or
``drain_timeout_s`` passes), so recovery is on the record, then reads the ledgers and
the dead-letter queues (as ledgers named ``<queue>.dlq``).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict

from testbed.errors import TestbedError
from testbed.faults import FaultError, Planned, Schedule, Timeline
from testbed.faults.broker import ready_count
from testbed.load import LoadGenerator, LoadProfile
from testbed.observe.dead_letters import dead_letters
from testbed.observe.health import GRACE_S, infrastructure_problem, require_infrastructure
from testbed.observe.result import RunResult, events_frame, ledgers_frame
from testbed.observe.sampler import Sampler
from testbed.observe.spans import collect_spans, empty_spans
from testbed.runtime.base import Deployment, retry_queue
from testbed.topology import Knobs

SETTLE_S = 0.5  # drained must hold this long: the management API's counts lag 250 ms
_TRIALS = itertools.count(1)  # numbers each trial of this process: order ids never repeat


def queues_drained(deployment: Deployment) -> bool:
    """No message ready in any of the deployment's queues nor waiting in a retry queue
    (exact counts over AMQP), and none delivered but unacked (held in a consumer's
    prefetch buffer or handler; from the management API, which lags)."""
    if deployment.kafka is not None:
        try:  # every group's lag (its retry worker's included) is zero
            return not any(q.ready for q in deployment.kafka.queue_states()
                           if not q.name.endswith(".dlq"))
        except TestbedError:
            return False
    broker = deployment.broker
    if broker is None:
        return True
    waiting = [retry_queue(spec.name) for spec in deployment.topology.services
               if spec.consumes and spec.knobs.consumer_retries]
    try:
        if any(ready_count(broker, queue) for queue in (*broker.queues, *waiting)):
            return False
        held = {q.name: q.unacked for q in broker.admin.queues(broker.vhost)}
    except (FaultError, TestbedError):  # a broker still coming back is not drained
        return False
    return not any(held.get(queue, 0) for queue in broker.queues)


def wait_until_drained(deployment: Deployment, timeout_s: float, period_s: float) -> bool:
    """Poll until the queues are drained and stay so for SETTLE_S (a stale zero from
    the management API cannot end the wait early); False at the deadline. A broker or
    Toxiproxy that dies meanwhile aborts the wait (ExperimentAborted) within seconds."""
    deadline = time.monotonic() + timeout_s
    settled_since: float | None = None
    down_since: float | None = None
    while True:
        now = time.monotonic()
        if not queues_drained(deployment):
            settled_since = None
            if infrastructure_problem(deployment) is None:
                down_since = None
            elif down_since is None:
                down_since = now
            elif now - down_since >= GRACE_S:
                require_infrastructure(deployment, "while waiting for the queues to drain",
                                       grace_s=0.0)
        elif settled_since is None:
            settled_since = now
        elif now - settled_since >= SETTLE_S:
            return True
        if now > deadline:
            return False
        time.sleep(period_s)


def run_trial(deployment: Deployment, profile: LoadProfile, plan: list[Planned],
              name: str | None = None, timeout_s: float = 5.0, period_s: float = 0.25,
              drain_timeout_s: float = 30.0, tail_s: float = 1.0,
              order_prefix: str | None = None) -> RunResult:
    """Run load and faults together; return everything measured.

    Time zero of every frame is the load's first scheduled send; the fault plan's times
    count from there too. ``order_prefix``: the orders' ids start with it (default: one
    unique to this trial); the model is given the same, so on Kafka each order lands on
    the same partition in both runs.
    """
    name = name or deployment.topology.name
    # Two trials on one deployment must not share order ids: the ledgers keep counting
    # across trials, and the audit reads only this trial's orders (the prefix).
    prefix = order_prefix or f"{name}-{deployment.id}-t{next(_TRIALS)}"
    generator = LoadGenerator(deployment.entry_url, profile, topology=deployment.topology.name,
                              timeout_s=timeout_s, order_prefix=prefix)
    generator.start()
    origin_wall_s = time.time() - (time.monotonic() - generator.start_time)
    timeline = Timeline(origin=generator.start_time)
    sampler = Sampler(deployment, period_s, origin=generator.start_time).start()
    try:
        schedule = Schedule(plan, timeline).start(t0=generator.start_time)
        try:
            requests = generator.wait()
            schedule.wait(timeout=max(0.0, generator.start_time + _plan_end(plan)
                                      - time.monotonic()) + 30)
        finally:
            try:
                schedule.stop()
            except FaultError:
                # A fault that cannot be removed because Toxiproxy or the broker died is
                # the testbed's failure: say so, rather than the removal's symptom.
                require_infrastructure(deployment, "while removing the faults")
                raise
        require_infrastructure(deployment, "after the faults were removed")
        drained = wait_until_drained(deployment, drain_timeout_s, period_s)
        time.sleep(tail_s)  # a little steady state after recovery, for the baseline
    finally:
        samples = sampler.stop()
    meta = {"topology": deployment.topology.name, "deployment": deployment.id,
            "runtime": deployment.runtime, "profile": [asdict(s) for s in profile.steps],
            "load": asdict(generator.summary()), "drained": drained,
            "order_prefix": prefix, "user_timeout_s": timeout_s,
            "services": [spec.name for spec in deployment.topology.services],
            "faults": [planned_text(p) for p in plan],
            "knobs": knobs_changed(deployment),
            "own": [spec.name for spec in deployment.topology.own_services],
            "unaudited": list(deployment.unaudited),
            "ledger_reset": deployment.ledger_resets}
    ledgers = {**deployment.ledgers(), **dead_letters(deployment)}
    spans = empty_spans()
    if deployment.traces_url is not None:
        meta["traced"] = True
        spans = collect_spans(deployment.traces_url, deployment.id, deployment.topology,
                              origin_wall_s)
    return RunResult(name, requests, samples, events_frame(timeline), ledgers_frame(ledgers),
                     meta, spans)


def knobs_changed(deployment: Deployment) -> dict[str, dict[str, object]]:
    """Each service's knobs that differ from the defaults: the run's contributing factors."""
    defaults = asdict(Knobs())
    return {spec.name: {k: v for k, v in asdict(spec.knobs).items() if defaults[k] != v}
            for spec in deployment.topology.services}


def planned_text(planned: Planned) -> str:
    """"latency 400 ms on orders-payments at 2 s for 5 s"; a one-off (a poison message)
    or a fault left until the end has no duration to state."""
    when = f"at {planned.at:g} s"
    if planned.duration is not None:
        when += f" for {planned.duration:g} s"
    return f"{planned.fault.describe()} {when}"


def _plan_end(plan: list[Planned]) -> float:
    return max((p.at + (p.duration or 0.0) for p in plan), default=0.0)
