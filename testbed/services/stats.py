"""Counters and in-flight tracking a service exposes on /stats."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Stats:
    def __init__(self, name: str, role: str, pool_size: int) -> None:
        self.name = name
        self.role = role
        self.pool_size = pool_size
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._counters: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0

    def count(self, key: str, amount: int = 1) -> None:
        with self._lock:
            self._counters[key] += amount

    @contextmanager
    def busy(self) -> Iterator[None]:
        """Mark one request as occupying a worker while the block runs."""
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            yield
        finally:
            with self._lock:
                self.in_flight -= 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "name": self.name,
                "role": self.role,
                "uptime_s": round(time.monotonic() - self.started, 3),
                "counters": dict(self._counters),
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "pool_size": self.pool_size,
                "saturation": round(self.in_flight / self.pool_size, 3),
            }
