"""Simulated service time: ``work_ms`` plus an exponential tail of mean ``work_jitter_ms``,
drawn from a generator seeded by the knobs' seed and the service's name.

One place for the draw, so a service (every replica of it shares one sequence) and an
experiment predicting from the very draws the service will make cannot drift apart.
"""

from __future__ import annotations

import random
import threading

from testbed.topology.model import Knobs


def seeded_generator(knobs: Knobs, service: str) -> random.Random:
    return random.Random(f"{knobs.seed}:{service}")


def draw_seconds(knobs: Knobs, rng: random.Random) -> float:
    seconds = knobs.work_ms / 1000.0
    if knobs.work_jitter_ms:
        seconds += rng.expovariate(1000.0 / knobs.work_jitter_ms)
    return seconds


def service_times(knobs: Knobs, service: str, count: int) -> list[float]:
    """The first ``count`` service times (s) the service will draw, in order."""
    rng = seeded_generator(knobs, service)
    return [draw_seconds(knobs, rng) for _ in range(count)]


class ServiceTime:
    """The service's own sequence of draws, safe to share between threads."""

    def __init__(self, knobs: Knobs, service: str) -> None:
        self.knobs = knobs
        self._rng = seeded_generator(knobs, service)
        self._lock = threading.Lock()

    def next_seconds(self) -> float:
        with self._lock:
            return draw_seconds(self.knobs, self._rng)
