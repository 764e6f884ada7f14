"""The load generator's side: when orders are due, who sends them, how long users wait.

Arrivals "even" are the load profile's own schedule (LoadProfile.offsets: evenly spaced
within each step), "poisson" a Poisson process of each step's rate (for checks
against queueing theory). As testbed/load/engine.py does it: LOAD_WORKERS workers,
each sends the next due order when free (a busy generator sends late: t_sent shows
it), carries the user's deadline (sent + timeout) and waits at most ``timeout_s``,
then gives up ("timeout": no latency, waited = the timeout).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Generator, Sequence
from typing import Any

import numpy as np
import simpy

from testbed.load.profile import LoadProfile, Step
from testbed.model import flow
from testbed.model.errors import ModelError
from testbed.model.flow import Call
from testbed.model.pool import Pool
from testbed.model.record import counts, times
from testbed.model.server import Server
from testbed.model.timers import Timers

LOAD_WORKERS = 64  # testbed.load.LoadGenerator's default
ARRIVALS = ("even", "poisson")


def steps_of(profile: LoadProfile | Sequence[Step]) -> tuple[Step, ...]:
    """The steps of a profile. A plain sequence of Steps is checked like a profile but
    not bounded like one: the model can ask what an hour at 1,000/s would do."""
    if isinstance(profile, LoadProfile):
        return profile.steps
    steps = tuple(profile)
    if not steps:
        raise ModelError("profile: no steps; give a LoadProfile or at least one Step")
    for step in steps:
        if not isinstance(step, Step) or not step.duration_s > 0 or not step.rate >= 0:
            raise ModelError(f"profile: {step!r} is not a step of duration > 0 and rate "
                             ">= 0; build it with testbed.load.Step(duration_s, rate)")
    return steps


def arrival_times(steps: tuple[Step, ...], arrivals: str,
                  rng: np.random.Generator) -> np.ndarray:
    """Scheduled send times (s from the start), in order."""
    if arrivals not in ARRIVALS:
        raise ModelError(f"arrivals={arrivals!r}; use one of {', '.join(ARRIVALS)}")
    parts = []
    start = 0.0
    for step in steps:
        if arrivals == "even":
            n = round(step.rate * step.duration_s)  # exactly LoadProfile.offsets
            if n:
                parts.append(start + np.arange(n) / step.rate)
        elif step.rate > 0:
            expected = step.rate * step.duration_s
            gaps = rng.exponential(1.0 / step.rate, int(expected + 10 * expected ** 0.5 + 20))
            times = start + np.cumsum(gaps)
            while times[-1] < start + step.duration_s:  # (practically never)
                more = times[-1] + np.cumsum(rng.exponential(1.0 / step.rate, len(gaps)))
                times = np.concatenate([times, more])
            parts.append(times[times < start + step.duration_s])
        start += step.duration_s
    return np.concatenate(parts) if parts else np.empty(0)


class Users:
    """Sends every order on schedule and records what each user saw."""

    def __init__(self, env: simpy.Environment, offsets: np.ndarray, timeout_s: float,
                 entry: Server, timers: Timers, workers: int | None) -> None:
        self.env = env
        self.offsets = offsets
        self.timeout_s = timeout_s
        self.entry = entry
        self.timers = timers
        n = len(offsets)
        self.sent = times(n, math.nan)
        self.done = times(n, math.nan)
        self.outcome = counts(n)  # HTTP status, or TIMEOUT / REFUSED / RESET
        self.workers = Pool(env, workers if workers is not None else max(1, n))
        self.finished = 0
        self.all_done = env.event()
        if n == 0:
            self.all_done.succeed()
        env.process(self._arrivals())

    def _arrivals(self) -> Generator[simpy.Event, Any, None]:
        env = self.env
        process = env.process
        order = self._order
        for index, at in enumerate(array("d", self.offsets.tobytes())):
            if at > env.now:
                yield env.timeout(at - env.now)
            process(order(index))

    def _order(self, index: int) -> Generator[simpy.Event, Any, None]:
        env = self.env
        ticket = self.workers.acquire()
        if ticket is not None:
            yield ticket
        now = self.sent[index] = env.now
        entry = self.entry
        call = Call(self, entry.into, index, now + self.timeout_s)
        if entry.into.tracked:
            entry.into.in_flight.add(call)
        self.timers.add(call, self.timeout_s)
        step: flow.Step | None = entry.visit(index, call)
        while step is not None:  # drive(), inline: one generator less per resume
            step = yield from step

    def answer(self, call: Call, outcome: int) -> None:
        index = call.order
        self.done[index] = self.env.now
        self.outcome[index] = outcome
        self.workers.release()
        self.finished += 1
        if self.finished == len(self.offsets):
            self.all_done.succeed()
