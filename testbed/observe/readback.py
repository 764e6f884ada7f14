"""Read-after-write: write an order, then read it back from a read side until it shows.

What a user of a CQRS-style system sees: the write is acknowledged, yet a read right
after may not show it yet. One write at a time (closed loop), each followed by reads of
the reader's ``GET /read?order_id=`` every ``poll_s`` until the order is visible or
``max_wait_s`` passes, so the window measured is the read side's own lag, not a backlog
built by the measurement. Bounded: ``count`` writes, each read back for at most
``max_wait_s`` (plus one read's timeout) and at most ``max_wait_s / poll_s + 1`` times.

The frame has the requests schema (``testbed.analysis.REQUESTS``; closed loop, so
``t_scheduled`` is the send time) plus, per write:
    reads               reads sent (until the first visible one, or all of them)
    read_errors         reads that got no answer or a non-200
    first_read_visible  the very first read after the write's answer saw it
    visible             some read within max_wait_s saw it
    staleness_s         0 when the first read saw it (read-your-writes held); else
                        seconds from the write's answer to the send of the first read
                        that saw it (the stale window, to within one poll); NaN if the
                        write failed or the order never showed
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import pandas as pd
import requests

from testbed.analysis.frames import REQUESTS
from testbed.runtime.base import Deployment


@dataclass(frozen=True)
class _Seen:
    """The reads after one write."""

    reads: int = 0
    read_errors: int = 0
    first_read_visible: bool = False
    visible: bool = False
    staleness_s: float = math.nan


def _visible(session: requests.Session, url: str, order_id: str, timeout_s: float) -> bool | None:
    """Whether the reader shows the order; None when the read itself failed."""
    try:
        response = session.get(url, params={"order_id": order_id}, timeout=timeout_s)
        return bool(response.json().get("visible")) if response.status_code == 200 else None
    except (requests.RequestException, ValueError):
        return None


def _read_until_visible(session: requests.Session, url: str, order_id: str,
                        answered: float, poll_s: float, max_wait_s: float,
                        timeout_s: float) -> _Seen:
    deadline = answered + max_wait_s
    limit = int(max_wait_s / poll_s) + 1
    reads = errors = 0
    while reads < limit:
        sent = time.monotonic()
        seen = _visible(session, url, order_id, timeout_s)
        reads += 1
        errors += seen is None
        if seen:
            return _Seen(reads, errors, reads == 1, True, 0.0 if reads == 1 else sent - answered)
        if time.monotonic() + poll_s > deadline:
            break
        time.sleep(poll_s)
    return _Seen(reads, errors)


def read_after_write(deployment: Deployment, reader: str, count: int, *,
                     prefix: str = "raw", poll_s: float = 0.005, max_wait_s: float = 2.0,
                     pause_s: float = 0.05, timeout_s: float = 5.0) -> pd.DataFrame:
    """Write ``count`` orders to the deployment's entry, one at a time, and read each back
    from ``reader``'s read side; one row per write (see the module docstring).

    ``pause_s`` separates one write's last read from the next write. Times are seconds
    from the first write.
    """
    if count < 1 or poll_s <= 0 or max_wait_s <= 0:
        raise ValueError(f"read_after_write: count={count}, poll_s={poll_s}, "
                         f"max_wait_s={max_wait_s}; give a count of 1 or more and "
                         "times above 0")
    write_url = f"{deployment.entry_url}/orders"
    read_url = f"{deployment.url(reader)}/read"
    rows = []
    origin = time.monotonic()
    with requests.Session() as session:
        for n in range(count):
            order_id = f"{prefix}-{deployment.id}-{n:06d}"
            sent = time.monotonic()
            status, error = 0, ""
            try:
                status = session.post(write_url, json={"order_id": order_id},
                                      timeout=timeout_s).status_code
                error = "" if status < 400 else f"http_{status}"
            except requests.RequestException as exc:
                error = type(exc).__name__
            answered = time.monotonic()
            ok = 200 <= status < 300
            seen = (_read_until_visible(session, read_url, order_id, answered, poll_s,
                                        max_wait_s, min(timeout_s, max_wait_s))
                    if ok else _Seen())
            rows.append({"t_scheduled": sent - origin, "t_sent": sent - origin,
                         "latency_s": answered - sent if status else math.nan,
                         "status": status, "error": error, "ok": ok,
                         "topology": deployment.topology.name, "order_id": order_id,
                         **asdict(seen)})
            time.sleep(pause_s)
    return REQUESTS.frame(rows)
