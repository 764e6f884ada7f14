"""Process faults on a deployment's services: kill, pause, restart, crash-loop, crash at
a named point in the service's code.

They act through the ServiceHandle protocol, so they work on every runtime (processes
here, containers later). Each checks its effect on the service's own port.
"""

from __future__ import annotations

import contextlib
import threading
import time

import requests

from testbed.faults.base import Fault, FaultError, FaultSpecError, Verification, seconds
from testbed.faults.probes import listeners, probe
from testbed.runtime.base import Deployment, ServiceHandle
from testbed.services.crash import ADMIN_CRASH


def find_service(deployment: Deployment, name: str) -> ServiceHandle:
    if name not in deployment.services:
        raise FaultSpecError(f"unknown service {name!r} in deployment {deployment.id}; "
                             f"services: {sorted(deployment.services)}")
    return deployment.services[name]


def _port(handle: ServiceHandle) -> int:
    return int(handle.url.rsplit(":", 1)[1])


class _ServiceFault(Fault):
    def __init__(self, deployment: Deployment, service: str) -> None:
        super().__init__(f"{deployment.id}/{service}")
        self.service = find_service(deployment, service)


class KillService(_ServiceFault):
    """SIGKILL (a crash); removal starts the service again and waits until it is ready."""

    kind = "kill"

    def inject(self) -> None:
        self.service.kill()

    def remove(self) -> None:
        if not self.service.running():
            self.service.start()

    def verify(self) -> Verification:
        seen = probe(_port(self.service), "http", 1.0)
        return Verification(seen.outcome == "refused", f"connect {seen.outcome}; "
                                                       "expected refused")


PAUSE_PROBES = 3


class PauseService(_ServiceFault):
    """Freeze the service (SIGSTOP): connections are accepted by the kernel, never served."""

    kind = "pause"

    def inject(self) -> None:
        self.service.pause()

    def remove(self) -> None:
        self.service.resume()

    def verify(self) -> Verification:
        port = _port(self.service)
        # A stop signal takes effect when the kernel next schedules the process: on a busy
        # machine a probe sent at once can still be answered, so look up to three times.
        for attempt in range(PAUSE_PROBES):
            seen = probe(port, "http", 0.5)
            if seen.outcome != "ok" or attempt == PAUSE_PROBES - 1:
                break
            time.sleep(0.1)
        answered = f" (listening on {port}: {listeners(port)})" if seen.outcome == "ok" else ""
        return Verification(seen.outcome == "timeout", f"health probe {seen.outcome}{answered}; "
                                                       "expected timeout")


class RestartService(_ServiceFault):
    """A graceful stop and start, once; removal has nothing to undo."""

    kind = "restart"

    def inject(self) -> None:
        self.service.restart()

    def remove(self) -> None:
        if not self.service.running():
            self.service.start()

    def verify(self) -> Verification:
        seen = probe(_port(self.service), "http", 2.0)
        return Verification(seen.outcome == "ok", f"health probe {seen.outcome} after restart")


class CrashLoop(_ServiceFault):
    """Kill the service, let it come back after ``down_s``, kill it again ``up_s`` later."""

    kind = "crash_loop"

    def __init__(self, deployment: Deployment, service: str, down_s: float = 1.0,
                 up_s: float = 1.0) -> None:
        super().__init__(deployment, service)
        self.down_s = seconds("crash_loop down_s", down_s)
        self.up_s = seconds("crash_loop up_s", up_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.crashes = 0
        self.errors: list[str] = []
        self._first_kill = threading.Event()

    def describe(self) -> str:
        return f"crash_loop(down {self.down_s} s, up {self.up_s} s) on {self.target}"

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.service.kill()
            self.crashes += 1
            self._first_kill.set()
            if self._stop.wait(self.down_s):
                return
            try:
                self.service.start()
            except Exception as exc:
                self.errors.append(str(exc))
                return
            if self._stop.wait(self.up_s):
                return

    def inject(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="crash-loop", daemon=True)
        self._thread.start()
        self._first_kill.wait(10)

    def remove(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)
        if not self.service.running():
            self.service.start()
        if self.errors:
            raise FaultError(f"crash loop could not restart the service: {self.errors[0]}")

    def verify(self) -> Verification:
        return Verification(self.crashes >= 1 and not self.service.running(),
                            f"{self.crashes} crash(es) so far, service down now")


class CrashAt(_ServiceFault):
    """Crash the service at a named point in its code (``/admin/crash``), ``times`` times:
    arm the point, wait until an order reaches it and the process dies, start it again.

    Points: ``after_process`` (a consumer: side effect done, ack not sent) and
    ``after_write`` (the async gateway: order stored, event not yet published).
    Needs orders flowing: a point nobody reaches within ``wait_s`` is a FaultError.
    """

    kind = "crash_at"

    def __init__(self, deployment: Deployment, service: str, point: str, times: int = 1,
                 wait_s: float = 10.0) -> None:
        super().__init__(deployment, service)
        if isinstance(times, bool) or not isinstance(times, int) or not 1 <= times <= 20:
            raise FaultSpecError(f"crash_at times={times!r}; give a whole number from 1 to 20")
        self.point, self.times = point, times
        self.wait_s = seconds("crash_at wait_s", wait_s)
        self.url = self.service.url.rstrip("/") + ADMIN_CRASH
        self.crashes = 0
        state = self._call("GET")
        if point not in state.get("points", []):
            raise FaultSpecError(f"crash_at: {service} has no crash point {point!r}; its "
                                 f"points: {', '.join(state.get('points', [])) or 'none'}")

    def describe(self) -> str:
        return f"crash_at({self.point}, {self.times}x) on {self.target}"

    def _call(self, method: str, **kwargs: object) -> dict[str, list[str]]:
        try:
            response = requests.request(method, self.url, timeout=5, **kwargs)  # type: ignore[arg-type]
            response.raise_for_status()
            return dict(response.json())
        except requests.RequestException as exc:
            raise FaultError(f"crash_at: {method} {ADMIN_CRASH} on {self.target} failed: "
                             f"{exc}") from exc

    def inject(self) -> None:
        for _ in range(self.times):
            # A broken answer may mean armed and already dead: an order reached the point
            # before the answer was written. Anything else shows below as still running.
            with contextlib.suppress(FaultError):
                self._call("PUT", json={"point": self.point})
            deadline = time.monotonic() + self.wait_s
            while self.service.running() and time.monotonic() < deadline:
                time.sleep(0.01)
            if self.service.running():
                self._call("DELETE")
                raise FaultError(f"crash_at: no order reached {self.point!r} on {self.target}"
                                 f" within {self.wait_s} s; is load flowing to it?")
            self.crashes += 1
            self.service.start()

    def remove(self) -> None:
        if not self.service.running():
            self.service.start()

    def verify(self) -> Verification:
        return Verification(self.crashes == self.times and self.service.running(),
                            f"crashed {self.crashes} time(s) at {self.point}, running again")
