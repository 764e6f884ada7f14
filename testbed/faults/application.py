"""Application faults on a deployment's services: 5xx by chance, for the first N, on a route.

Toxiproxy works on TCP and cannot express "the service answers 500"; these faults are
switched inside the service through its /admin/fault endpoint (testbed.services.chaos),
which every service role has. Parameters are checked here with the same rules the
service applies, so a bad spec fails before anything is touched. The fault lives in the
service's memory: a service that was killed or restarted meanwhile has none left to remove.
On an async consumer, error_rate and fail_first fail its message handler instead (it takes
its orders over AMQP): the message goes the way the consumer's retry policy sends it.
"""

from __future__ import annotations

import uuid
from typing import Any

import requests

from testbed.faults.base import Fault, FaultError, FaultSpecError, Verification
from testbed.faults.process import find_service
from testbed.runtime.base import Deployment
from testbed.services.chaos import ADMIN_PATH, DEFAULT_SEED, AppFault

TIMEOUT_S = 5.0


class _ApplicationFault(Fault):
    """PUT the fault on inject, DELETE it on remove; verify sees the service's own echo."""

    mode: str = ""

    def __init__(self, deployment: Deployment, service: str, **params: Any) -> None:
        super().__init__(f"{deployment.id}/{service}")
        self.service = service
        self.handle = find_service(deployment, service)
        try:
            self.spec = AppFault(mode=self.mode, **params)
        except (TypeError, ValueError) as exc:
            raise FaultSpecError(f"{self.kind} on {service}: {exc}") from exc
        self.url = self.handle.url.rstrip("/")
        # A consumer takes its orders over AMQP: the fault fails its message handler.
        self.consumer = deployment.topology.service(service).role == "async_consumer"
        self.cleared: dict[str, Any] | None = None  # the service's last state, from remove

    def describe(self) -> str:
        return f"{self.kind}{self.spec.describe().removeprefix(self.mode)} on {self.target}"

    def _admin(self, method: str) -> dict[str, Any]:
        """One call to /admin/fault; requests errors become FaultError here."""
        try:
            response = requests.request(method, self.url + ADMIN_PATH, timeout=TIMEOUT_S,
                                        json=self.spec.to_json() if method == "PUT" else None)
        except requests.RequestException as exc:
            raise FaultError(f"{self.kind}: {method} {ADMIN_PATH} on {self.service} "
                             f"failed: {type(exc).__name__}: {exc}") from exc
        detail = _error_of(response)
        if response.status_code == 400:
            raise FaultSpecError(f"{self.kind}: {self.service} refused the fault: {detail}")
        if response.status_code != 200:
            raise FaultError(f"{self.kind}: {method} {ADMIN_PATH} on {self.service} answered "
                             f"{response.status_code}: {detail}")
        try:
            return dict(response.json())
        except ValueError as exc:
            raise FaultError(f"{self.kind}: {self.service} answered no JSON: "
                             f"{response.text[:200]!r}") from exc

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            return requests.request(method, self.url + path, timeout=TIMEOUT_S, **kwargs)
        except requests.RequestException as exc:
            raise FaultError(f"{self.kind}: {method} {path} on {self.service} failed: "
                             f"{type(exc).__name__}: {exc}") from exc

    def inject(self) -> None:
        self._admin("PUT")

    def remove(self) -> None:
        try:
            self.cleared = self._admin("DELETE")["cleared"]
        except FaultError:
            if not self.handle.running():
                return  # the fault was in the process's memory and went with it
            raise

    def verify(self) -> Verification:
        state = self._admin("GET")
        held = state.get("fault")
        if held != self.spec.to_json():
            return Verification(False, f"{self.service} holds {held}; expected "
                                       f"{self.spec.to_json()}")
        return self._confirm(state)

    def _confirm(self, state: dict[str, Any]) -> Verification:
        """After the echo matched: what a caller can additionally check."""
        return Verification(True, f"{self.service} holds {self.spec.describe()}")

    def _expect_failure(self, response: requests.Response, request: str) -> Verification:
        """A real request must have failed with this fault's status and marker."""
        marker = f"injected {self.mode} fault"
        detail = _error_of(response)
        ok = response.status_code == self.spec.status and marker in detail
        return Verification(ok, f"{self.service} holds {self.spec.describe()}; {request} "
                                f"answered {response.status_code} ({detail}); expected "
                                f"{self.spec.status} ({marker})")


class ErrorRate(_ApplicationFault):
    """Each business request (not GET, not /admin) or consumed message fails with
    probability p, seeded.

    Verify: the service echoes the fault; with p = 1 a real POST /orders must also fail.
    With p < 1 no real request is sent: it could succeed (a stray order in the ledgers)
    and it would take a draw from the seeded sequence, so the run would no longer replay.
    """

    kind = "error_rate"
    mode = "error_rate"

    def __init__(self, deployment: Deployment, service: str, p: float, status: int = 500,
                 seed: int = DEFAULT_SEED) -> None:
        super().__init__(deployment, service, p=p, status=status, seed=seed)

    def _confirm(self, state: dict[str, Any]) -> Verification:
        if self.spec.p != 1.0 or self.consumer:
            return Verification(True, f"{self.service} holds {self.spec.describe()}; not "
                                      "probed with a real request (p < 1, or a consumer)")
        order = {"order_id": f"fault-verify-{uuid.uuid4().hex[:12]}"}
        return self._expect_failure(self._request("POST", "/orders", json=order),
                                    "POST /orders")


class FailFirst(_ApplicationFault):
    """The first n business requests after injection fail; later ones pass.

    Verify: only the service's echo (fault held, budget left). A real request would use
    up one of the n failures the experiment wants to observe, so none is sent.
    """

    kind = "fail_first"
    mode = "fail_first"

    def __init__(self, deployment: Deployment, service: str, n: int,
                 status: int = 503) -> None:
        super().__init__(deployment, service, n=n, status=status)

    def _confirm(self, state: dict[str, Any]) -> Verification:
        return Verification(True, f"{self.service} holds {self.spec.describe()}, "
                                  f"{state.get('remaining')} failure(s) left; not probed "
                                  "with a real request, which would use one up")


class RouteError(_ApplicationFault):
    """Every request to one path fails, whatever the method (/admin/* excepted).

    Verify: the echo, then a real GET of the route must fail. GET never changes state:
    when the fault is on, the check answers before any handler; when it is off, a GET of
    a business route (POST only) is a harmless 404.
    """

    kind = "route_error"
    mode = "route"

    def __init__(self, deployment: Deployment, service: str, route: str,
                 status: int = 500) -> None:
        super().__init__(deployment, service, route=route, status=status)

    def _confirm(self, state: dict[str, Any]) -> Verification:
        route = self.spec.route
        assert route is not None
        return self._expect_failure(self._request("GET", route), f"GET {route}")


def _error_of(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or "no detail"
    return str(body.get("error", body)) if isinstance(body, dict) else str(body)
