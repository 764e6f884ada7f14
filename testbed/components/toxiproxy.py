"""The Toxiproxy server process and the one adapter through which the testbed uses it.

toxiproxy-python keeps the server address on a class (APIConsumer) and sets no request
timeouts. The adapter owns both: it points the class at its own server under a lock,
runs every library call with a deadline, and converts the library's errors to
ToxiproxyError at this boundary.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import requests
import toxiproxy
import toxiproxy.proxy
from toxiproxy.api import APIConsumer
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

from testbed.components.binaries import TOXIPROXY
from testbed.components.process import ManagedProcess
from testbed.components.readiness import http_ok, wait_until
from testbed.errors import ToxiproxyError

T = TypeVar("T")
_API_LOCK = threading.Lock()  # APIConsumer.host/port are process-wide


@dataclass(frozen=True)
class ProxyInfo:
    """A proxy as the server reports it."""

    name: str
    listen: str
    upstream: str
    enabled: bool

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


@dataclass(frozen=True)
class ToxicInfo:
    """A toxic on a proxy, whoever added it (the testbed names its own ``tb-...``)."""

    proxy: str
    name: str
    type: str
    stream: str
    toxicity: float
    attributes: dict[str, Any]

    @property
    def testbeds(self) -> bool:
        return self.name.startswith(TESTBED_TOXIC_PREFIX)


TESTBED_TOXIC_PREFIX = "tb-"


class ToxiproxyClient:
    """Adapter over toxiproxy-python for one server, with timeouts and our errors."""

    def __init__(self, host: str, port: int, timeout: float = 5.0,
                 diagnose: Callable[[], str] | None = None) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.diagnose = diagnose  # why the server may not answer (its process's state)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="toxiproxy-api")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        def bound() -> T:
            with _API_LOCK:
                APIConsumer.host, APIConsumer.port = self.host, self.port
                return fn()

        future = self._pool.submit(bound)
        try:
            return future.result(timeout=self.timeout)
        except FutureTimeout as exc:
            raise ToxiproxyError(f"Toxiproxy at {self.url} did not answer {what} within "
                                 f"{self.timeout:.0f} s (is the server paused or hung?)"
                                 ) from exc
        except (ProxyExists, NotFound, InvalidToxic) as exc:
            raise ToxiproxyError(f"Toxiproxy refused {what}: {exc}") from exc
        except requests.RequestException as exc:
            why = f" ({self.diagnose()})" if self.diagnose else ""
            raise ToxiproxyError(f"Toxiproxy at {self.url} unreachable during {what}{why}: "
                                 f"{exc}") from exc

    def version(self) -> str:
        return self._call("version", lambda: requests.get(
            f"{self.url}/version", timeout=self.timeout).text.strip())

    def create_proxy(self, name: str, listen_port: int, upstream: str) -> ProxyInfo:
        proxy = self._call(f"create proxy {name}", lambda: toxiproxy.Toxiproxy().create(
            upstream=upstream, name=name, listen=f"127.0.0.1:{listen_port}"))
        return ProxyInfo(proxy.name, proxy.listen, proxy.upstream, bool(proxy.enabled))

    def proxies(self) -> dict[str, ProxyInfo]:
        found = self._call("list proxies", lambda: toxiproxy.Toxiproxy().proxies())
        return {name: ProxyInfo(p.name, p.listen, p.upstream, bool(p.enabled))
                for name, p in found.items()}

    def delete_proxy(self, name: str) -> None:
        def delete() -> Any:
            proxy = toxiproxy.Toxiproxy().get_proxy(name)
            return proxy.destroy() if proxy is not None else None

        self._call(f"delete proxy {name}", delete)

    def _proxy(self, name: str) -> toxiproxy.proxy.Proxy:
        proxy = toxiproxy.Toxiproxy().get_proxy(name)
        if proxy is None:
            raise NotFound(f"no proxy named {name}")
        return proxy

    def add_toxic(self, proxy: str, name: str, kind: str, stream: str, toxicity: float,
                  attributes: dict[str, int]) -> None:
        self._call(f"add toxic {name} to {proxy}", lambda: self._proxy(proxy).add_toxic(
            name=name, type=kind, stream=stream, toxicity=toxicity, attributes=attributes))

    def remove_toxic(self, proxy: str, name: str) -> None:
        self._call(f"remove toxic {name} from {proxy}",
                   lambda: self._proxy(proxy).destroy_toxic(name))

    def toxics(self, proxy: str) -> list[str]:
        return sorted(self._call(f"list toxics of {proxy}",
                                 lambda: self._proxy(proxy).toxics()))

    def toxic_infos(self) -> list[ToxicInfo]:
        """Every toxic on every proxy of the server, with its settings."""
        def listing() -> list[ToxicInfo]:
            found = []
            for name, proxy in toxiproxy.Toxiproxy().proxies().items():
                for toxic in proxy.toxics().values():
                    found.append(ToxicInfo(name, toxic.name, toxic.type, toxic.stream,
                                           float(toxic.toxicity), dict(toxic.attributes)))
            return found

        return self._call("list toxics", listing)

    def set_enabled(self, proxy: str, enabled: bool) -> None:
        """Disabling drops every open connection and stops listening: a link down."""
        def switch() -> None:
            target = self._proxy(proxy)
            target.enable() if enabled else target.disable()

        self._call(f"{'enable' if enabled else 'disable'} {proxy}", switch)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class ToxiproxyServer:
    """A private toxiproxy-server on 127.0.0.1, one per run."""

    def __init__(self, run_id: str, run_dir: Path, api_port: int) -> None:
        binary = TOXIPROXY.require()
        self.api_port = api_port
        self.process = ManagedProcess(
            "toxiproxy-server",
            [binary, "-host", "127.0.0.1", "-port", str(api_port)],
            run_id, run_dir / "logs" / "toxiproxy.log")
        self.client = ToxiproxyClient("127.0.0.1", api_port, diagnose=self._state)

    def _state(self) -> str:
        code = self.process.exit_code()
        if code is None:
            return f"toxiproxy-server pid {self.process.pid} is running"
        if not self.process.log_path.exists():
            return (f"toxiproxy-server exited with code {code} and the run's directory is "
                    "gone: something swept the run (see sweeps.log in the state root)")
        return (f"toxiproxy-server exited with code {code}; the last lines of its log: "
                f"{self.process.log_tail(8)!r}")

    def start(self, timeout: float = 15.0) -> float:
        """Start and wait until the API answers; returns the seconds it took."""
        self.process.start()
        return wait_until(lambda: http_ok(f"{self.client.url}/version"),
                          "toxiproxy-server", timeout, self.process)

    def stop(self) -> None:
        self.client.close()
        self.process.stop(grace=2.0)
