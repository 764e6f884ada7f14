"""Process faults on a deployment's services: kill, pause, restart, crash-loop.

They act through the ServiceHandle protocol, so they work on every runtime (processes
here, containers later). Each checks its effect on the service's own port.
"""

from __future__ import annotations

import threading

from testbed.faults.base import Fault, FaultError, FaultSpecError, Verification
from testbed.faults.probes import probe
from testbed.runtime.base import Deployment, ServiceHandle


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


class PauseService(_ServiceFault):
    """Freeze the service (SIGSTOP): connections are accepted by the kernel, never served."""

    kind = "pause"

    def inject(self) -> None:
        self.service.pause()

    def remove(self) -> None:
        self.service.resume()

    def verify(self) -> Verification:
        seen = probe(_port(self.service), "http", 0.5)
        return Verification(seen.outcome == "timeout", f"health probe {seen.outcome}; "
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
        for name, value in (("down_s", down_s), ("up_s", up_s)):
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise FaultSpecError(f"crash_loop {name}={value!r}; give seconds above 0")
        self.down_s, self.up_s = float(down_s), float(up_s)
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
