"""Tracing on: the OpenTelemetry SDK behind the facade of tracing.py.

The only module of the services that imports OpenTelemetry; tracing.tracing_for imports
it only when the runtime gave the service an OTLP endpoint. Spans go through a
BatchSpanProcessor to an OTLP/HTTP exporter; W3C trace context (``traceparent``) is
read from and written to HTTP headers and, with trace_propagation, AMQP headers.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from testbed.services.tracing import (
    DEPLOYMENT,
    FLUSH_S,
    ORDER_ID,
    SCHEDULE_DELAY_MS,
    AttrValue,
    SpanHandle,
    Tracing,
)

MAX_QUEUE = 8192  # spans buffered between exports; beyond it the SDK drops (and says so)


class _Span(SpanHandle):
    def __init__(self, span: trace.Span) -> None:
        self._span = span

    def set(self, key: str, value: AttrValue) -> None:
        self._span.set_attribute(key, value)

    def fail(self, description: str) -> None:
        self._span.set_status(Status(StatusCode.ERROR, description))


class EnvironGetter(Getter[Mapping[str, Any]]):
    """Reads W3C headers out of a WSGI environ (``traceparent`` is HTTP_TRACEPARENT)."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get("HTTP_" + key.upper().replace("-", "_"))
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return [k[5:].lower().replace("_", "-") for k in carrier if k.startswith("HTTP_")]


class HeadersGetter(Getter[Mapping[str, Any]]):
    """Reads W3C fields out of AMQP message headers (pika may hand back bytes)."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return list(carrier)


def batch_provider(service: str, endpoint: str,
                   deployment_id: str | None = None) -> TracerProvider:
    """A provider exporting in batches over OTLP/HTTP to ``endpoint`` (a base URL)."""
    attributes: dict[str, AttrValue] = {"service.name": service}
    if deployment_id:
        attributes[DEPLOYMENT] = deployment_id
    provider = TracerProvider(resource=Resource.create(attributes), shutdown_on_exit=False)
    exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces", timeout=FLUSH_S)
    provider.add_span_processor(BatchSpanProcessor(
        exporter, max_queue_size=MAX_QUEUE, schedule_delay_millis=SCHEDULE_DELAY_MS,
        export_timeout_millis=FLUSH_S * 1000))
    return provider


class OtelTracing(Tracing):
    """Tracing on. ``provider`` may be given (tests: an in-memory exporter)."""

    enabled = True

    def __init__(self, service: str, endpoint: str, deployment_id: str | None = None,
                 provider: TracerProvider | None = None, system: str = "rabbitmq") -> None:
        self.provider = provider or batch_provider(service, endpoint, deployment_id)
        self.service = service
        self.system = system  # messaging.system of the message spans: rabbitmq | kafka
        self._tracer = self.provider.get_tracer("testbed.services")
        self._propagator = TraceContextTextMapPropagator()
        self._environ = EnvironGetter()
        self._headers = HeadersGetter()
        self._closed = threading.Event()

    @contextlib.contextmanager
    def _span(self, name: str, kind: SpanKind, attributes: dict[str, AttrValue],
              context: Context | None = None,
              inject_into: MutableMapping[str, Any] | None = None) -> Iterator[SpanHandle]:
        attributes["testbed.service"] = self.service
        with self._tracer.start_as_current_span(name, context=context, kind=kind,
                                                attributes=attributes) as span:
            if inject_into is not None:  # the context of this span, for the next hop
                self._propagator.inject(inject_into)
            yield _Span(span)

    def server(self, environ: Mapping[str, Any], method: str,
               path: str) -> contextlib.AbstractContextManager[SpanHandle]:
        context = self._propagator.extract(environ, getter=self._environ)
        return self._span(f"{method} {path}", SpanKind.SERVER,
                          {"http.request.method": method, "url.path": path}, context)

    def client(self, method: str, url: str,
               headers: MutableMapping[str, str]) -> contextlib.AbstractContextManager[SpanHandle]:
        return self._span(method, SpanKind.CLIENT,
                          {"http.request.method": method, "url.full": url},
                          inject_into=headers)

    def publish(self, exchange: str, routing_key: str, headers: MutableMapping[str, Any],
                propagate: bool, order_id: str | None = None,
                ) -> contextlib.AbstractContextManager[SpanHandle]:
        attributes: dict[str, AttrValue] = {
            "messaging.system": self.system, "messaging.operation.type": "send",
            "messaging.destination.name": exchange or "(default)",
            "messaging.rabbitmq.destination.routing_key": routing_key}
        if order_id is not None:
            attributes[ORDER_ID] = order_id
        return self._span(f"publish {routing_key}", SpanKind.PRODUCER, attributes,
                          inject_into=headers if propagate else None)

    def consume(self, queue: str, headers: Mapping[str, Any] | None,
                propagate: bool) -> contextlib.AbstractContextManager[SpanHandle]:
        # An empty Context, not None: None would mean "whatever is current".
        context = (self._propagator.extract(headers or {}, getter=self._headers)
                   if propagate else Context())
        return self._span(f"process {queue}", SpanKind.CONSUMER,
                          {"messaging.system": self.system,
                           "messaging.operation.type": "process",
                           "messaging.destination.name": queue}, context)

    def tag_order(self, order_id: str) -> None:
        trace.get_current_span().set_attribute(ORDER_ID, order_id)

    def fail_current(self, description: str) -> None:
        _Span(trace.get_current_span()).fail(description)

    def shutdown(self) -> None:
        """Flush and stop the exporter; bounded, and only the first call does anything."""
        if self._closed.is_set():
            return
        self._closed.set()
        self.provider.force_flush(timeout_millis=int(FLUSH_S * 1000))
        self.provider.shutdown()
