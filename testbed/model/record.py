"""The model's observations as the frames a real trial writes (testbed.analysis.frames),
so every metric reads predicted and measured runs alike.

Kept in array.array while the simulation runs: an index costs tens of nanoseconds, as
in a list, but the garbage collector never walks them (a list of 3.6 million numbers,
walked at every full collection, made an hour's run quadratic); turned into numpy-backed
frames once at the end. One model-only
column: requests.queued_s, the seconds an order waited for a free worker in all the
services it visited (real runs cannot see it; the metrics never read it).
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping, MutableSequence, Sequence

import numpy as np
import pandas as pd

from testbed.analysis.frames import EVENTS, SAMPLES
from testbed.load.engine import order_id
from testbed.model.flow import REFUSED, RESET, TIMEOUT
from testbed.observe.result import LEDGER_COLUMNS

_ERRORS = {TIMEOUT: "timeout", REFUSED: "refused", RESET: "reset"}
LAG_TOLERANCE_S = 0.02  # testbed.load.LoadGenerator's default
UNREADABLE = "<unreadable>"  # testbed.observe.dead_letters: a message without an order id


Counts = MutableSequence[int]  # per order: times processed, an outcome code
Seconds = MutableSequence[float]  # per order: a time


def counts(n: int) -> array[int]:
    """n zeros, one per order."""
    return array("q", bytes(8 * n))


def times(n: int, value: float) -> array[float]:
    """n times (seconds), one per order, all ``value`` to begin with."""
    return array("d", [value]) * n


class Samples:
    """The sampler's readings, long format, as three arrays and a table of names."""

    def __init__(self) -> None:
        self.t: array[float] = array("d")
        self.key: array[int] = array("q")
        self.value: array[float] = array("d")
        self._keys: dict[tuple[str, str], int] = {}

    def add(self, t: float, source: str, metric: str, value: float) -> None:
        key = self._keys.get((source, metric))
        if key is None:
            key = self._keys[(source, metric)] = len(self._keys)
        self.t.append(t)
        self.key.append(key)
        self.value.append(value)

    def frame(self) -> pd.DataFrame:
        if not self.t:
            return SAMPLES.empty()
        names = list(self._keys)
        key = np.frombuffer(self.key, dtype=np.int64)
        return pd.DataFrame({
            "t": np.frombuffer(self.t, dtype=float).copy(),
            "source": np.array([s for s, _ in names], dtype=object)[key],
            "metric": np.array([m for _, m in names], dtype=object)[key],
            "value": np.frombuffer(self.value, dtype=float).copy()})


def order_ids(prefix: str, n: int) -> np.ndarray:
    return np.array([order_id(prefix, i) for i in range(n)], dtype=object)


def requests_frame(offsets: np.ndarray, sent: Sequence[float], done: Sequence[float],
                   outcome: Sequence[int], queued: Sequence[float], topology: str,
                   ids: np.ndarray) -> pd.DataFrame:
    sent_a = np.asarray(sent, dtype=float)
    done_a = np.asarray(done, dtype=float)
    code = np.asarray(outcome, dtype=np.int64)
    status = np.where(code > 0, code, 0)
    finished = ~np.isnan(done_a)
    error = np.full(len(code), "", dtype=object)
    failed_http = status >= 400
    error[failed_http] = np.char.add("http_", status[failed_http].astype(str)).astype(object)
    for value, text in _ERRORS.items():
        error[code == value] = text
    error[~finished] = "not_sent"
    return pd.DataFrame({
        "t_scheduled": offsets.astype(float),
        "t_sent": sent_a,
        "latency_s": np.where(finished & (status > 0), done_a - offsets, np.nan),
        "waited_s": np.where(finished, done_a - offsets, np.nan),
        "status": status.astype(np.int64),
        "error": error,
        "ok": (status >= 200) & (status < 300),
        "topology": topology,
        "order_id": ids,
        "queued_s": np.asarray(queued, dtype=float),
    })


def load_summary(offsets: np.ndarray, sent: Sequence[float]) -> dict[str, object]:
    """What testbed.load.LoadSummary says of a run: how well the schedule was kept."""
    lag = np.asarray(sent, dtype=float) - offsets
    lag = lag[~np.isnan(lag)]
    if lag.size == 0:
        return {"scheduled": len(offsets), "sent": 0, "lag_p50_s": 0.0, "lag_p99_s": 0.0,
                "lag_max_s": 0.0, "fell_behind": len(offsets) > 0}
    p99 = float(np.percentile(lag, 99))
    return {"scheduled": len(offsets), "sent": int(lag.size),
            "lag_p50_s": float(np.percentile(lag, 50)), "lag_p99_s": p99,
            "lag_max_s": float(lag.max()), "fell_behind": p99 > LAG_TOLERANCE_S}


def ledgers_frame(ledgers: dict[str, Counts], ids: np.ndarray,
                  unreadable: dict[str, int] | None = None,
                  first: Mapping[str, Sequence[int]] | None = None) -> pd.DataFrame:
    """One row per (service, order) processed at least once, services in the given
    order (the topology's, then the DLQs), as a deployment's ledgers read back: a
    service's rows in the order it first processed them where ``first`` says (else by
    order); a DLQ's messages without an order id (poison) as one ``<unreadable>`` row."""
    parts = []
    for service, counts in ledgers.items():
        array = np.asarray(counts, dtype=np.int64)
        if first and service in first:
            seen = np.asarray(first[service], dtype=np.int64)
            hit = seen[array[seen] > 0]
        else:
            hit = np.flatnonzero(array > 0)
        parts.append(pd.DataFrame({"service": np.full(hit.size, service, dtype=object),
                                   "order_id": ids[hit], "count": array[hit]}))
        if unreadable and unreadable.get(service):
            parts.append(pd.DataFrame({"service": [service], "order_id": [UNREADABLE],
                                       "count": [unreadable[service]]}))
    if not parts:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in LEDGER_COLUMNS})
    return pd.concat(parts, ignore_index=True)


def events_frame(rows: list[tuple[float, str, str, str, str]]) -> pd.DataFrame:
    return EVENTS.frame({"t": t, "kind": kind, "fault": fault, "target": target,
                         "detail": detail} for t, kind, fault, target, detail in rows)

