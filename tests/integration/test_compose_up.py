"""`docker compose up` on the committed compose/paired files, with nothing of the
controller involved: both chains carry an order end to end, a Toxiproxy fault through its
published API breaks the sync chain and its removal heals it, and `down` leaves nothing.
The drift test (test_docker_runtime) proves the files match what the controller creates;
this one proves a person can run them."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import requests

from testbed.components.compose import compose_version, require_compose
from testbed.errors import ComponentError
from testbed.images import build_images

from .conftest import eventually, labelled_objects

pytestmark = pytest.mark.docker

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "compose" / "paired" / "compose.yaml"
# The host ports compose/paired publishes (fixed there, all on 127.0.0.1).
SYNC_GATEWAY, ASYNC_GATEWAY, TOXIPROXY_API = 8101, 8201, 8474
ASYNC_CONSUMERS = {"payments": 8202, "inventory": 8203, "notification": 8204}
SYNC_HOP = "sync.orders-payments"
PROJECT_LABEL = "com.docker.compose.project"


def compose(project: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    docker_cli = shutil.which("docker")
    assert docker_cli is not None
    return subprocess.run([docker_cli, "compose", "-p", project, "-f", str(COMPOSE_FILE), *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture
def project(docker_client: docker.DockerClient) -> Iterator[str]:
    """A compose project of the paired files, up; taken down whatever the test does."""
    require_compose()
    build_images(client=docker_client)  # testbed/*:latest, cached: instant when current
    name = f"testbed-compose-{secrets.token_hex(4)}"
    try:
        up = compose(name, "up", "--detach", "--no-build", "--wait", "--wait-timeout", "120")
        assert up.returncode == 0, f"docker compose up failed:\n{up.stderr[-3000:]}"
        yield name
    finally:
        down = compose(name, "down", "--volumes", "--remove-orphans", "--timeout", "2")
        assert down.returncode == 0, f"docker compose down failed:\n{down.stderr[-3000:]}"
    assert labelled_objects(docker_client, f"{PROJECT_LABEL}={name}") == []


def healthy(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok
    except requests.RequestException:
        return False


def order(port: int, order_id: str) -> requests.Response:
    return requests.post(f"http://127.0.0.1:{port}/orders", json={"order_id": order_id},
                         timeout=10)


def processed(port: int) -> dict[str, int]:
    try:
        return dict(requests.get(f"http://127.0.0.1:{port}/ledger", timeout=2)
                    .json()["processed"])
    except (requests.RequestException, ValueError):
        return {}


def set_proxy(name: str, enabled: bool) -> None:
    requests.post(f"http://127.0.0.1:{TOXIPROXY_API}/proxies/{name}",
                  json={"enabled": enabled}, timeout=5).raise_for_status()


def test_docker_compose_up_runs_the_paired_topology(project: str) -> None:
    ports = [SYNC_GATEWAY, ASYNC_GATEWAY, *ASYNC_CONSUMERS.values()]
    assert eventually(lambda: all(healthy(port) for port in ports), 60), \
        {port: healthy(port) for port in ports}

    synchronous = order(SYNC_GATEWAY, "compose-sync")
    assert synchronous.status_code == 200, synchronous.text
    assert synchronous.json()["path"] == ["gateway", "orders", "payments", "inventory"]

    asynchronous = order(ASYNC_GATEWAY, "compose-async")
    assert asynchronous.status_code == 202, asynchronous.text
    for name, port in ASYNC_CONSUMERS.items():
        assert eventually(lambda port=port: processed(port).get("compose-async") == 1, 30), \
            f"{name} never processed the async order: {processed(port)}"

    set_proxy(SYNC_HOP, enabled=False)  # the link_down fault, by hand
    try:
        broken = order(SYNC_GATEWAY, "compose-cut")
        assert broken.status_code >= 500, broken.text
        assert "orders" in broken.text  # the chain of causes names the hop that failed
    finally:
        set_proxy(SYNC_HOP, enabled=True)
    healed = order(SYNC_GATEWAY, "compose-healed")
    assert healed.status_code == 200, healed.text


def test_a_docker_cli_without_compose_gets_an_error_naming_the_fix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A docker config without the plugin (where our set-up installs it): the error says
    what is missing, the command that builds it, and where it goes."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    if compose_version() is not None:
        pytest.skip("a system-wide compose plugin answers here")
    with pytest.raises(ComponentError) as caught:
        require_compose()
    message = str(caught.value)
    assert "`docker compose` (v2) is not available" in message
    assert "testbed setup --docker" in message and str(tmp_path / "cli-plugins") in message
