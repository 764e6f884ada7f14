"""The load generator's warm-up, against a real HTTP server on 127.0.0.1: each worker's
keep-alive connection carries one GET of the warm path before time zero, and the orders
then travel on those connections (a connection's set-up is not an order's latency)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from testbed.load import LoadGenerator, constant

WORKERS = 4


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the services answer
    seen: ClassVar[list[tuple[str, str, int]]] = []  # (method, path, client port)
    lock: ClassVar[threading.Lock] = threading.Lock()

    def _answer(self, status: int) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        with self.lock:
            self.seen.append((self.command, self.path, self.client_address[1]))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self._answer(200)

    def do_POST(self) -> None:
        self._answer(202)

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    _Recorder.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_each_worker_warms_its_connection_before_the_first_order(
        server: ThreadingHTTPServer) -> None:
    url = f"http://127.0.0.1:{server.server_address[1]}"
    frame = LoadGenerator(url, constant(20, 1.0), workers=WORKERS,
                          warm_path="/health").run()
    assert frame["ok"].all() and len(frame) == 20
    seen = list(_Recorder.seen)
    warm = seen[:WORKERS]
    assert [(m, p) for m, p, _ in warm] == [("GET", "/health")] * WORKERS
    warmed = {port for _, _, port in warm}
    assert len(warmed) == WORKERS  # one connection per worker
    orders = seen[WORKERS:]
    assert len(orders) == 20 and all(m == "POST" for m, _, _ in orders)
    assert {port for _, _, port in orders} <= warmed  # no connection made after time zero


def test_without_a_warm_path_the_first_order_opens_the_connection(
        server: ThreadingHTTPServer) -> None:
    url = f"http://127.0.0.1:{server.server_address[1]}"
    LoadGenerator(url, constant(20, 0.5), workers=WORKERS).run()
    assert all(m == "POST" for m, _, _ in _Recorder.seen)
