"""How a sync hop calls the next one: timeout, retries (tenacity), circuit breaker
(pybreaker), each off unless its knob is set.

Every attempt goes through the breaker; only real downstream failures (timeout,
connection error, non-200) are retried, never a fast rejection by an open breaker.
Naive retries (no backoff) are what multiplies load down a chain: (1 + retries) per hop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pybreaker
import requests
import tenacity

from testbed.services import deadline as deadlines
from testbed.services.stats import Stats
from testbed.services.tracing import OFF, ORDER_ID, Tracing
from testbed.topology.model import Knobs


class DownstreamFailure(Exception):
    """The next hop failed; carries the status to answer and the cause."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class DeadlinePassed(DownstreamFailure):
    """The caller's deadline passed before an attempt: not retried, not a breaker failure."""


class BreakerOpen(Exception):
    """The breaker rejected the call without trying: fail fast, with a fallback."""


def _cause(response: requests.Response) -> str:
    """The downstream's own error text, so the edge shows the whole chain of causes."""
    try:
        return str(response.json().get("error", "no detail"))
    except ValueError:
        return response.text[:200] or "no detail"


class Downstream:
    """Calls the next hop with a per-thread keep-alive session and the hop's knobs."""

    def __init__(self, name: str, base_url: str, knobs: Knobs, stats: Stats,
                 tracing: Tracing = OFF) -> None:
        self.name = name
        self.url = base_url.rstrip("/") + "/orders"
        self.knobs = knobs
        self.stats = stats
        self.tracing = tracing
        self._local = threading.local()
        self.breaker = (pybreaker.CircuitBreaker(fail_max=knobs.breaker_failures,
                                                 reset_timeout=knobs.breaker_reset_s,
                                                 name=f"{name}-downstream",
                                                 throw_new_error_on_trip=False)
                        if knobs.breaker_failures else None)
        self.retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(1 + knobs.retries),
            wait=self._wait(),
            retry=(tenacity.retry_if_exception_type(DownstreamFailure)
                   & tenacity.retry_if_not_exception_type(DeadlinePassed)),
            before_sleep=lambda _: stats.count("retries"),
            reraise=True)

    def _wait(self) -> Any:
        base = self.knobs.retry_backoff_ms / 1000.0
        if not base:
            return tenacity.wait_none()
        if self.knobs.retry_jitter:
            return tenacity.wait_random_exponential(multiplier=base, max=10 * base)
        return tenacity.wait_exponential(multiplier=base, max=10 * base)

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        session: requests.Session = self._local.session
        return session

    def _attempt(self, order: dict[str, Any], deadline: float | None) -> dict[str, Any]:
        timeout, headers = self.knobs.timeout_s, {}
        if deadline is not None:  # only the time the caller has left, and tell downstream
            timeout = max(0.001, min(timeout, deadlines.remaining(deadline)))
            headers = deadlines.forward(deadline)
        self.stats.count("downstream_calls")
        # One client span per attempt (a retry is a new one); it puts traceparent in headers.
        with self.tracing.client("POST", self.url, headers) as span:
            try:
                response = self._session().post(self.url, json=order, timeout=timeout,
                                                headers=headers)
            except requests.Timeout as exc:
                self.stats.count("downstream_timeouts")
                raise DownstreamFailure(504, f"{self.name}: downstream timed out after "
                                             f"{round(timeout, 3)} s") from exc
            except requests.ConnectionError as exc:
                self.stats.count("downstream_errors")
                raise DownstreamFailure(502, f"{self.name}: downstream unreachable: "
                                             f"{type(exc).__name__}") from exc
            span.set("http.response.status_code", response.status_code)
            span.set(ORDER_ID, str(order.get("order_id")))
            if response.status_code != 200:
                self.stats.count("downstream_errors")
                raise DownstreamFailure(502, f"{self.name}: downstream answered "
                                             f"{response.status_code} ({_cause(response)})")
            return dict(response.json())

    def _guarded(self, order: dict[str, Any], deadline: float | None) -> dict[str, Any]:
        if deadline is not None and deadlines.remaining(deadline) <= 0:
            self.stats.count("shed")  # before the breaker: no call, so no failure to count
            raise DeadlinePassed(504, f"{self.name}: the caller's deadline passed before "
                                      "the downstream call")
        if self.breaker is None:
            return self._attempt(order, deadline)
        try:
            # calling() checks the state under the breaker's lock but runs the block
            # outside it; breaker.call() would hold the lock for the whole downstream
            # call and so let one call through at a time (pybreaker issue #3).
            with self.breaker.calling():
                return self._attempt(order, deadline)
        except pybreaker.CircuitBreakerError as exc:  # open: the call was never made
            self.stats.count("breaker_rejections")
            raise BreakerOpen(f"{self.name}: circuit breaker open, downstream not "
                              "called (fallback)") from exc

    def call(self, order: dict[str, Any], deadline: float | None = None) -> dict[str, Any]:
        """The downstream's answer, or DownstreamFailure / BreakerOpen. With a deadline
        (Unix time) no attempt outlives it and none starts after it."""
        call: Callable[[dict[str, Any], float | None], dict[str, Any]] = self._guarded
        return self.retrying(call, order, deadline)
