"""One monotonic timeline for everything that happens in an experiment.

Fault events now; requests and samples (issue 4) will share the same clock, so a
fault window can be laid over latency and queue depth without any clock conversion.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Literal

EventKind = Literal["inject", "verify", "remove", "inject_failed", "verify_failed",
                    "remove_failed"]


@dataclass(frozen=True)
class Event:
    """Something the testbed did or found, at a monotonic time in seconds."""

    t: float
    kind: EventKind
    fault: str
    target: str
    detail: str = ""


@dataclass
class Timeline:
    """A thread-safe, append-only list of events on the monotonic clock."""

    origin: float = field(default_factory=time.monotonic)
    events: list[Event] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, kind: EventKind, fault: str, target: str, detail: str = "") -> Event:
        event = Event(time.monotonic(), kind, fault, target, detail)
        with self._lock:
            self.events.append(event)
        return event

    def of_kind(self, kind: EventKind) -> list[Event]:
        with self._lock:
            return [e for e in self.events if e.kind == kind]

    def relative(self, event: Event) -> float:
        """Seconds since the timeline began."""
        return event.t - self.origin
