"""Port allocation that is safe across processes (pytest-xdist workers, parallel runs).

Ports are taken below the kernel's ephemeral range, so outgoing connections never grab
a port between allocation and bind. A reservation is a file ``<state>/ports/<port>``
created with O_EXCL and holding the run id; the port must also bind on 127.0.0.1.
Reservations die with their run (released on teardown, by the watchdog, or by gc).
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import time
from pathlib import Path

from testbed.errors import PortInUseError, TestbedError
from testbed.runs import state_root

PORT_RANGE = (20000, 32000)
PORT_RANGE_ENV = "TESTBED_PORT_RANGE"  # e.g. "20000-20100": a narrow window (tests, fences)


def port_range() -> tuple[int, int]:
    """The window ports are taken from: $TESTBED_PORT_RANGE ("low-high") or PORT_RANGE."""
    text = os.environ.get(PORT_RANGE_ENV)
    if not text:
        return PORT_RANGE
    try:
        low, high = (int(part) for part in text.split("-"))
    except ValueError:
        low = high = 0
    if not 1024 <= low < high <= 65536:
        raise TestbedError(f"${PORT_RANGE_ENV}={text!r} is not a port range. Fix: two "
                           "numbers LOW-HIGH with 1024 <= LOW < HIGH <= 65536, e.g. "
                           "20000-21000, below the kernel's ephemeral range")
    return low, high


def ports_dir() -> Path:
    path = state_root() / "ports"
    path.mkdir(parents=True, exist_ok=True)
    return path


def port_is_free(port: int) -> bool:
    """True when a listener could bind 127.0.0.1:port right now. With SO_REUSEADDR, as
    every listener we start sets it (waitress, Toxiproxy, RabbitMQ): a port whose last
    connections linger in TIME_WAIT is free to them, only a live listener is not."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _reserve(port: int, run_id: str) -> bool:
    try:
        fd = os.open(ports_dir() / str(port), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(run_id)
    if port_is_free(port):
        return True
    (ports_dir() / str(port)).unlink(missing_ok=True)
    return False


def allocate_port(run_id: str) -> int:
    """Reserve a free loopback port for this run."""
    low, high = port_range()
    start = random.randrange(low, high)
    for offset in range(high - low):
        port = low + (start - low + offset) % (high - low)
        if _reserve(port, run_id):
            return port
    raise TestbedError(f"no free port in {low}-{high}; run `testbed gc` to free stale ones")


def claim_fixed_port(port: int, run_id: str, owner: str) -> int:
    """Reserve a port the user asked for by number, or say clearly that it is taken."""
    if not 1 <= port <= 65535:
        raise PortInUseError(port, owner)
    if not _reserve(port, run_id):
        raise PortInUseError(port, owner)
    return port


def release_ports(run_id: str) -> None:
    """Drop every reservation held by a run."""
    for entry in ports_dir().iterdir():
        with contextlib.suppress(OSError):
            if entry.read_text() == run_id:
                entry.unlink()


def release_abandoned_reservations(min_age_s: float = 10.0, remove: bool = True) -> list[int]:
    """Drop empty reservation files older than ``min_age_s``: their owner died between
    creating the file and writing its run id (microseconds apart), so no run claims them.
    With ``remove=False`` only name them (`testbed gc --check`)."""
    released = []
    for entry in ports_dir().iterdir():
        with contextlib.suppress(OSError, ValueError):
            info = entry.stat()
            if info.st_size == 0 and time.time() - info.st_mtime > min_age_s:
                port = int(entry.name)
                if remove:
                    entry.unlink()
                released.append(port)
    return released


def reservations() -> dict[int, str]:
    """Port -> run id for every live reservation file."""
    held = {}
    for entry in ports_dir().iterdir():
        with contextlib.suppress(OSError, ValueError):
            held[int(entry.name)] = entry.read_text()
    return held
