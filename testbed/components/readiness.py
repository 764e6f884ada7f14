"""Waiting for things to come up: poll a check until it passes, the deadline passes,
or the process behind it dies (then fail at once, with its log)."""

from __future__ import annotations

import time
from collections.abc import Callable

import requests

from testbed.components.process import ManagedProcess
from testbed.errors import StartupError


def wait_until(check: Callable[[], bool], what: str, timeout: float,
               process: ManagedProcess | None = None, interval: float = 0.05) -> float:
    """Poll ``check`` until true; returns the seconds waited. Errors carry the log tail."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        try:
            if check():
                return time.monotonic() - start
        except Exception:
            pass
        if process is not None and not process.running():
            raise StartupError(what, f"its process exited with code {process.exit_code()}",
                               process.log_tail())
        if time.monotonic() >= deadline:
            raise StartupError(what, f"no answer within {timeout:.0f} s",
                               process.log_tail() if process else "")
        time.sleep(interval)


def http_ok(url: str, timeout: float = 1.0, auth: tuple[str, str] | None = None) -> bool:
    """True when GET url answers 2xx."""
    return requests.get(url, timeout=timeout, auth=auth).ok
