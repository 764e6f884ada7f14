"""Routes every service has: /health, /stats and /ledger; and order parsing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from testbed.services.ledger import OrderLedger
from testbed.services.stats import Stats
from testbed.services.wsgi import Environ, Handler, Reply, read_json


def parse_order(environ: Environ) -> dict[str, Any]:
    order = read_json(environ)
    if not isinstance(order, dict) or not isinstance(order.get("order_id"), str):
        raise ValueError("expected a JSON object with a string order_id")
    return order


def common_routes(stats: Stats, ledger: OrderLedger,
                  healthy: Callable[[], bool] = lambda: True) -> dict[tuple[str, str], Handler]:
    def health(_: Environ) -> Reply:
        ok = healthy()
        return Reply(200 if ok else 503, {"name": stats.name, "status": "ok" if ok else "down"})

    def read(environ: Environ) -> Reply:
        """Read side: is this order visible here yet (a read model, for staleness)?"""
        order_id = parse_qs(environ.get("QUERY_STRING", "")).get("order_id", [""])[0]
        if not order_id:
            raise ValueError("give ?order_id=...")
        count = ledger.count(order_id)
        return Reply(200, {"order_id": order_id, "visible": count > 0, "count": count})

    return {
        ("GET", "/read"): read,
        ("GET", "/health"): health,
        ("GET", "/stats"): lambda _: Reply(200, stats.snapshot()),
        ("GET", "/ledger"): lambda _: Reply(200, {"name": stats.name,
                                                  "processed": ledger.snapshot()}),
    }
