"""When each request is due: constant, stepped and bursty arrival schedules.

A profile is turned into an array of offsets (seconds from the start) before the run,
so the generator only has to keep time, and a run can be replayed exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from testbed.errors import TestbedError

MAX_REQUESTS = 1_000_000  # every load is bounded in count...
MAX_DURATION_S = 3600.0  # ...and in time


class LoadSpecError(TestbedError, ValueError):
    """A load profile asked for something impossible or unbounded."""


@dataclass(frozen=True)
class Step:
    """``rate`` requests per second for ``duration_s`` seconds (rate 0 = a pause)."""

    duration_s: float
    rate: float


@dataclass(frozen=True)
class LoadProfile:
    """A piecewise-constant arrival rate: evenly spaced requests within each step."""

    steps: tuple[Step, ...]
    # Orders carry a customer key, order n the key "key-<n mod keys>" (0: none, the key
    # is the order id). On Kafka it is the message key, so it decides the partition: a
    # key's orders share one, and keep their order in it.
    keys: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.keys, bool) or not isinstance(self.keys, int) or self.keys < 0:
            raise LoadSpecError(f"keys={self.keys!r}: give a whole number of keys, or 0 "
                                "for none")
        if not self.steps:
            raise LoadSpecError("a load profile needs at least one step")
        for step in self.steps:
            if not step.duration_s > 0 or step.rate < 0:
                raise LoadSpecError(f"impossible step {step}: duration must be > 0 and "
                                    "rate >= 0")
        if self.duration_s > MAX_DURATION_S:
            raise LoadSpecError(f"{self.duration_s:.0f} s of load is more than the "
                                f"{MAX_DURATION_S:.0f} s limit")
        if self.count > MAX_REQUESTS:
            raise LoadSpecError(f"{self.count} requests is more than the {MAX_REQUESTS} limit")

    def key_of(self, index: int) -> str | None:
        """The customer key of order ``index`` (None without keys)."""
        return f"key-{index % self.keys}" if self.keys else None

    @property
    def duration_s(self) -> float:
        return sum(step.duration_s for step in self.steps)

    @property
    def count(self) -> int:
        return int(sum(round(step.rate * step.duration_s) for step in self.steps))

    def offsets(self) -> np.ndarray:
        """The scheduled send time of every request, in seconds from the start."""
        parts = []
        start = 0.0
        for step in self.steps:
            n = round(step.rate * step.duration_s)
            if n:
                parts.append(start + np.arange(n) / step.rate)
            start += step.duration_s
        return np.concatenate(parts) if parts else np.empty(0)


def constant(rate: float, duration_s: float, keys: int = 0) -> LoadProfile:
    return LoadProfile((Step(duration_s, rate),), keys)


def stepped(*steps: tuple[float, float], keys: int = 0) -> LoadProfile:
    """``stepped((10, 20), (5, 80))``: 20/s for 10 s, then 80/s for 5 s."""
    return LoadProfile(tuple(Step(d, r) for d, r in steps), keys)


def bursty(base_rate: float, burst_rate: float, period_s: float, burst_s: float,
           duration_s: float) -> LoadProfile:
    """``base_rate`` with a burst of ``burst_rate`` for ``burst_s`` every ``period_s``."""
    if not 0 < burst_s < period_s:
        raise LoadSpecError("a burst must be shorter than its period and longer than 0")
    steps = []
    elapsed = 0.0
    while elapsed < duration_s - 1e-9:
        quiet = min(period_s - burst_s, duration_s - elapsed)
        steps.append(Step(quiet, base_rate))
        elapsed += quiet
        if elapsed < duration_s - 1e-9:
            loud = min(burst_s, duration_s - elapsed)
            steps.append(Step(loud, burst_rate))
            elapsed += loud
    return LoadProfile(tuple(steps))
