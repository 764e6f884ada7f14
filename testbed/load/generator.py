"""An open-loop, constant-arrival-rate load generator without coordinated omission.

Requests are due at fixed times whatever happened to earlier ones. Latency is measured
from the *scheduled* time, so a request that had to wait (for a free worker, for a
frozen server) shows that wait instead of hiding it. The timing runs in a process of
its own (testbed.load.engine, started as ``python -m testbed.load``), so nothing in the
controller can delay a send (measured: samplers in the same process delayed sends by up
to 50 ms). When it still cannot keep up, the lag between scheduled and actual send says
so in the summary.

Every run is bounded: the profile caps count and duration, every request has a
timeout, and the run ends by itself after the last request.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import urllib.parse
from dataclasses import dataclass

import numpy as np
import pandas as pd

from testbed.load.engine import EngineResult, EngineSpec, order_id
from testbed.load.profile import LoadProfile, LoadSpecError


@dataclass(frozen=True)
class LoadSummary:
    """How well the generator kept its schedule."""

    scheduled: int
    sent: int
    lag_p50_s: float
    lag_p99_s: float
    lag_max_s: float
    fell_behind: bool  # p99 lag above the tolerance: the load was not what was asked


class LoadGenerator:
    """Send orders to ``url`` (a gateway) on the profile's schedule."""

    def __init__(self, url: str, profile: LoadProfile, topology: str = "",
                 timeout_s: float = 5.0, workers: int = 64, order_prefix: str = "o",
                 origin: float | None = None, lag_tolerance_s: float = 0.02,
                 warm_path: str | None = None) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "http" or parsed.hostname is None or parsed.port is None:
            raise LoadSpecError(f"load target must be http://host:port, got {url!r}")
        self.profile = profile
        self.topology = topology
        self.origin = origin
        self.lag_tolerance_s = lag_tolerance_s
        self.timeout_s = timeout_s
        self._offsets = profile.offsets()
        self.spec = EngineSpec(parsed.hostname, parsed.port, self._offsets.tolist(),
                               timeout_s, workers, order_prefix, profile.keys, warm_path)
        self.start_time = 0.0
        self._child: subprocess.Popen[bytes] | None = None
        self._result: EngineResult | None = None

    def start(self) -> LoadGenerator:
        """Start the engine; returns once its clock runs (see ``start_time``)."""
        self._child = subprocess.Popen(
            [sys.executable, "-m", "testbed.load"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE)
        assert self._child.stdin is not None and self._child.stdout is not None
        pickle.dump(self.spec, self._child.stdin)
        self._child.stdin.close()
        tag, self.start_time = pickle.load(self._child.stdout)
        assert tag == "started"
        if self.origin is None:
            self.origin = self.start_time
        return self

    def wait(self) -> pd.DataFrame:
        """Block until every request has finished (bounded by schedule + timeout)."""
        assert self._child is not None and self._child.stdout is not None
        try:
            self._result = pickle.load(self._child.stdout)
            self._child.wait(30)
        finally:
            self._child.stdout.close()
            if self._child.poll() is None:
                self._child.kill()
                self._child.wait()
        return self.frame()

    def run(self) -> pd.DataFrame:
        return self.start().wait()

    def order_id(self, index: int) -> str:
        return order_id(self.spec.order_prefix, index)

    def frame(self) -> pd.DataFrame:
        """One row per request, times relative to the shared origin."""
        assert self._result is not None and self.origin is not None
        result = self._result
        scheduled = result.start + self._offsets
        sent, done = np.array(result.sent), np.array(result.done)
        status = np.array(result.status, dtype=np.int32)
        finished = ~np.isnan(done)
        return pd.DataFrame({
            "t_scheduled": scheduled - self.origin,
            "t_sent": sent - self.origin,
            "latency_s": np.where(finished & (status > 0), done - scheduled, np.nan),
            # what the user waited for any outcome: an answer, an error, or giving up
            "waited_s": np.where(finished, done - scheduled, np.nan),
            "status": status,
            "error": [e or ("" if f else "not_sent")
                      for e, f in zip(result.error, finished, strict=True)],
            "ok": (status >= 200) & (status < 300),
            "topology": self.topology,
            "order_id": [self.order_id(i) for i in range(len(self._offsets))],
        })

    def summary(self) -> LoadSummary:
        assert self._result is not None
        lag = np.array(self._result.sent) - (self._result.start + self._offsets)
        lag = lag[~np.isnan(lag)]
        if len(lag) == 0:
            return LoadSummary(len(self._offsets), 0, 0.0, 0.0, 0.0, len(self._offsets) > 0)
        p99 = float(np.percentile(lag, 99))
        return LoadSummary(len(self._offsets), len(lag), float(np.percentile(lag, 50)), p99,
                           float(lag.max()), p99 > self.lag_tolerance_s)
