"""A private RabbitMQ node (own name, ports, data dir, epmd) and its management API.

The node runs from Debian's server script under /usr/lib/rabbitmq/bin as the calling
user, with every listener (AMQP, management, Erlang distribution, epmd) on 127.0.0.1.
A per-run user with a random password replaces guest, which RabbitMQ refuses from
non-loopback peers (a published container port counts as one).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from testbed.components.binaries import EPMD, RABBITMQ
from testbed.components.process import ManagedProcess
from testbed.components.readiness import wait_until
from testbed.errors import BrokerError


@dataclass(frozen=True)
class BrokerAddress:
    """How to reach a broker: AMQP endpoint, management API and credentials."""

    host: str
    amqp_port: int
    management_port: int
    user: str
    password: str

    @property
    def management_url(self) -> str:
        return f"http://{self.host}:{self.management_port}"


@dataclass(frozen=True)
class QueueState:
    """What the management API says about one queue."""

    name: str
    messages: int  # ready + unacked
    ready: int
    unacked: int
    consumers: int


class RabbitAdmin:
    """The subset of the management HTTP API the testbed needs, with timeouts."""

    def __init__(self, address: BrokerAddress, timeout: float = 5.0) -> None:
        self.address = address
        self.timeout = timeout
        self._session = requests.Session()
        self._session.auth = (address.user, address.password)

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = self.address.management_url + "/api" + path
        try:
            response = self._session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise BrokerError(f"RabbitMQ management API unreachable ({method} {path}): {exc}"
                              ) from exc
        if response.status_code >= 400:
            raise BrokerError(f"RabbitMQ management API refused {method} {path}: "
                              f"{response.status_code} {response.text[:200]}")
        return response

    @staticmethod
    def _q(name: str) -> str:
        return urllib.parse.quote(name, safe="")

    def nodes(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/nodes").json())

    def purge(self, vhost: str, queue: str) -> None:
        self._request("DELETE", f"/queues/{self._q(vhost)}/{self._q(queue)}/contents")

    def overview(self) -> dict[str, Any]:
        return dict(self._request("GET", "/overview").json())

    def create_vhost(self, vhost: str) -> None:
        self._request("PUT", f"/vhosts/{self._q(vhost)}")
        self._request("PUT", f"/permissions/{self._q(vhost)}/{self._q(self.address.user)}",
                      json={"configure": ".*", "write": ".*", "read": ".*"})

    def delete_vhost(self, vhost: str) -> None:
        self._request("DELETE", f"/vhosts/{self._q(vhost)}")

    def vhosts(self) -> list[str]:
        return [v["name"] for v in self._request("GET", "/vhosts").json()]

    def declare_exchange(self, vhost: str, name: str, kind: str = "topic") -> None:
        self._request("PUT", f"/exchanges/{self._q(vhost)}/{self._q(name)}",
                      json={"type": kind, "durable": True})

    def declare_queue(self, vhost: str, name: str,
                      arguments: dict[str, Any] | None = None) -> None:
        self._request("PUT", f"/queues/{self._q(vhost)}/{self._q(name)}",
                      json={"durable": True, "arguments": arguments or {}})

    def bind(self, vhost: str, exchange: str, queue: str, routing_key: str) -> None:
        self._request("POST", f"/bindings/{self._q(vhost)}/e/{self._q(exchange)}/q/"
                              f"{self._q(queue)}", json={"routing_key": routing_key})

    def queues(self, vhost: str) -> list[QueueState]:
        """Every queue of a vhost in one request (what a sampler wants per tick)."""
        return [self._state(q) for q in self._request("GET", f"/queues/{self._q(vhost)}").json()]

    @staticmethod
    def _state(data: dict[str, Any]) -> QueueState:
        return QueueState(data["name"], int(data.get("messages", 0)),
                          int(data.get("messages_ready", 0)),
                          int(data.get("messages_unacknowledged", 0)),
                          int(data.get("consumers", 0)))

    def queue(self, vhost: str, name: str) -> QueueState:
        return self._state(self._request("GET", f"/queues/{self._q(vhost)}/{self._q(name)}")
                           .json())

    def close(self) -> None:
        self._session.close()


_CONFIG = """\
listeners.tcp.1 = 127.0.0.1:{amqp_port}
management.tcp.ip = 127.0.0.1
management.tcp.port = {management_port}
default_user = {user}
default_pass = {password}
loopback_users = none
collect_statistics_interval = 250
log.console = true
log.console.level = warning
log.file = false
"""


class RabbitNode:
    """One private RabbitMQ node with its own epmd, for one run."""

    def __init__(self, run_id: str, run_dir: Path, amqp_port: int, management_port: int,
                 dist_port: int, epmd_port: int) -> None:
        server = RABBITMQ.require()
        epmd = EPMD.require()
        self.node_name = f"{run_id}@localhost"
        self.address = BrokerAddress("127.0.0.1", amqp_port, management_port,
                                     f"testbed-{run_id}", secrets.token_urlsafe(16))
        home = run_dir / "rabbitmq"
        home.mkdir(parents=True, exist_ok=True)
        (home / "rabbitmq.conf").write_text(_CONFIG.format(
            amqp_port=amqp_port, management_port=management_port,
            user=self.address.user, password=self.address.password))
        (home / "enabled_plugins").write_text("[rabbitmq_management].\n")
        erlang_env = {
            "HOME": str(home),  # the Erlang cookie lives here, private to this node
            "ERL_EPMD_PORT": str(epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }
        self.env = {
            **erlang_env,
            "RABBITMQ_NODENAME": self.node_name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(amqp_port),
            "RABBITMQ_DIST_PORT": str(dist_port),
            "RABBITMQ_CONFIG_FILE": str(home / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(home / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(home / "mnesia"),
            "RABBITMQ_LOG_BASE": str(home / "log"),
            "RABBITMQ_PID_FILE": str(home / "rabbitmq.pid"),
            # With NOTIFY_SOCKET set the start script execs the VM in its own place, so the
            # broker is our direct child (reaped by us, never a zombie under init). The
            # socket does not exist; the readiness notification simply goes nowhere.
            "NOTIFY_SOCKET": str(home / "no-systemd.sock"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }
        logs = run_dir / "logs"
        self.epmd = ManagedProcess("epmd", [epmd, "-port", str(epmd_port)],
                                   run_id, logs / "epmd.log", env=erlang_env)
        self.process = ManagedProcess("rabbitmq", [server], run_id, logs / "rabbitmq.log",
                                      env=self.env, cwd=home)
        self.admin = RabbitAdmin(self.address)

    def start(self, timeout: float = 60.0) -> float:
        """Boot the node (again, after a halt: same name, data and users); returns the
        seconds until its management API answered."""
        if not self.epmd.running():
            self.epmd.start()
        self.process.start()
        return wait_until(self._ready, f"RabbitMQ node {self.node_name}", timeout,
                          self.process, interval=0.1)

    def _ready(self) -> bool:
        overview = self.admin.overview()
        return bool(overview.get("rabbitmq_version"))

    def running(self) -> bool:
        return self.process.running()

    def halt(self, graceful: bool = True) -> None:
        """Take the broker down but keep its data, so start() brings it back as it was."""
        if graceful:
            self.process.stop(grace=30.0)  # SIGTERM: RabbitMQ shuts down in order
        else:
            self.process.kill()

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """Run rabbitmqctl against this node (it finds it through our epmd and cookie)."""
        ctl = str(Path(RABBITMQ.require()).with_name("rabbitmqctl"))
        try:
            done = subprocess.run([ctl, "-n", self.node_name, *args], env={**os.environ,
                                  **self.env}, capture_output=True, text=True,
                                  timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BrokerError(f"rabbitmqctl {' '.join(args)} failed: {exc}") from exc
        if done.returncode != 0:
            raise BrokerError(f"rabbitmqctl {' '.join(args)} exited {done.returncode}: "
                              f"{(done.stderr or done.stdout).strip()[-500:]}")
        return done.stdout

    def set_memory_high_watermark(self, fraction: float) -> None:
        """A tiny watermark raises the memory alarm at once: publishers get blocked."""
        self.ctl("set_vm_memory_high_watermark", f"{fraction:.10f}")

    def memory_alarm(self) -> bool:
        nodes = self.admin.nodes()
        return any(node.get("mem_alarm") for node in nodes)

    def stop(self) -> None:
        """Throw the node away: its data dir is temporary, so no graceful shutdown."""
        self.admin.close()
        self.process.kill()
        self.epmd.kill()
