"""What every runtime promises, checked on the one chosen (``--runtime``): `make test`
runs this module on local and on docker, `make test-k8s` on k8s. A new backend passes
here before an experiment runs on it."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import requests

from testbed.runtime import Runtime
from testbed.topology import Knobs, paired, sync_chain

from .conftest import Deploy, eventually


def test_the_runtime_is_the_one_chosen_and_keeps_the_protocol(
        testbed_runtime: Runtime, request: pytest.FixtureRequest) -> None:
    assert isinstance(testbed_runtime, Runtime)
    assert testbed_runtime.name == request.config.getoption("--runtime")
    assert testbed_runtime.run_id


def test_a_deployment_has_every_service_and_link_on_loopback(deploy: Deploy) -> None:
    pair = paired(depth=2)
    for topology in (pair.sync, pair.async_):
        deployment = deploy(topology)
        assert set(deployment.services) == {s.name for s in topology.services}
        assert set(deployment.proxies) == {link.name for link in topology.proxied_links}
        for name, url in deployment.endpoints().items():
            assert urlsplit(url).hostname == "127.0.0.1", f"{name} at {url}"
            assert requests.get(url + "/health", timeout=5).status_code == 200
        for endpoint in deployment.proxies.values():
            assert 0 < endpoint.listen_port < 65536
        assert (deployment.broker is None) == (topology.broker is None)


def test_orders_are_audited_the_same_on_every_runtime(deploy: Deploy) -> None:
    pair = paired(depth=1)
    sync, asynchronous = deploy(pair.sync), deploy(pair.async_)
    assert sync.place_order("compliance-sync").status_code == 200
    assert asynchronous.place_order("compliance-async").status_code == 202
    assert eventually(lambda: all("compliance-async" in ledger
                                  for ledger in asynchronous.ledgers().values()), 30)
    assert all(ledger == {"compliance-sync": 1} for ledger in sync.ledgers().values())


def test_a_killed_service_is_down_until_started(deploy: Deploy) -> None:
    deployment = deploy(sync_chain(depth=2, knobs=Knobs(timeout_s=2.0)))
    payments = deployment.service("payments")
    payments.kill()
    assert not payments.running()
    assert deployment.place_order("while-killed").status_code == 502
    payments.start()
    assert payments.running()
    assert deployment.place_order("after-start").status_code == 200
    payments.restart()
    assert deployment.place_order("after-restart").status_code == 200
    # the process's files outlive it (on k8s: in its pod, restarted under the pod's loop)
    assert {"after-start", "after-restart"} <= set(deployment.ledger("payments"))
    assert deployment.unaudited == ()


def test_a_closed_deployment_is_gone_and_closing_again_is_harmless(deploy: Deploy) -> None:
    deployment = deploy(sync_chain(depth=1))
    entry = deployment.entry_url
    deployment.close()
    deployment.close()
    with pytest.raises(requests.RequestException):
        requests.get(entry + "/health", timeout=2)
