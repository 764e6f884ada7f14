"""The sync shape: a chain of HTTP hops, each holding a worker while it calls the next.

Per hop, as testbed/services/http_stage.py and resilience.py do it: take a worker;
answer an application fault's status at once (error_rate, fail_first, route_error:
the chaos check runs before the handler, so no work, no ledger; a caller retries it
like any non-200); shed the order at once (504) if the caller's deadline leaves less than
``deadline_reserve_ms`` (with ``deadline``); spend the hop's HTTP cost plus the work;
write the ledger; then call downstream through the breaker, with ``timeout_s`` (or
what is left of the deadline, if less), retried ``retries`` times after a failure
(at once, or after an exponential backoff from ``retry_backoff_ms``, capped at 10x,
with full jitter if ``retry_jitter``), never after a breaker rejection (503) or a
passed deadline (504). A call that outlives its timeout fails the caller (504) while
the callee keeps working: its work and its downstream calls are wasted. A refused or
dropped connection, or any non-200 answer, fails the call with 502.
"""

from __future__ import annotations

import math
import random

import simpy

from testbed.model.calibration import Calibration
from testbed.model.flow import REFUSED, RESET, TIMEOUT, Call, Step, spawn
from testbed.model.links import Link
from testbed.model.record import Counts, Samples, Seconds
from testbed.model.server import GONE, ORDERS, WAIT, Server, Visit
from testbed.model.service import Service
from testbed.model.timers import Timers
from testbed.topology.model import ServiceSpec, Topology

CLOSED, HALF_OPEN, OPEN = 0, 1, 2


class Breaker:
    """pybreaker's CircuitBreaker as resilience.py uses it (``calling()``): opens after
    ``failures`` consecutive failures, rejects for ``reset_s``, then lets calls through
    half-open; a call's result is judged by the state it STARTED in (pybreaker keeps
    that state object), so a late failure of a call begun closed opens it again."""

    def __init__(self, failures: int, reset_s: float) -> None:
        self.fail_max = failures
        self.reset_s = reset_s
        self.state = CLOSED
        self.counter = 0
        self.opened_at = -math.inf

    def admit(self, now: float) -> int | None:
        """The state a call starts in, or None: rejected without a call."""
        if self.state == OPEN:
            if now < self.opened_at + self.reset_s:
                return None
            self.state = HALF_OPEN
        return self.state

    def record(self, started_in: int, ok: bool, now: float) -> None:
        if ok:
            self.counter = 0
            if started_in == HALF_OPEN:
                self.state = CLOSED
            return
        self.counter += 1
        if started_in == HALF_OPEN or self.counter >= self.fail_max:
            self.state = OPEN
            self.opened_at = now


class Stage(Server):
    """One http_stage service of the chain."""

    def __init__(self, env: simpy.Environment, spec: ServiceSpec, calibration: Calibration,
                 ledger: Counts, seed: int, service: str, timers: Timers,
                 queued: Seconds, into: Link) -> None:
        super().__init__(env, spec, calibration, ledger, seed, service, timers, queued, into)
        knobs = spec.knobs
        self.downstream: Stage | None = None
        self.out: Link | None = None
        self.timeout_s = knobs.timeout_s
        self.retries = knobs.retries
        self.backoff_s = knobs.retry_backoff_ms / 1000.0
        self.breaker = (Breaker(knobs.breaker_failures, knobs.breaker_reset_s)
                        if knobs.breaker_failures else None)

    def serve(self, visit: Visit) -> Step:
        env = self.env
        pool = self.pool
        if visit.call.route.upstream:
            if not (yield from self.arrive(visit)):
                return None
        elif (self.alive and self.admitted < self.limit and pool.busy < pool.capacity
              and not pool.waiting and not self.paused):  # admit(), its fast path inline
            self.admitted += 1
            pool.busy += 1
            self.counters["received"] += 1
        else:
            state = self.admit(visit)
            if state == WAIT:
                if not (yield from self.wait_worker(visit)):
                    return None
            elif state == GONE:
                return None
        if self.chaos.fault is not None and (injected := self.chaos.check(ORDERS)) \
                is not None:
            return self.injected(visit, injected)
        deadline = visit.deadline
        if deadline is not None and deadline - env.now < self.reserve_s:
            self.counters["shed"] += 1
            return self.reply(visit, 504)
        if not (yield from self.spend(visit)):
            return None
        self.ledger[visit.order] += 1
        if self.downstream is None:
            self.counters["ok"] += 1
            return self.reply(visit, 200)
        return self.attempt(visit)

    def attempt(self, visit: Visit) -> Step | None:
        """One attempt at the downstream call (or its refusal before any call)."""
        now = self.env.now
        deadline = visit.deadline
        timeout, regular = self.timeout_s, True
        if deadline is not None:
            left = deadline - now
            if left <= 0:
                self.counters["shed"] += 1  # DeadlinePassed: no call, no breaker failure, no retry
                return self.reply(visit, 504)
            if left < timeout:
                timeout, regular = max(0.001, left), False
        breaker = self.breaker
        if breaker is not None:
            state = breaker.admit(now)
            if state is None:
                self.counters["breaker_rejections"] += 1
                return self.reply(visit, 503)
            visit.breaker_state = state
        visit.attempts += 1
        self.counters["downstream_calls"] += 1
        down, out = self.downstream, self.out
        assert down is not None and out is not None
        call = Call(visit, out, visit.order, deadline)
        if out.down:
            return call.finish(REFUSED)
        if out.tracked:
            out.in_flight.add(call)
        self.timers.add(call, timeout, regular)
        return down.serve(Visit(down, visit.order, call,
                                deadline if down.honours_deadline else None))

    def answer(self, visit: Visit, outcome: int) -> Step | None:
        """The downstream call's outcome: answer, retry, or fail the caller."""
        if self.life != visit.life:
            return None  # the service died with the request in it
        if self.paused:
            return self._thawed(visit, outcome)
        ok = outcome == 200
        if self.breaker is not None:
            self.breaker.record(visit.breaker_state, ok, self.env.now)
        if ok:
            self.counters["ok"] += 1
            return self.reply(visit, 200)
        if outcome == TIMEOUT:
            self.counters["downstream_timeouts"] += 1
            status = 504
        else:
            self.counters["downstream_errors"] += 1
            status = 502
        if visit.attempts <= self.retries:
            self.counters["retries"] += 1
            wait = self.backoff(visit.attempts)
            if wait:
                return self._retry_later(visit, wait)
            return self.attempt(visit)
        return self.reply(visit, status)

    def _thawed(self, visit: Visit, outcome: int) -> Step:
        yield from self.thaw()
        return self.answer(visit, outcome)

    def _retry_later(self, visit: Visit, wait: float) -> Step:
        env = self.env
        started, pauses = env.now, self.pauses
        yield env.timeout(wait)
        if self.pauses != pauses or self.paused:
            yield from self.make_up(started, wait)
        if self.life != visit.life:
            return None
        return self.attempt(visit)

    def backoff(self, attempts: int) -> float:
        """tenacity's wait after the ``attempts``-th failure: none, exponential from the
        base (capped at 10x), or uniform in [0, that] with jitter."""
        base = self.backoff_s
        if not base:
            return 0.0
        high = min(base * 2 ** (attempts - 1), 10 * base)
        return self.rng.uniform(0, high) if self.knobs.retry_jitter else high


class SyncChain:
    """The whole chain: its stages from the entry down, and its links."""

    def __init__(self, env: simpy.Environment, topology: Topology, calibration: Calibration,
                 timers: Timers, ledgers: dict[str, Counts], queued: Seconds,
                 seed: int, service: str, link_rng: random.Random) -> None:
        self.env = env
        self.topology = topology
        self.links: dict[str, Link] = {}
        names = [topology.entry]
        while (link := topology.downstream(names[-1])) is not None:
            names.append(link.target)
        self.stages: list[Stage] = []
        into = Link(env, f"user-{topology.entry}", link_rng)
        for name in names:
            spec = topology.service(name)
            stage = Stage(env, spec, calibration, ledgers[name], seed, service, timers,
                          queued, into)
            if self.stages:
                previous = self.stages[-1]
                previous.downstream, previous.out = stage, into
            self.stages.append(stage)
            link = topology.downstream(name)
            if link is not None:
                into = Link(env, link.name, link_rng)
                into.on_cut.append(self._cut)
                self.links[link.name] = into
        self.entry: Server = self.stages[0]
        self.services: dict[str, Service] = {s.name: s for s in self.stages}

    def _cut(self, link: Link) -> None:
        """Open connections drop: every call in flight over the link fails at once."""
        for call in list(link.in_flight):
            spawn(self.env, call.finish(RESET))

    def drained(self) -> bool:
        return True

    def sample(self, t: float, samples: Samples) -> None:
        for stage in self.stages:
            source = f"service:{stage.name}"
            for metric, value in (*stage.gauges().items(), *stage.counters.items()):
                samples.add(t, source, metric, value)
