"""Application faults inside a service (AppChaos): pure logic, no process or socket."""

from __future__ import annotations

import io
import json
import re
import threading
from typing import Any

import pytest

from testbed.services.chaos import DEFAULT_SEED, AppChaos, AppFault
from testbed.services.stats import Stats
from testbed.services.wsgi import Environ, Reply, make_app


def chaos_with(**body: Any) -> AppChaos:
    chaos = AppChaos("orders", {"/orders", "/health", "/stats", "/ledger"})
    chaos.set(AppFault.from_json(body))
    return chaos


def failures(chaos: AppChaos, count: int, method: str = "POST",
             path: str = "/orders") -> list[bool]:
    return [chaos.check(method, path) is not None for _ in range(count)]


def test_error_rate_fails_about_p_of_business_requests() -> None:
    chaos = chaos_with(mode="error_rate", p=0.3, seed=7)
    failed = sum(failures(chaos, 2000))
    assert 500 <= failed <= 700  # 600 expected, sd 20.5: +-100 is about 5 sd
    assert chaos.state()["injected"] == failed
    assert chaos.state()["matched"] == 2000


def test_error_rate_replays_with_the_same_seed_and_differs_with_another() -> None:
    first = failures(chaos_with(mode="error_rate", p=0.5, seed=11), 300)
    again = failures(chaos_with(mode="error_rate", p=0.5, seed=11), 300)
    other = failures(chaos_with(mode="error_rate", p=0.5, seed=12), 300)
    default = failures(chaos_with(mode="error_rate", p=0.5), 300)
    assert first == again
    assert first != other
    assert default == failures(chaos_with(mode="error_rate", p=0.5, seed=DEFAULT_SEED), 300)


def test_probes_and_admin_take_no_draws_so_the_pattern_is_unchanged() -> None:
    plain = failures(chaos_with(mode="error_rate", p=0.5), 200)
    chaos = chaos_with(mode="error_rate", p=1.0)
    chaos.set(AppFault("error_rate", 500, p=0.5))
    mixed = []
    for _ in range(200):
        assert chaos.check("GET", "/health") is None
        assert chaos.check("GET", "/orders") is None
        assert chaos.check("PUT", "/admin/fault") is None
        mixed.append(chaos.check("POST", "/orders") is not None)
    assert mixed == plain


@pytest.mark.parametrize(("p", "expected"), [(0, 0), (0.0, 0), (1, 500), (1.0, 500)])
def test_error_rate_extremes(p: float, expected: int) -> None:
    assert sum(failures(chaos_with(mode="error_rate", p=p), 500)) == expected


def test_fail_first_fails_exactly_n_then_passes() -> None:
    chaos = chaos_with(mode="fail_first", n=3)
    assert chaos.state()["remaining"] == 3
    assert chaos.check("GET", "/health") is None  # probes do not use the budget
    assert failures(chaos, 10) == [True] * 3 + [False] * 7
    state = chaos.state()
    assert (state["injected"], state["matched"], state["remaining"]) == (3, 10, 0)
    assert state["fault"] == {"mode": "fail_first", "n": 3, "status": 503}


def test_fail_first_counts_from_when_it_is_set() -> None:
    chaos = chaos_with(mode="fail_first", n=2)
    assert failures(chaos, 3) == [True, True, False]
    chaos.set(AppFault("fail_first", 503, n=2))
    assert failures(chaos, 3) == [True, True, False]


def test_fail_first_is_exact_under_concurrency() -> None:
    chaos = chaos_with(mode="fail_first", n=100)
    counts: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        mine = sum(failures(chaos, 250))
        with lock:
            counts.append(mine)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(counts) == 100
    assert chaos.state()["matched"] == 2000


def test_route_fails_every_method_on_that_path_only() -> None:
    chaos = chaos_with(mode="route", route="/orders", status=502)
    for method in ("POST", "GET", "PUT", "DELETE"):
        reply = chaos.check(method, "/orders")
        assert reply == Reply(502, {"error": "orders: injected route fault"})
    assert chaos.check("GET", "/health") is None
    assert chaos.check("POST", "/orders/x") is None
    assert chaos.check("DELETE", "/admin/fault") is None


def test_route_can_name_a_probe() -> None:
    chaos = chaos_with(mode="route", route="/health")
    assert chaos.check("GET", "/health") == Reply(500, {"error": "orders: injected route fault"})
    assert chaos.check("GET", "/stats") is None
    assert chaos.check("POST", "/orders") is None


def test_reply_names_service_and_mode_and_clear_reports_what_was_injected() -> None:
    chaos = chaos_with(mode="fail_first", n=1, status=599)
    assert chaos.check("POST", "/orders") == Reply(
        599, {"error": "orders: injected fail_first fault"})
    last = chaos.clear()
    assert last["injected"] == 1 and last["fault"]["mode"] == "fail_first"
    assert chaos.fault is None and chaos.state()["fault"] is None
    assert chaos.check("POST", "/orders") is None


def test_defaults_are_filled_in_and_echoed() -> None:
    assert AppFault.from_json({"mode": "error_rate", "p": 1}).to_json() == {
        "mode": "error_rate", "p": 1.0, "status": 500, "seed": DEFAULT_SEED}
    assert AppFault.from_json({"mode": "route", "route": "/orders"}).to_json() == {
        "mode": "route", "route": "/orders", "status": 500}
    assert AppFault("fail_first", 503, n=2).describe() == "fail_first(n=2, status=503)"


@pytest.mark.parametrize(("body", "message"), [
    ({"mode": "earthquake"}, "unknown mode 'earthquake'; use one of error_rate, fail_first"),
    ({}, "unknown mode None"),
    ([1, 2], "expected a JSON object"),
    ({"mode": "error_rate"}, "error_rate needs p="),
    ({"mode": "error_rate", "p": 1.5}, "p=1.5 is not a probability"),
    ({"mode": "error_rate", "p": -0.1}, "p=-0.1 is not a probability"),
    ({"mode": "error_rate", "p": "0.5"}, "p='0.5' is not a probability"),
    ({"mode": "error_rate", "p": True}, "p=True is not a probability"),
    ({"mode": "error_rate", "p": 0.5, "seed": 1.5}, "seed=1.5"),
    ({"mode": "error_rate", "p": 0.5, "n": 3}, "error_rate takes p, status, seed; not n"),
    ({"mode": "fail_first"}, "fail_first needs n="),
    ({"mode": "fail_first", "n": 0}, "n=0; give a whole number of 1 or more"),
    ({"mode": "fail_first", "n": 2.5}, "n=2.5"),
    ({"mode": "fail_first", "n": 1, "status": 404}, "status=404 is not a server error"),
    ({"mode": "fail_first", "n": 1, "status": 600}, "status=600 is not a server error"),
    ({"mode": "fail_first", "n": 1, "status": True}, "status=True"),
    ({"mode": "route"}, "route needs route="),
    ({"mode": "route", "route": "orders"}, "give a path starting with '/'"),
    ({"mode": "route", "route": 5}, "route=5"),
    ({"mode": "route", "route": "/admin/fault"}, "admin endpoint"),
    ({"mode": "route", "route": "/orders", "p": 0.5}, "route takes route, status; not p"),
])
def test_bad_faults_are_rejected_clearly(body: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        AppFault.from_json(body)


def test_a_route_the_service_lacks_is_rejected() -> None:
    chaos = AppChaos("payments", {"/health", "/stats", "/ledger"})
    with pytest.raises(ValueError, match=r"payments has no route '/orders'; its routes: /health"):
        chaos.set(AppFault("route", 500, route="/orders"))
    assert chaos.fault is None


# -- wired into make_app: every service's WSGI app, called in-process ---------------------

def call(app: Any, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    raw = b"" if body is None else json.dumps(body).encode()
    environ: Environ = {"REQUEST_METHOD": method, "PATH_INFO": path,
                        "CONTENT_LENGTH": str(len(raw)), "wsgi.input": io.BytesIO(raw)}
    seen: list[str] = []
    chunks = app(environ, lambda status, headers: seen.append(status))
    return int(seen[0].split()[0]), json.loads(b"".join(chunks))


def test_make_app_serves_admin_fault_and_checks_before_the_handler() -> None:
    stats = Stats("orders", "http_stage", 2)
    handled: list[str] = []

    def place(_: Environ) -> Reply:
        handled.append("order")
        return Reply(200, {"ok": True})

    app = make_app({("POST", "/orders"): place, ("GET", "/health"): lambda _: Reply(200, {})},
                   stats)
    assert call(app, "GET", "/admin/fault")[1]["fault"] is None
    status, body = call(app, "PUT", "/admin/fault", {"mode": "error_rate", "p": 2})
    assert status == 400 and "p=2 is not a probability" in body["error"]
    status, body = call(app, "PUT", "/admin/fault", {"mode": "route", "route": "/nope"})
    assert status == 400 and "no route '/nope'" in body["error"]

    status, body = call(app, "PUT", "/admin/fault", {"mode": "fail_first", "n": 2})
    assert status == 200 and body["fault"] == {"mode": "fail_first", "n": 2, "status": 503}
    assert [call(app, "POST", "/orders", {"order_id": "a"})[0] for _ in range(3)] == [
        503, 503, 200]
    assert handled == ["order"]  # the injected failures never reached the handler
    assert call(app, "GET", "/health")[0] == 200
    assert stats.snapshot()["counters"]["injected_errors"] == 2

    status, body = call(app, "DELETE", "/admin/fault")
    assert status == 200 and body["fault"] is None and body["cleared"]["injected"] == 2
    assert call(app, "POST", "/orders", {"order_id": "b"})[0] == 200
