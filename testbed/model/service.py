"""What every modelled service has: a life (killed, paused), counters, a ledger and
its service times.

Service times: with ``service="as_knobs"`` the very draws the real service makes
(testbed.services.work: work_ms plus an exponential tail, seeded by the knobs' seed and
the service's name, one sequence for all its workers and replicas), so a model run and
a real run of one topology spend the same work on the same orders in the same order.
``service="exponential"`` draws exponential times of the same mean (work_ms +
work_jitter_ms) instead, from the model's seed: for checks against M/M/c theory.

A pause (SIGSTOP) freezes the service: time it was spending when the pause came is
spent that much later (``make_up``, from the pause intervals); a step resumed by
something outside (an answer, a timer) first waits for the resume (``thaw``).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Generator
from typing import Any

import simpy

from testbed.model.calibration import Calibration
from testbed.model.chaos import Chaos
from testbed.model.record import Counts
from testbed.services.work import draw_seconds, seeded_generator
from testbed.topology.model import ServiceSpec

_EPS = 1e-12


def work_source(spec: ServiceSpec, service: str, seed: int) -> Callable[[], float]:
    """A function giving the next service time (s) of ``spec``'s service."""
    knobs = spec.knobs
    if service == "exponential":
        mean = (knobs.work_ms + knobs.work_jitter_ms) / 1000.0
        if not mean:
            return lambda: 0.0
        rng = random.Random(f"model:{seed}:work:{spec.name}")
        rate = 1.0 / mean
        return lambda: rng.expovariate(rate)
    if not knobs.work_jitter_ms:
        constant = knobs.work_ms / 1000.0
        return lambda: constant
    real = seeded_generator(knobs, spec.name)
    return lambda: draw_seconds(knobs, real)


class Service:
    def __init__(self, env: simpy.Environment, spec: ServiceSpec, calibration: Calibration,
                 ledger: Counts, seed: int, service: str) -> None:
        self.env = env
        self.spec = spec
        self.name = spec.name
        self.knobs = spec.knobs
        self.calibration = calibration
        self.ledger = ledger  # times each order (by index) was processed here
        self.work = work_source(spec, service, seed)
        constant = service == "as_knobs" and not spec.knobs.work_jitter_ms
        self.work_s = spec.knobs.work_ms / 1000.0 if constant else None  # no draw needed
        self.rng = random.Random(f"model:{seed}:service:{spec.name}")  # retry jitter etc.
        self.counters: defaultdict[str, int] = defaultdict(int)  # as /stats counts them
        self.chaos = Chaos()  # an application fault, in the process's memory
        self.crash_point: str | None = None  # armed by crash_at: the next order there dies
        self.crashed: simpy.Event | None = None  # succeeds when the armed point is reached
        self.alive = True
        self.life = 0  # +1 at every kill: a step of an earlier life ends where it is
        self.paused = False
        self.pauses = 0  # pauses so far: a step that saw this change was frozen
        self._intervals: list[tuple[float, float]] = []  # past pauses (start, end)
        self._paused_at = 0.0
        self._resumed = env.event()

    # -- pause ----------------------------------------------------------------------

    def frozen_in(self, start: float, end: float) -> float:
        """Seconds of [start, end] the service spent paused."""
        spans = self._intervals
        if self.paused:
            spans = [*spans, (self._paused_at, self.env.now)]
        return sum(max(0.0, min(b, end) - max(a, start)) for a, b in spans)

    def pause(self) -> None:
        if self.paused or not self.alive:
            return
        self.paused = True
        self.pauses += 1
        self._paused_at = self.env.now
        self._resumed = self.env.event()

    def resume(self) -> None:
        if not self.paused:
            return
        self._intervals.append((self._paused_at, self.env.now))
        self.paused = False
        self._resumed.succeed()

    def thaw(self) -> Generator[simpy.Event, Any, None]:
        """Wait while the service is paused."""
        while self.paused:
            yield self._resumed

    def make_up(self, started: float, seconds: float) -> Generator[simpy.Event, Any, None]:
        """The rest of ``seconds`` of the service's own time begun at ``started``: time
        spent paused since does not count."""
        env = self.env
        remaining = seconds - ((env.now - started) - self.frozen_in(started, env.now))
        while True:
            while self.paused:
                yield self._resumed
            if remaining <= _EPS:
                return
            t = env.now
            yield env.timeout(remaining)
            remaining -= (env.now - t) - self.frozen_in(t, env.now)

    def hold(self, seconds: float, life: int) -> Generator[simpy.Event, Any, bool]:
        """Spend ``seconds`` of the service's own time (paused time made up); False if
        it died meanwhile (``life``: the one the step began in)."""
        if seconds:
            env = self.env
            started, pauses = env.now, self.pauses
            yield env.timeout(seconds)
            if self.pauses != pauses or self.paused:
                yield from self.make_up(started, seconds)
        return self.life == life

    # -- kill -----------------------------------------------------------------------

    def kill(self) -> None:
        self.alive = False
        self.life += 1
        self.chaos.clear()  # the fault was in the process's memory
        if self.paused:  # SIGKILL ends a stopped process too
            self.resume()

    def revive(self) -> None:
        """Started again: a new process, whose /stats counts from zero."""
        self.alive = True
        self.counters.clear()

    # -- crash points -----------------------------------------------------------------

    def arm(self, point: str) -> simpy.Event:
        """Arm a crash point (PUT /admin/crash); the event succeeds when an order
        reaches it and the process dies there."""
        self.crash_point = point
        self.crashed = self.env.event()
        return self.crashed

    def disarm(self) -> None:
        self.crash_point = None
        self.crashed = None

    def reached(self, point: str) -> bool:
        """Called at ``point``: True (and the service is dead) if it was armed."""
        if self.crash_point != point:
            return False
        crashed = self.crashed
        self.disarm()
        self.kill()  # os._exit: no cleanup, no ack, no flush
        if crashed is not None:
            crashed.succeed()
        return True

    # -- what it shows --------------------------------------------------------------

    def gauges(self) -> dict[str, float]:
        """in_flight and saturation, as /stats reports them (plus model-only gauges)."""
        raise NotImplementedError
