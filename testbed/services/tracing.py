"""Tracing of the services with OpenTelemetry, behind one small facade.

Off unless the runtime gave the service an OTLP endpoint (``ServiceConfig.otlp_endpoint``):
then ``Tracing`` is the do-nothing base class and the OpenTelemetry SDK is never even
imported, so an untraced run pays nothing for it. On, ``OtelTracing`` (otel.py, the one
module that imports OpenTelemetry) exports through a
BatchSpanProcessor over OTLP/HTTP to the run's Jaeger, and flushes what it holds when the
service is stopped (SIGTERM); a SIGKILL loses the last half second of spans, as a crash
would.

Spans: a server span per business request (probes and admin calls are left out: the
samplers poll /stats all the time), a client span per attempt at the downstream call
(W3C ``traceparent`` in the request headers), a producer span per AMQP publish and a
consumer span per delivery. Only with the ``trace_propagation`` knob does the trace
context travel in the message headers, so a consumer's span joins the producer's trace;
without it every stage starts a trace of its own, as an uninstrumented broker hop does.
Every span of an order carries its ``order_id`` attribute.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from testbed.services.config import ServiceConfig

AttrValue = str | bool | int | float
ORDER_ID = "order_id"  # the span attribute every order's spans carry
DEPLOYMENT = "testbed.deployment"  # resource attribute: which deployment of the run
FLUSH_S = 2.0  # at SIGTERM: the runtimes give a service 3 s before SIGKILL
SCHEDULE_DELAY_MS = 500  # how often the batch processor exports


class SpanHandle:
    """What code does to a span it is inside; this base is the no-op when tracing is off."""

    def set(self, key: str, value: AttrValue) -> None:
        """Set an attribute."""

    def fail(self, description: str) -> None:
        """Mark the span as failed."""


NO_SPAN = SpanHandle()


class Tracing:
    """Tracing switched off: every span is NO_SPAN and headers are left alone."""

    enabled = False

    def server(self, environ: Mapping[str, Any], method: str,
               path: str) -> contextlib.AbstractContextManager[SpanHandle]:
        """A server span for one request, continuing the caller's trace if it sent one."""
        return contextlib.nullcontext(NO_SPAN)

    def client(self, method: str, url: str,
               headers: MutableMapping[str, str]) -> contextlib.AbstractContextManager[SpanHandle]:
        """A client span for one outgoing call; puts ``traceparent`` into ``headers``."""
        return contextlib.nullcontext(NO_SPAN)

    def publish(self, exchange: str, routing_key: str, headers: MutableMapping[str, Any],
                propagate: bool, order_id: str | None = None,
                ) -> contextlib.AbstractContextManager[SpanHandle]:
        """A producer span for one AMQP publish; with ``propagate`` the trace context goes
        into ``headers`` (the message's headers, which the caller then publishes)."""
        return contextlib.nullcontext(NO_SPAN)

    def consume(self, queue: str, headers: Mapping[str, Any] | None,
                propagate: bool) -> contextlib.AbstractContextManager[SpanHandle]:
        """A consumer span for one delivery; with ``propagate`` it continues the trace
        whose context the message's headers carry, else it starts a new trace."""
        return contextlib.nullcontext(NO_SPAN)

    def tag_order(self, order_id: str) -> None:
        """Put the order id on the current span (once the handler has parsed it)."""

    def fail_current(self, description: str) -> None:
        """Mark the current span as failed."""

    def shutdown(self) -> None:
        """Export whatever is still buffered."""


OFF = Tracing()


def order_of(body: bytes) -> str | None:
    """The order id in an event's JSON body, if it has one (for a span's attribute)."""
    try:
        order = json.loads(body)
    except ValueError:
        return None
    value = order.get("order_id") if isinstance(order, dict) else None
    return value if isinstance(value, str) else None


def flush_on_sigterm(tracing: Tracing) -> None:
    """At SIGTERM export the buffered spans, then die of SIGTERM as before.

    The flush runs in a thread joined with a deadline: the signal may have interrupted
    the main thread inside the SDK holding one of its locks, and a stop must not hang.
    Only the main thread can install a handler; elsewhere this does nothing."""
    if not tracing.enabled or threading.current_thread() is not threading.main_thread():
        return

    def on_term(signum: int, _frame: Any) -> None:
        flusher = threading.Thread(target=tracing.shutdown, name="trace-flush", daemon=True)
        flusher.start()
        flusher.join(FLUSH_S + 0.5)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, on_term)


def tracing_for(config: ServiceConfig) -> Tracing:
    """The service's tracing: on when the runtime gave it an OTLP endpoint, else OFF.
    Call it from the main thread, so the flush at SIGTERM can be installed."""
    if not config.otlp_endpoint:
        return OFF
    from testbed.services.otel import OtelTracing  # the SDK is imported only here

    tracing = OtelTracing(config.name, config.otlp_endpoint, config.deployment_id,
                          system="kafka" if config.kafka is not None else "rabbitmq")
    flush_on_sigterm(tracing)
    return tracing
