"""A synchronous hop: do its part of the order, then call the next hop and wait.

Served by a fixed pool of worker threads; while a worker waits on a slow downstream it
serves nobody else, which is how a slow dependency exhausts the pool upstream. How it
calls downstream (timeout, retries, breaker) lives in resilience.py.
"""

from __future__ import annotations

import time
from pathlib import Path

from testbed.services import deadline as deadlines
from testbed.services.common import common_routes, parse_order
from testbed.services.config import ServiceConfig
from testbed.services.ledger import Ledger
from testbed.services.resilience import BreakerOpen, Downstream, DownstreamFailure
from testbed.services.stats import Stats
from testbed.services.tracing import tracing_for
from testbed.services.work import ServiceTime
from testbed.services.wsgi import Environ, Reply, make_app, serve


def build_app(config: ServiceConfig):  # type: ignore[no-untyped-def]
    knobs = config.knobs
    stats = Stats(config.name, config.role, knobs.pool_size)
    ledger = Ledger(Path(config.ledger_path))
    tracing = tracing_for(config)
    downstream = (Downstream(config.name, config.downstream_url, knobs, stats, tracing)
                  if config.downstream_url else None)
    service_time = ServiceTime(knobs, config.name)
    reserve_s = knobs.deadline_reserve_ms / 1000.0

    def work() -> None:
        seconds = service_time.next_seconds()
        if seconds:
            time.sleep(seconds)

    def place_order(environ: Environ) -> Reply:
        order = parse_order(environ)
        tracing.tag_order(order["order_id"])
        stats.count("received")
        deadline = deadlines.read(environ) if knobs.deadline else None
        if deadline is not None and (left := deadlines.remaining(deadline)) < reserve_s:
            # The caller has gone, or will before this hop can answer: the work would be
            # wasted, and a fast refusal frees the worker for an order that can make it.
            stats.count("shed")
            return Reply(504, {"error": f"{config.name}: shed, {left:.2f} s left of the "
                                        f"caller's deadline when a worker took the order "
                                        f"(needs {reserve_s:g} s)"})
        work()
        ledger.record(order["order_id"])
        path = [config.name]
        if downstream is not None:
            try:
                path += downstream.call(order, deadline).get("path", [])
            except DownstreamFailure as exc:
                return Reply(exc.status, {"error": str(exc)})
            except BreakerOpen as exc:
                return Reply(503, {"error": str(exc)})
        stats.count("ok")
        return Reply(200, {"order_id": order["order_id"], "path": path})

    routes = common_routes(stats, ledger)
    routes[("POST", "/orders")] = place_order
    return make_app(routes, stats, tracing=tracing)


def run(config: ServiceConfig) -> None:
    serve(build_app(config), config.host, config.port, config.knobs.pool_size,
          config.knobs.accept_backlog)
