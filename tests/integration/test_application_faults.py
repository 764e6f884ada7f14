"""Application faults (5xx by chance, first N, one route) on real service processes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests

from testbed.faults import FaultSpecError, Timeline, injected
from testbed.faults.application import ErrorRate, FailFirst, RouteError
from testbed.runtime import Deployment
from testbed.topology import async_pipeline, sync_chain

from .conftest import Deploy


@pytest.fixture
def chain(deploy: Deploy) -> Deployment:
    return deploy(sync_chain(1))


def admin(deployment: Deployment, service: str) -> dict[str, object]:
    response = requests.get(deployment.url(service) + "/admin/fault", timeout=5)
    response.raise_for_status()
    return dict(response.json())


def statuses(deployment: Deployment, prefix: str, count: int) -> list[int]:
    return [deployment.place_order(f"{prefix}-{i}").status_code for i in range(count)]


def test_error_rate_fails_about_half_at_the_edge_and_replays(chain: Deployment) -> None:
    fault = ErrorRate(chain, "orders", p=0.5, seed=42)
    with injected(fault):
        first = statuses(chain, "rate", 200)
    assert set(first) == {200, 502}
    failed = first.count(502)
    assert 60 <= failed <= 140  # 100 expected, sd 7.1: the band is over 5 sd wide
    assert fault.cleared is not None and fault.cleared["injected"] == failed
    assert chain.stats("orders")["counters"]["injected_errors"] == failed
    # the injected failures happen before the work: orders recorded only the successes
    assert len(chain.ledger("orders")) == 200 - failed
    with injected(ErrorRate(chain, "orders", p=0.5, seed=42)):
        again = statuses(chain, "replay", 200)
    assert again == first  # same seed, same failures
    assert statuses(chain, "after", 20) == [200] * 20


def test_error_rate_of_one_is_verified_with_a_real_request(chain: Deployment) -> None:
    timeline = Timeline()
    with injected(ErrorRate(chain, "gateway", p=1, status=503), timeline):
        answer = chain.place_order("refused")
        assert answer.status_code == 503
        assert answer.json() == {"error": "gateway: injected error_rate fault"}
        assert requests.get(chain.url("gateway") + "/health", timeout=5).status_code == 200
    verified = timeline.of_kind("verify")[0].detail
    assert "POST /orders answered 503" in verified
    assert admin(chain, "gateway")["fault"] is None
    assert chain.place_order("accepted").status_code == 200


def test_fail_first_fails_exactly_n_then_succeeds(chain: Deployment) -> None:
    timeline = Timeline()
    with injected(FailFirst(chain, "orders", n=3), timeline):
        answers = [chain.place_order(f"first-{i}") for i in range(6)]
        assert admin(chain, "orders")["remaining"] == 0
    assert [a.status_code for a in answers] == [502, 502, 502, 200, 200, 200]
    assert "orders: injected fail_first fault" in answers[0].json()["error"]
    assert "3 failure(s) left" in timeline.of_kind("verify")[0].detail
    assert chain.place_order("later").status_code == 200


def test_route_error_on_the_async_gateway_and_a_consumer_probe(deploy: Deploy) -> None:
    pipeline = deploy(async_pipeline(1))
    timeline = Timeline()
    with injected(RouteError(pipeline, "gateway", "/orders"), timeline), \
            injected(RouteError(pipeline, "payments", "/health", status=503)):
        answer = pipeline.place_order("routed")
        assert answer.status_code == 500
        assert answer.json()["error"] == "gateway: injected route fault"
        assert requests.get(pipeline.url("gateway") + "/health", timeout=5).status_code == 200
        payments = requests.get(pipeline.url("payments") + "/health", timeout=5)
        assert payments.status_code == 503
        assert pipeline.stats("payments")["counters"]["injected_errors"] >= 2
    assert "GET /orders answered 500" in timeline.of_kind("verify")[0].detail
    assert pipeline.place_order("unrouted").status_code == 202
    assert requests.get(pipeline.url("payments") + "/health", timeout=5).status_code == 200


def test_bad_application_faults_touch_nothing(chain: Deployment) -> None:
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: ErrorRate(chain, "ghost", p=0.5), "unknown service 'ghost'"),
        (lambda: ErrorRate(chain, "orders", p=1.5), "error_rate on orders: error_rate p=1.5"),
        (lambda: FailFirst(chain, "orders", n=0), "n=0"),
        (lambda: FailFirst(chain, "orders", n=2, status=404), "status=404"),
        (lambda: RouteError(chain, "orders", "/admin/fault"), "admin endpoint"),
    ]
    for build, message in cases:
        with pytest.raises(FaultSpecError, match=message):
            build()
    assert admin(chain, "orders")["fault"] is None


def test_a_route_the_service_lacks_is_refused_and_leaves_nothing(chain: Deployment) -> None:
    timeline = Timeline()
    with pytest.raises(FaultSpecError, match="orders has no route '/order'"), \
            injected(RouteError(chain, "orders", "/order"), timeline):
        pass
    assert timeline.of_kind("inject_failed")
    assert admin(chain, "orders")["fault"] is None
