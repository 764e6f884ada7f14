"""Faults as inject/remove pairs whose removal always runs, and that prove they worked.

A fault is used in a with-block (``with injected(fault, timeline):``) or on a
Schedule. After injecting, the fault checks its effect from the caller's side
(``verify``); an injection that did not take effect raises FaultNotEffective instead of
letting an experiment pass for the wrong reason. Removal runs on success, assertion
failure, exception and Ctrl-C; a removal that fails raises FaultRemovalError, loudly.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from testbed.errors import TestbedError
from testbed.faults.timeline import Timeline


class FaultError(TestbedError):
    """A fault could not be built, injected, verified or removed."""


class FaultSpecError(FaultError, ValueError):
    """A fault was asked for with an unknown name, target or an impossible parameter."""


def seconds(what: str, value: object, *, allow_zero: bool = False, also: str = "") -> float:
    """A finite duration in seconds (a bool, text or nan is a mistake, not a number)."""
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if number is None or not math.isfinite(number) or number < 0 or (
            number == 0 and not allow_zero):
        bound = "0 s or more" if allow_zero else "more than 0 s"
        raise FaultSpecError(f"{what}={value!r}; give a finite number of seconds, {bound}"
                             + (f" {also}" if also else ""))
    return float(number)


class FaultNotEffective(FaultError):
    """The fault was injected but its effect was not seen from the caller's side."""


class FaultRemovalError(FaultError):
    """A fault could not be removed: the system may still be degraded."""


@dataclass(frozen=True)
class Verification:
    """What the caller's-side check saw after an injection."""

    ok: bool
    observed: str


class Fault(abc.ABC):
    """One fault on one target. Subclasses validate their parameters in __init__."""

    kind: str = "fault"

    def __init__(self, target: str) -> None:
        self.target = target
        self.active = False

    @abc.abstractmethod
    def inject(self) -> None: ...

    @abc.abstractmethod
    def remove(self) -> None: ...

    def verify(self) -> Verification:
        """Check the effect from the caller's side; override where it can be seen."""
        return Verification(True, "no caller-side check for this fault")

    def describe(self) -> str:
        return f"{self.kind} on {self.target}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


def inject_and_verify(fault: Fault, timeline: Timeline, verify: bool = True) -> None:
    """Inject, record, and check the effect; undo and raise if any step fails."""
    try:
        fault.inject()
    except BaseException as exc:
        timeline.record("inject_failed", fault.kind, fault.target, str(exc))
        remove_recorded(fault, timeline, after_failure=True)
        raise
    fault.active = True
    timeline.record("inject", fault.kind, fault.target, fault.describe())
    if not verify:
        return
    try:
        check = fault.verify()
    except BaseException:
        remove_recorded(fault, timeline, after_failure=True)
        raise
    if not check.ok:
        timeline.record("verify_failed", fault.kind, fault.target, check.observed)
        remove_recorded(fault, timeline, after_failure=True)
        raise FaultNotEffective(f"{fault.describe()} was injected but had no visible effect: "
                                f"{check.observed}")
    timeline.record("verify", fault.kind, fault.target, check.observed)


def remove_recorded(fault: Fault, timeline: Timeline, after_failure: bool = False) -> None:
    """Remove and record; a failed removal is recorded and raised, never swallowed."""
    try:
        fault.remove()
    except BaseException as exc:
        timeline.record("remove_failed", fault.kind, fault.target, str(exc))
        raise FaultRemovalError(f"could not remove {fault.describe()}: {exc}. The system "
                                "may still be degraded; `testbed down`/`gc` clears it") from exc
    fault.active = False
    if not after_failure:
        timeline.record("remove", fault.kind, fault.target)


@contextmanager
def injected(fault: Fault, timeline: Timeline | None = None,
             verify: bool = True) -> Iterator[Fault]:
    """Inject for the duration of the block; removal is guaranteed."""
    timeline = timeline if timeline is not None else Timeline()
    inject_and_verify(fault, timeline, verify)
    try:
        yield fault
    finally:
        remove_recorded(fault, timeline)
