"""An open-loop, constant-arrival-rate load generator without coordinated omission.

Requests are due at fixed times whatever happened to earlier ones. A dispatcher keeps
the schedule and hands each due request to a pool of worker threads, each holding its
own keep-alive connection (plain http.client: the cheapest client per request in the
standard library). Latency is measured from the *scheduled* time, so a request that
had to wait for a free worker shows that wait instead of hiding it. When the workers
cannot keep up, the lag between scheduled and actual send says so in the result.

Every run is bounded: the profile caps count and duration, every request has a
timeout, and the run ends by itself after the last request.
"""

from __future__ import annotations

import http.client
import json
import queue
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass

import numpy as np
import pandas as pd

from testbed.load.profile import LoadProfile

NO_RESPONSE = 0


@dataclass(frozen=True)
class LoadSummary:
    """How well the generator kept its schedule."""

    scheduled: int
    sent: int
    lag_p50_s: float
    lag_p99_s: float
    lag_max_s: float
    fell_behind: bool  # p99 lag above the tolerance: the load was not what was asked


def _classify(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | http.client.RemoteDisconnected):
        return "reset"
    return "connection"


class LoadGenerator:
    """Send orders to ``url`` (a gateway) on the profile's schedule."""

    def __init__(self, url: str, profile: LoadProfile, topology: str = "",
                 timeout_s: float = 5.0, workers: int = 64, order_prefix: str = "o",
                 origin: float | None = None, lag_tolerance_s: float = 0.02) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "http" or parsed.hostname is None or parsed.port is None:
            raise ValueError(f"load target must be http://host:port, got {url!r}")
        self.host, self.port = parsed.hostname, parsed.port
        self.profile = profile
        self.topology = topology
        self.timeout_s = timeout_s
        self.workers = workers
        self.order_prefix = order_prefix
        self.origin = origin
        self.lag_tolerance_s = lag_tolerance_s
        offsets = profile.offsets()
        n = len(offsets)
        self._offsets = offsets
        self._sent = np.full(n, np.nan)
        self._done = np.full(n, np.nan)
        self._status = np.zeros(n, dtype=np.int32)
        self._error = [""] * n
        self._queue: queue.Queue[int | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._start = 0.0

    # -- the run --------------------------------------------------------------------------

    def start(self) -> LoadGenerator:
        """Start in the background (faults can be injected meanwhile); see wait()."""
        self._start = time.monotonic()
        if self.origin is None:
            self.origin = self._start
        count = min(self.workers, max(1, len(self._offsets)))
        self._threads = [threading.Thread(target=self._work, name=f"load-{i}", daemon=True)
                         for i in range(count)]
        self._threads.append(threading.Thread(target=self._dispatch, name="load-dispatch",
                                              daemon=True))
        for thread in self._threads:
            thread.start()
        return self

    def wait(self) -> pd.DataFrame:
        """Block until every request has finished (bounded by schedule + timeout)."""
        deadline = self._start + self.profile.duration_s + self.timeout_s + 30
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return self.frame()

    def run(self) -> pd.DataFrame:
        return self.start().wait()

    def _dispatch(self) -> None:
        for index, offset in enumerate(self._offsets):
            delay = self._start + offset - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._queue.put(index)
        for _ in range(len(self._threads) - 1):
            self._queue.put(None)

    def _work(self) -> None:
        connection: http.client.HTTPConnection | None = None
        while True:
            index = self._queue.get()
            if index is None:
                break
            if connection is None:
                connection = http.client.HTTPConnection(self.host, self.port,
                                                        timeout=self.timeout_s)
            body = json.dumps({"order_id": self.order_id(index)})
            self._sent[index] = time.monotonic()
            try:
                connection.request("POST", "/orders", body,
                                   {"Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
                self._status[index] = response.status
                if response.status >= 400:
                    self._error[index] = f"http_{response.status}"
            except (OSError, http.client.HTTPException) as exc:
                self._error[index] = _classify(exc)
                connection.close()
                connection = None
            self._done[index] = time.monotonic()
        if connection is not None:
            connection.close()

    # -- results ------------------------------------------------------------------------

    def order_id(self, index: int) -> str:
        return f"{self.order_prefix}-{index:06d}"

    def frame(self) -> pd.DataFrame:
        """One row per request, times relative to the shared origin."""
        assert self.origin is not None
        scheduled = self._start + self._offsets
        finished = ~np.isnan(self._done)
        latency = np.where(finished & (self._status > 0), self._done - scheduled, np.nan)
        ok = (self._status >= 200) & (self._status < 300)
        return pd.DataFrame({
            "t_scheduled": scheduled - self.origin,
            "t_sent": self._sent - self.origin,
            "latency_s": latency,
            "status": self._status,
            "error": [e or ("" if done else "not_sent")
                      for e, done in zip(self._error, finished, strict=True)],
            "ok": ok,
            "topology": self.topology,
            "order_id": [self.order_id(i) for i in range(len(self._offsets))],
        })

    def summary(self) -> LoadSummary:
        lag = self._sent - (self._start + self._offsets)
        lag = lag[~np.isnan(lag)]
        if len(lag) == 0:
            return LoadSummary(len(self._offsets), 0, 0.0, 0.0, 0.0, len(self._offsets) > 0)
        p99 = float(np.percentile(lag, 99))
        return LoadSummary(len(self._offsets), len(lag), float(np.percentile(lag, 50)), p99,
                           float(lag.max()), p99 > self.lag_tolerance_s)
