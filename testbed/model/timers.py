"""When callers give up: every open call's timeout, watched by one SimPy process.

A timeout event per call would cost two heap operations per hop, kept in the heap long
after the call returned (most do). Here calls with the same timeout wait in one FIFO
(their deadlines come in order), calls with a shortened one (a deadline's remainder) in
a heap; one watcher sleeps until the earliest deadline of a call still open, and skips
the calls that returned meanwhile. In a healthy run it wakes about once per timeout
length, whatever the rate.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Generator
from typing import Any

import simpy

from testbed.model.flow import TIMEOUT, Call, spawn

_EPS = 1e-9


class Timers:
    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self._fifo: dict[float, deque[tuple[float, Call]]] = {}
        self._heap: list[tuple[float, int, Call]] = []
        self._seq = itertools.count()
        self._wake_at = math.inf
        self._idle: simpy.Event | None = None
        self._process = env.process(self._watch())

    def add(self, call: Call, seconds: float, regular: bool = True) -> None:
        """Give ``call`` up ``seconds`` from now, unless it is done by then. ``regular``:
        a timeout many calls share (a knob), so its FIFO stays in deadline order."""
        at = self.env.now + seconds
        if regular:
            queue = self._fifo.get(seconds)
            if queue is None:
                queue = self._fifo[seconds] = deque()
            queue.append((at, call))
        else:
            heapq.heappush(self._heap, (at, next(self._seq), call))
        if at < self._wake_at:
            self._wake(at)

    def _wake(self, at: float) -> None:
        self._wake_at = at
        if self._idle is not None:
            idle, self._idle = self._idle, None
            idle.succeed()
        elif self.env.active_process is not self._process:
            self._process.interrupt()

    def _watch(self) -> Generator[simpy.Event, Any, None]:
        while True:
            at = self._expire()
            self._wake_at = at
            try:
                if at == math.inf:
                    self._idle = self.env.event()
                    yield self._idle
                else:
                    yield self.env.timeout(max(0.0, at - self.env.now))
            except simpy.Interrupt:
                pass

    def _expire(self) -> float:
        """Time out every open call that is due; the next deadline of one still open
        (read after the expiries, which may have opened calls of their own)."""
        now = self.env.now + _EPS
        for queue in self._fifo.values():
            while queue:
                at, call = queue[0]
                if not call.done and at > now:
                    break
                queue.popleft()
                if not call.done:
                    spawn(self.env, call.finish(TIMEOUT))
        heap = self._heap
        while heap:
            at, _, call = heap[0]
            if not call.done and at > now:
                break
            heapq.heappop(heap)
            if not call.done:
                spawn(self.env, call.finish(TIMEOUT))
        fronts = [queue[0][0] for queue in self._fifo.values() if queue]
        if heap:
            fronts.append(heap[0][0])
        return min(fronts, default=math.inf)
