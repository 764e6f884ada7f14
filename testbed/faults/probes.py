"""Caller's-side probes: open a fresh TCP connection, send a request, time the answer.

Fresh connections on purpose: Toxiproxy decides toxicity per connection, and a toxic
may miss connections that were already open. HTTP probes ask for /health; AMQP probes
send the protocol header, to which a broker answers with Connection.Start; Kafka probes
send an ApiVersions request.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Literal

import psutil

Outcome = Literal["ok", "refused", "reset", "timeout", "closed"]

_REQUESTS = {
    "http": b"GET /health HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n",
    "amqp": b"AMQP\x00\x00\x09\x01",
    # ApiVersions v0 (key 18), correlation id 1, client id "probe": every broker answers
    "kafka": b"\x00\x00\x00\x0f\x00\x12\x00\x00\x00\x00\x00\x01\x00\x05probe",
}


@dataclass(frozen=True)
class ProbeResult:
    outcome: Outcome
    seconds: float  # until the first byte (ok), or until the failure showed
    received: int  # bytes read before the connection ended or the read stopped


def probe(port: int, protocol: str, timeout: float = 2.0, read_all: bool = False) -> ProbeResult:
    """One request over a fresh connection to 127.0.0.1:port."""
    started = time.monotonic()
    received = 0
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(_REQUESTS[protocol])
            first = sock.recv(65536)
            elapsed = time.monotonic() - started
            if not first:
                return ProbeResult("closed", elapsed, 0)
            received = len(first)
            while read_all:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += len(chunk)
            return ProbeResult("ok", elapsed, received)
    except ConnectionRefusedError:
        return ProbeResult("refused", time.monotonic() - started, received)
    except ConnectionResetError:
        return ProbeResult("reset", time.monotonic() - started, received)
    except TimeoutError:
        return ProbeResult("timeout", time.monotonic() - started, received)
    except OSError:
        return ProbeResult("refused", time.monotonic() - started, received)


def listeners(port: int) -> str:
    """Who listens on 127.0.0.1:port (pid and command), for an error that says who answered
    when nobody should have."""
    found = []
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            try:
                command = " ".join(psutil.Process(conn.pid).cmdline()[:4]) if conn.pid else "?"
            except psutil.Error:
                command = "?"
            found.append(f"pid {conn.pid} ({command})")
    return ", ".join(found) or "nobody"
