"""Application faults: a service answers 5xx by chance, for its first N requests, or on a route.

Toxiproxy works on TCP, so it cannot make a healthy service answer HTTP 500; these faults
live in the service itself. Every app built by ``make_app`` holds one AppChaos, switched
at runtime through ``PUT/GET/DELETE /admin/fault`` (services listen on 127.0.0.1 only).

Only business requests (not GET/HEAD/OPTIONS, not /admin/*) are subject to ``error_rate``
and ``fail_first``, so probes of /health, /stats and /ledger keep telling the truth about
the process. ``route`` fails one named path for every method, probes included when the
route names them, but never /admin/*: the fault must always stay removable. The state
is in memory: a restarted service comes back without a fault.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from testbed.services.reply import Environ, Handler, Reply, read_json

MODES = ("error_rate", "fail_first", "route")
DEFAULT_STATUS = {"error_rate": 500, "fail_first": 503, "route": 500}
DEFAULT_SEED = 1  # fixed, so two runs of the same experiment draw the same failures
ADMIN_PATH = "/admin/fault"
_PARAMETERS = {"error_rate": ("p", "status", "seed"), "fail_first": ("n", "status"),
               "route": ("route", "status")}
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


def _is_admin(path: str) -> bool:
    return path == "/admin" or path.startswith("/admin/")


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class AppFault:
    """One application fault; invalid ones cannot be built (ValueError names the field)."""

    mode: str
    status: int
    p: float | None = None  # error_rate: probability that a business request fails
    n: int | None = None  # fail_first: how many business requests fail
    route: str | None = None  # route: the path that fails, for any method
    seed: int | None = None  # error_rate: seed of the draws (DEFAULT_SEED when left out)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; use one of {', '.join(MODES)}")
        given = {k for k in ("p", "n", "route", "seed") if getattr(self, k) is not None}
        extra = sorted(given - set(_PARAMETERS[self.mode]))
        if extra:
            raise ValueError(f"{self.mode} takes {', '.join(_PARAMETERS[self.mode])}; "
                             f"not {', '.join(extra)}")
        if not _whole(self.status) or not 500 <= self.status <= 599:
            raise ValueError(f"status={self.status!r} is not a server error; give a whole "
                             "number from 500 to 599")
        getattr(self, f"_check_{self.mode}")()

    def _check_error_rate(self) -> None:
        p = self.p
        if p is None:
            raise ValueError("error_rate needs p= (a probability from 0 to 1)")
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p <= 1.0:
            raise ValueError(f"error_rate p={p!r} is not a probability; give a number "
                             "from 0 to 1")
        object.__setattr__(self, "p", float(p))
        if self.seed is None:
            object.__setattr__(self, "seed", DEFAULT_SEED)
        elif not _whole(self.seed):
            raise ValueError(f"error_rate seed={self.seed!r}; give a whole number")

    def _check_fail_first(self) -> None:
        if self.n is None:
            raise ValueError("fail_first needs n= (how many requests fail, 1 or more)")
        if not _whole(self.n) or self.n < 1:
            raise ValueError(f"fail_first n={self.n!r}; give a whole number of 1 or more")

    def _check_route(self) -> None:
        route = self.route
        if route is None:
            raise ValueError("route needs route= (a path such as /orders)")
        if not isinstance(route, str) or not route.startswith("/"):
            raise ValueError(f"route={route!r}; give a path starting with '/', e.g. /orders")
        if _is_admin(route):
            raise ValueError(f"route={route!r} is the admin endpoint, which must stay "
                             "reachable to remove the fault; pick a business route")

    @classmethod
    def from_json(cls, body: object) -> AppFault:
        """Build from a request body such as {"mode": "error_rate", "p": 0.2}."""
        if not isinstance(body, dict):
            raise ValueError('expected a JSON object such as {"mode": "error_rate", "p": 0.1}')
        mode = body.get("mode")
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
        unknown = sorted(set(body) - {"mode", *_PARAMETERS[mode]})
        if unknown:
            raise ValueError(f"{mode} takes {', '.join(_PARAMETERS[mode])}; "
                             f"not {', '.join(unknown)}")
        params = {k: v for k, v in body.items() if k != "mode"}
        params.setdefault("status", DEFAULT_STATUS[mode])
        return cls(mode=mode, **params)

    def to_json(self) -> dict[str, Any]:
        """Only the fields of this mode, defaults filled in (what /admin/fault echoes)."""
        return {"mode": self.mode,
                **{k: getattr(self, k) for k in _PARAMETERS[self.mode]}}

    def describe(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in self.to_json().items() if k != "mode")
        return f"{self.mode}({params})"


class AppChaos:
    """The active application fault of one service, checked before every handler.

    Thread-safe: waitress serves from a pool of threads, and the draws and the fail_first
    budget must be exact under concurrency, so both happen under one lock.
    """

    def __init__(self, service: str, paths: Iterable[str] = ()) -> None:
        self.service = service
        self.paths = frozenset(p for p in paths if not _is_admin(p))  # for route checks
        self._lock = threading.Lock()
        self._fault: AppFault | None = None
        self._rng = random.Random(DEFAULT_SEED)
        self._matched = 0  # requests subject to the fault since it was set
        self._injected = 0  # of those, failed on purpose

    @property
    def fault(self) -> AppFault | None:
        return self._fault

    def set(self, fault: AppFault) -> dict[str, Any]:
        """Make ``fault`` the active one; counting and draws start afresh."""
        if fault.mode == "route" and self.paths and fault.route not in self.paths:
            raise ValueError(f"{self.service} has no route {fault.route!r}; its routes: "
                             f"{', '.join(sorted(self.paths))}")
        with self._lock:
            self._fault = fault
            self._rng = random.Random(fault.seed if fault.seed is not None else DEFAULT_SEED)
            self._matched = self._injected = 0
            return self._state()

    def clear(self) -> dict[str, Any]:
        """Remove the active fault; returns the state it had (what it injected)."""
        with self._lock:
            last = self._state()
            self._fault = None
            self._matched = self._injected = 0
            return last

    def state(self) -> dict[str, Any]:
        with self._lock:
            return self._state()

    def _state(self) -> dict[str, Any]:
        fault = self._fault
        state: dict[str, Any] = {"name": self.service,
                                 "fault": fault.to_json() if fault else None,
                                 "matched": self._matched, "injected": self._injected}
        if fault is not None and fault.n is not None:
            state["remaining"] = max(0, fault.n - self._injected)
        return state

    def check(self, method: str, path: str) -> Reply | None:
        """The injected failure for this request, or None to let the handler run."""
        if _is_admin(path):
            return None
        with self._lock:
            fault = self._fault
            if fault is None:
                return None
            if fault.mode == "route":
                if path != fault.route:
                    return None
                hit = True
            else:
                if method in _READS:
                    return None
                if fault.mode == "error_rate":
                    assert fault.p is not None
                    hit = self._rng.random() < fault.p
                else:
                    assert fault.n is not None
                    hit = self._injected < fault.n
            self._matched += 1
            if not hit:
                return None
            self._injected += 1
        return Reply(fault.status, {"error": f"{self.service}: injected {fault.mode} fault"})

    def routes(self) -> dict[tuple[str, str], Handler]:
        """PUT sets the fault (400 on a bad one), DELETE clears it, GET shows it."""

        def put(environ: Environ) -> Reply:
            return Reply(200, self.set(AppFault.from_json(read_json(environ))))

        def delete(_: Environ) -> Reply:
            return Reply(200, {"name": self.service, "fault": None, "cleared": self.clear()})

        return {("PUT", ADMIN_PATH): put, ("DELETE", ADMIN_PATH): delete,
                ("GET", ADMIN_PATH): lambda _: Reply(200, self.state())}
