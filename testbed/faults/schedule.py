"""Faults on a schedule: inject at t, remove at t + d, several faults in one plan.

A single background thread walks the plan in time order. Leaving the with-block (or
calling stop) removes every fault still active, whatever happened meanwhile; errors
the thread met (a fault without effect, a failed removal) are raised there, loudly.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from types import TracebackType

from testbed.faults.base import (
    Fault,
    FaultError,
    inject_and_verify,
    remove_recorded,
    seconds,
)
from testbed.faults.timeline import Timeline


@dataclass(frozen=True)
class Planned:
    """One fault of a schedule: injected ``at`` seconds after start, for ``duration``."""

    fault: Fault
    at: float
    duration: float | None = None  # None: until the schedule stops

    def __post_init__(self) -> None:
        seconds(f"schedule of {self.fault.describe()}: at", self.at, allow_zero=True)
        if self.duration is not None:
            seconds(f"schedule of {self.fault.describe()}: duration", self.duration,
                    also="(or None: until the schedule stops)")


class Schedule:
    def __init__(self, plan: list[Planned], timeline: Timeline | None = None,
                 verify: bool = True) -> None:
        self.plan = list(plan)
        self.timeline = timeline if timeline is not None else Timeline()
        self.verify = verify
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._active: list[Fault] = []
        self._lock = threading.Lock()

    def _steps(self) -> list[tuple[float, int, str, Fault]]:
        steps = []
        for index, item in enumerate(self.plan):
            steps.append((item.at, index, "inject", item.fault))
            if item.duration is not None:
                steps.append((item.at + item.duration, index, "remove", item.fault))
        return sorted(steps, key=lambda s: (s[0], s[2] == "inject"))

    def _run(self, start: float) -> None:
        for at, _, action, fault in self._steps():
            if self._stop.wait(max(0.0, start + at - time.monotonic())):
                return
            try:
                with self._lock:
                    if action == "inject":
                        inject_and_verify(fault, self.timeline, self.verify)
                        self._active.append(fault)
                    elif fault in self._active:
                        self._active.remove(fault)
                        remove_recorded(fault, self.timeline)
            except BaseException as exc:
                self.errors.append(exc)
                return

    def start(self, t0: float | None = None) -> Schedule:
        """Run the plan with its times counted from ``t0`` (monotonic; default: now),
        e.g. the load generator's start, so faults and load share one zero."""
        self._thread = threading.Thread(target=self._run,
                                        args=(time.monotonic() if t0 is None else t0,),
                                        name="fault-schedule", daemon=True)
        self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the plan has run to its end; True if it did."""
        assert self._thread is not None
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stop(self) -> None:
        """Stop the plan and remove every fault still active; raise what went wrong."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        with self._lock:
            for fault in reversed(self._active):
                try:
                    remove_recorded(fault, self.timeline)
                except FaultError as exc:
                    self.errors.append(exc)
            self._active.clear()
        if self.errors:
            raise self.errors[0]

    def __enter__(self) -> Schedule:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
