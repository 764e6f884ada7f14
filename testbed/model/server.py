"""An HTTP service as waitress runs it: ``pool_size`` worker threads behind an accept
queue, the shared front half of a sync hop and of the async gateway.

A request crosses the caller's link (its upstream latency), finds the service dead
(refused), or is accepted and waits, first come first served, for a worker. Waitress
accepts connections up to ``max(1000, 2 x accept_backlog)`` and the kernel holds
``accept_backlog`` more; beyond that a connect is not answered, so the caller waits
out its timeout. (Waitress counts connections, the model counts requests: the same
while every caller keeps one connection per waiting call.) The worker is held for the
hop's HTTP cost plus the work, and, for a sync hop, for the downstream call. The
answer crosses back over the link: instantly, or with its downstream latency.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import simpy

from testbed.model.calibration import Calibration
from testbed.model.flow import REFUSED, RESET, Call, Step, spawn
from testbed.model.links import Link
from testbed.model.pool import Pool
from testbed.model.record import Counts, Seconds
from testbed.model.service import Service
from testbed.model.timers import Timers
from testbed.topology.model import ServiceSpec

ADMITTED, WAIT, GONE = 0, 1, 2  # what admission found: a worker, a queue, no service
ORDERS = "/orders"  # the business route an application fault is checked on


class Visit:
    """One request being served by one service (one attempt of its caller)."""

    __slots__ = ("attempts", "breaker_state", "call", "deadline", "life", "order", "server")

    def __init__(self, server: Server, order: int, call: Call,
                 deadline: float | None) -> None:
        self.server = server
        self.order = order
        self.call = call  # the call that brought it: its answer goes there
        self.deadline = deadline  # the user's deadline, where this service honours it
        self.life = server.life
        self.attempts = 0  # calls made downstream so far
        self.breaker_state = 0

    def answer(self, call: Call, outcome: int) -> Step | None:
        return self.server.answer(self, outcome)


class Server(Service):
    def __init__(self, env: simpy.Environment, spec: ServiceSpec, calibration: Calibration,
                 ledger: Counts, seed: int, service: str, timers: Timers,
                 queued: Seconds, into: Link) -> None:
        super().__init__(env, spec, calibration, ledger, seed, service)
        knobs = spec.knobs
        self.timers = timers
        self.queued = queued  # seconds each order waited for a worker (model-only column)
        self.into = into  # the link its callers reach it over
        self.pool = Pool(env, knobs.pool_size)
        self.limit = max(1000, 2 * knobs.accept_backlog) + knobs.accept_backlog
        self.admitted = 0  # requests waiting for or holding a worker
        self.hop_s = calibration.http_hop_ms / 1000.0
        self.reserve_s = knobs.deadline_reserve_ms / 1000.0
        self.honours_deadline = knobs.deadline

    def visit(self, order: int, call: Call) -> Step:
        """Serve ``call`` (its deadline read only if this service honours deadlines)."""
        return self.serve(Visit(self, order, call,
                                call.deadline if self.honours_deadline else None))

    def serve(self, visit: Visit) -> Step:
        raise NotImplementedError

    def answer(self, visit: Visit, outcome: int) -> Step | None:
        """What the service does with the answer of a call it made (sync hops only)."""
        raise NotImplementedError

    # -- the front half, fast path first -----------------------------------------------

    def admit(self, visit: Visit) -> int:
        """Take a worker now if one is free (ADMITTED), else queue for one (WAIT: then
        ``yield from wait_worker``) or find no service (GONE: the caller is answered)."""
        if not self.alive:
            spawn(self.env, visit.call.finish(REFUSED))
            return GONE
        if self.admitted >= self.limit:
            return GONE  # the connect is not answered: the caller's timeout ends it
        self.admitted += 1
        visit.life = self.life
        if self.pool.busy < self.pool.capacity and not self.pool.waiting \
                and not self.paused:
            self.pool.busy += 1
            self.counters["received"] += 1
            return ADMITTED
        return WAIT

    def wait_worker(self, visit: Visit) -> Generator[simpy.Event, Any, bool]:
        """Queue for a worker (and, paused, for the resume); False if the service died."""
        env = self.env
        life = visit.life
        ticket = self.pool.acquire()
        if ticket is not None:
            since = env.now
            yield ticket
            if self.life != life:
                return False
            self.queued[visit.order] += env.now - since
        if self.paused:
            yield from self.thaw()
            if self.life != life:
                return False
        self.counters["received"] += 1
        return True

    def spend(self, visit: Visit) -> Generator[simpy.Event, Any, bool]:
        """The hop's HTTP cost and the work, paused time made up; False if the service
        died meanwhile (the request is gone with it)."""
        work = self.work_s
        return (yield from self.hold(self.hop_s + (work if work is not None else self.work()),
                                     visit.life))

    def arrive(self, visit: Visit) -> Generator[simpy.Event, Any, bool]:
        """The front half: the request crosses the link (if slowed), takes a worker (now
        or queued); False if it found none (the caller is answered, or waits it out)."""
        call = visit.call
        if call.route.upstream:
            yield from call.route.cross("upstream", 0.0)
            if call.done:
                return False
        state = self.admit(visit)
        if state == WAIT:
            return (yield from self.wait_worker(visit))
        return state == ADMITTED

    def injected(self, visit: Visit, status: int) -> Step:
        """An application fault answers ``status`` before the handler runs: the hop's
        HTTP cost only, no work, no ledger; /stats counts injected_errors, not received."""
        self.counters["received"] -= 1
        self.counters["injected_errors"] += 1
        if not (yield from self.hold(self.hop_s, visit.life)):
            return None
        return self.reply(visit, status)

    def reply(self, visit: Visit, status: int) -> Step | None:
        """Answer the caller: the worker frees, the answer crosses the link."""
        if self.life != visit.life:
            return None
        pool = self.pool
        if pool.waiting:  # Pool.release(), inline
            pool.waiting.popleft().succeed()
        else:
            pool.busy -= 1
        self.admitted -= 1
        call = visit.call
        if call.route.downstream:
            return self._reply_late(call, status)
        return call.finish(status)

    def _reply_late(self, call: Call, status: int) -> Step:
        yield from call.route.cross("downstream", 0.0)
        return call.finish(status)

    def kill(self) -> None:
        """SIGKILL: every request in it is gone, its callers see the connection drop."""
        super().kill()
        self.pool = Pool(self.env, self.knobs.pool_size)
        self.admitted = 0
        for call in list(self.into.in_flight):
            spawn(self.env, call.finish(RESET))

    def gauges(self) -> dict[str, float]:
        busy = self.pool.busy if self.alive else 0
        return {"in_flight": busy, "saturation": round(busy / self.knobs.pool_size, 3),
                "queued": self.pool.queued if self.alive else 0}
