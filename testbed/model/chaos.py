"""Application faults inside a modelled service, as testbed/services/chaos.py keeps them.

One active fault per service (error_rate, fail_first or route), checked once per
business request (sync stage, gateway: ``POST /orders``) or per consumed message (a
consumer: method ``CONSUME`` on ``/<queue>``). error_rate draws from
``random.Random(seed)``, made afresh when the fault is set, one draw per check in the
order the service checks: the real service's draws, so a prediction that replays them
(E13) and the model agree. The fault lives in the process's memory: a kill clears it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from testbed.services.chaos import DEFAULT_SEED, DEFAULT_STATUS, AppFault


@dataclass(frozen=True)
class AppFaultSpec:
    """What an application fault asks for (checked by testbed.services.chaos rules)."""

    mode: str  # error_rate | fail_first | route
    status: int
    p: float | None = None
    n: int | None = None
    route: str | None = None
    seed: int = DEFAULT_SEED


class Chaos:
    """The active application fault of one modelled service (None: healthy)."""

    def __init__(self) -> None:
        self.fault: AppFaultSpec | None = None
        self._rng = random.Random(DEFAULT_SEED)
        self.injected = 0

    @property
    def active(self) -> bool:
        return self.fault is not None

    def set(self, fault: AppFaultSpec) -> None:
        """Make ``fault`` the active one: counting and draws start afresh."""
        self.fault = fault
        self._rng = random.Random(fault.seed)
        self.injected = 0

    def clear(self) -> None:
        self.fault = None
        self.injected = 0

    def check(self, path: str) -> int | None:
        """The injected status for one business request to ``path``, or None."""
        fault = self.fault
        if fault is None:
            return None
        if fault.mode == "route":
            hit = path == fault.route
        elif fault.mode == "error_rate":
            assert fault.p is not None
            hit = self._rng.random() < fault.p
        else:
            assert fault.n is not None
            hit = self.injected < fault.n
        if not hit:
            return None
        self.injected += 1
        return fault.status


def spec_of(mode: str, params: dict[str, object]) -> AppFaultSpec:
    """The spec from a fault's parameters, validated as the real service validates them
    (testbed.services.chaos.AppFault raises ValueError naming the field)."""
    real = AppFault.from_json({"mode": mode, **params})
    status = real.status if real.status is not None else DEFAULT_STATUS[mode]
    return AppFaultSpec(mode, status, real.p, real.n, real.route,
                        real.seed if real.seed is not None else DEFAULT_SEED)
