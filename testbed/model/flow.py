"""How a request moves through the model: steps in one SimPy process, a Call per hop.

An order walks down a sync chain and back up in ONE process: each step is a generator
that does its waiting (a worker, the work, a response crossing a link) and returns the
next step, so a hop costs no process of its own. A caller waits on a Call; when it
stops waiting (its timeout, a cut connection) the Call is finished at once and the
caller's side goes on in a new process, while the callee's side keeps going in the old
one and its late answer is dropped: the callee's work is wasted, as in the services.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, Protocol, TypeAlias

import simpy
from simpy.events import NORMAL

# An answer is an HTTP status (> 0) or one of these, when no HTTP response came back.
TIMEOUT = -1  # the caller gave up waiting
REFUSED = -2  # nothing listens (a cut link, a killed service)
RESET = -3  # the connection dropped while the call was in flight

Step: TypeAlias = Generator[simpy.Event, Any, "Step | None"]


def drive(step: Step | None) -> Generator[simpy.Event, Any, None]:
    """A process body: run each step, then the one it returns, until there is none."""
    while step is not None:
        step = yield from step


def spawn(env: simpy.Environment, step: Step | None) -> None:
    if step is not None:
        env.process(drive(step))


class Caller(Protocol):
    def answer(self, call: Call, outcome: int) -> Step | None:
        """What the caller does with the answer; runs in whichever process delivers it."""


class Route(Protocol):
    """What a Call travels over: a link (whose open calls a cut must fail)."""

    in_flight: set[Call]
    tracked: bool  # whether in_flight is kept (a cut or kill is planned)
    upstream: bool  # any latency on requests
    downstream: bool  # any latency on answers

    def cross(self, stream: str, base_s: float) -> Generator[simpy.Event, Any, None]: ...


class Call:
    """One attempt of a caller at a callee: the user's at the entry, or a hop's at the
    next. ``deadline`` is the user's (absolute, simulated seconds), passed on by hops
    that honour it; None where none travels."""

    __slots__ = ("caller", "deadline", "done", "order", "route")

    def __init__(self, caller: Caller, route: Route, order: int,
                 deadline: float | None) -> None:
        self.caller = caller
        self.route = route
        self.order = order
        self.deadline = deadline
        self.done = False

    def finish(self, outcome: int) -> Step | None:
        """The caller's next step with this answer; None if it has one already (a late
        answer after a timeout or a reset is dropped)."""
        if self.done:
            return None
        self.done = True
        route = self.route
        if route.tracked:
            route.in_flight.discard(self)
        return self.caller.answer(self, outcome)


class Later(simpy.Event):
    """An event that can also be succeeded at a later time, as a Timeout is: a process
    waiting idle is handed work and woken when that work is done, one event instead
    of a wake-up plus a timeout."""

    def succeed_in(self, delay: float) -> None:
        if self.triggered:
            raise RuntimeError(f"{self} has already been triggered")
        self._ok = True
        self._value = None
        self.env.schedule(self, NORMAL, delay)


class Gate:
    """A condition that holds processes until it lifts (a stalled handler, a memory
    alarm): ``closed`` while it holds; ``lifted`` succeeds when it next lifts."""

    __slots__ = ("closed", "env", "lifted")

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self.closed = False
        self.lifted: simpy.Event = env.event()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.lifted = self.env.event()

    def open(self) -> None:
        if self.closed:
            self.closed = False
            self.lifted.succeed()
