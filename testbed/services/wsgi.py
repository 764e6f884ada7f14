"""A minimal JSON-over-WSGI router shared by every service, and the waitress server.

Waitress serves with a fixed pool of worker threads (``threads``) and a bounded accept
backlog, so a sync service really runs out of workers when its downstream is slow.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable

from waitress.server import create_server

from testbed.services.chaos import AppChaos
from testbed.services.reply import Environ, Handler, Reply, StartResponse, read_json
from testbed.services.stats import Stats
from testbed.services.tracing import NO_SPAN, OFF, Tracing

__all__ = ["Environ", "Handler", "Reply", "make_app", "read_json", "serve"]

_REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 404: "Not Found",
            429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
            503: "Service Unavailable", 504: "Gateway Timeout"}


WsgiApp = Callable[..., Iterable[bytes]]


def make_app(routes: dict[tuple[str, str], Handler], stats: Stats,
             chaos: AppChaos | None = None, tracing: Tracing = OFF) -> WsgiApp:
    """A WSGI app dispatching on (method, path); every request counts as in flight.

    Every app carries application faults (testbed.services.chaos) and their
    /admin/fault routes, checked before any handler, so every service role has them.
    With tracing on, each business request (not a probe, not /admin) is a server span.
    """
    chaos = chaos or AppChaos(stats.name, {path for _, path in routes})
    routes = {**routes, **chaos.routes()}

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "")
        handler = routes.get((method, path))
        # Only business requests count as in flight; probes (GET) would blur saturation.
        business = method != "GET"
        traced = tracing.enabled and business and not path.startswith("/admin")
        server_span = (tracing.server(environ, method, path) if traced
                       else contextlib.nullcontext(NO_SPAN))
        with (stats.busy() if business else contextlib.nullcontext()), server_span as span:
            injected = chaos.check(method, path)
            if injected is not None:
                stats.count("injected_errors")
                reply = injected
            elif handler is None:
                reply = Reply(404, {"error": "no such route"})
            else:
                try:
                    reply = handler(environ)
                except ValueError as exc:
                    reply = Reply(400, {"error": f"bad request: {exc}"})
            if traced:
                span.set("http.response.status_code", reply.status)
                if reply.status >= 500:
                    span.fail(str(reply.body.get("error", reply.status))
                              if isinstance(reply.body, dict) else str(reply.status))
        body = json.dumps(reply.body).encode()
        start_response(f"{reply.status} {_REASONS.get(reply.status, 'Status')}",
                       [("Content-Type", "application/json"),
                        ("Content-Length", str(len(body)))])
        return [body]

    return app


def serve(app: WsgiApp, host: str, port: int, threads: int,
          backlog: int) -> None:
    """Serve forever with a bounded worker pool and accept backlog."""
    server = create_server(app, host=host, port=port, threads=threads, backlog=backlog,
                           # keep-alive sessions of every upstream worker stay open:
                           # the default limit (100) is too low for big pools
                           connection_limit=max(1000, backlog * 2), channel_timeout=30,
                           ident="testbed")
    server.run()
