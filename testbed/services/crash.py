"""Crash points: make a service die at one exact place in its code, on demand.

A kill from outside lands anywhere; the failures that lose or double orders happen at
one place: after the side effect and before the ack (duplicates), after the database
write and before the publish (lost events). ``PUT /admin/crash {"point": ...}`` arms a
point; the next order that reaches it ends the process at once (``os._exit``: no
cleanup, no ack, no flush beyond what already happened), as a power cut would.
"""

from __future__ import annotations

import os
import threading

from testbed.services.reply import Environ, Handler, Reply, read_json

CRASH_EXIT_CODE = 70
ADMIN_CRASH = "/admin/crash"


class CrashPoints:
    """The points a service offers, and the one armed (if any)."""

    def __init__(self, service: str, points: tuple[str, ...]) -> None:
        self.service = service
        self.points = points
        self._armed: str | None = None
        self._lock = threading.Lock()

    def reached(self, point: str) -> None:
        """Called by the service's code at ``point``: dies here if that point is armed."""
        with self._lock:
            if self._armed != point:
                return
        os._exit(CRASH_EXIT_CODE)

    def routes(self) -> dict[tuple[str, str], Handler]:
        def state(_: Environ) -> Reply:
            return Reply(200, {"name": self.service, "points": list(self.points),
                               "armed": self._armed})

        def arm(environ: Environ) -> Reply:
            body = read_json(environ)
            point = body.get("point") if isinstance(body, dict) else None
            if point not in self.points:
                raise ValueError(f"{self.service} has no crash point {point!r}; "
                                 f"its points: {', '.join(self.points) or 'none'}")
            with self._lock:
                self._armed = point
            return state(environ)

        def disarm(environ: Environ) -> Reply:
            with self._lock:
                self._armed = None
            return state(environ)

        return {("GET", ADMIN_CRASH): state, ("PUT", ADMIN_CRASH): arm,
                ("DELETE", ADMIN_CRASH): disarm}
