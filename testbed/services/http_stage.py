"""A synchronous hop: do its part of the order, then call the next hop and wait.

Served by a fixed pool of worker threads; while a worker waits on a slow downstream it
serves nobody else, which is how a slow dependency exhausts the pool upstream.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import requests

from testbed.services.common import common_routes, parse_order
from testbed.services.config import ServiceConfig
from testbed.services.ledger import Ledger
from testbed.services.stats import Stats
from testbed.services.wsgi import Environ, Reply, make_app, serve


class Downstream:
    """Calls the next hop with a per-thread keep-alive session and the hop's timeout."""

    def __init__(self, base_url: str, timeout_s: float) -> None:
        self.url = base_url.rstrip("/") + "/orders"
        self.timeout_s = timeout_s
        self._local = threading.local()

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        session: requests.Session = self._local.session
        return session

    def call(self, order: dict[str, object]) -> requests.Response:
        return self._session().post(self.url, json=order, timeout=self.timeout_s)


def _cause(response: requests.Response) -> str:
    """The downstream's own error text, so the edge shows the whole chain of causes."""
    try:
        return str(response.json().get("error", "no detail"))
    except ValueError:
        return response.text[:200] or "no detail"


def build_app(config: ServiceConfig):  # type: ignore[no-untyped-def]
    stats = Stats(config.name, config.role, config.knobs.pool_size)
    ledger = Ledger(Path(config.ledger_path))
    downstream = (Downstream(config.downstream_url, config.knobs.timeout_s)
                  if config.downstream_url else None)
    work_s = config.knobs.work_ms / 1000.0

    def place_order(environ: Environ) -> Reply:
        order = parse_order(environ)
        stats.count("received")
        if work_s:
            time.sleep(work_s)
        ledger.record(order["order_id"])
        path = [config.name]
        if downstream is not None:
            try:
                response = downstream.call(order)
            except requests.Timeout:
                stats.count("downstream_timeouts")
                return Reply(504, {"error": f"{config.name}: downstream timed out after "
                                            f"{config.knobs.timeout_s} s"})
            except requests.ConnectionError as exc:
                stats.count("downstream_errors")
                return Reply(502, {"error": f"{config.name}: downstream unreachable: "
                                            f"{type(exc).__name__}"})
            if response.status_code != 200:
                stats.count("downstream_errors")
                return Reply(502, {"error": f"{config.name}: downstream answered "
                                            f"{response.status_code} ({_cause(response)})"})
            path += response.json().get("path", [])
        stats.count("ok")
        return Reply(200, {"order_id": order["order_id"], "path": path})

    routes = common_routes(stats, ledger)
    routes[("POST", "/orders")] = place_order
    return make_app(routes, stats)


def run(config: ServiceConfig) -> None:
    serve(build_app(config), config.host, config.port, config.knobs.pool_size,
          config.knobs.accept_backlog)
