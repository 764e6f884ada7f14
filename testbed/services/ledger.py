"""The record of which orders a service processed, and how often.

Kept in memory for /ledger and appended to a file (one order id per line, flushed per
write) so a crashed service's history survives for the loss/duplicate audit.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Protocol


class OrderLedger(Protocol):
    """What /ledger and /read need of a service's record of orders."""

    def count(self, order_id: str) -> int: ...
    def snapshot(self) -> dict[str, int]: ...


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        if path.exists():  # a restarted service keeps its history
            for line in path.read_text().splitlines():
                if line.startswith("-"):
                    self._counts[line[1:]] -= 1
                elif line:
                    self._counts[line] += 1
            self._counts = +self._counts  # forgotten orders leave no zero behind
        self._file = path.open("a", buffering=1)

    def record(self, order_id: str) -> int:
        """Note one processing of an order; returns how many times it has been processed."""
        with self._lock:
            self._counts[order_id] += 1
            self._file.write(order_id + "\n")
            return self._counts[order_id]

    def record_once(self, order_id: str) -> bool:
        """Record an order only if never recorded (the idempotency check and the side
        effect in one step); False when it was a duplicate."""
        with self._lock:
            if self._counts[order_id]:
                return False
            self._counts[order_id] += 1
            self._file.write(order_id + "\n")
            return True

    def forget(self, order_id: str) -> None:
        """Undo one record (a compensating action, e.g. when the publish failed)."""
        with self._lock:
            if self._counts[order_id] <= 1:
                del self._counts[order_id]
            else:
                self._counts[order_id] -= 1
            self._file.write(f"-{order_id}\n")

    def count(self, order_id: str) -> int:
        with self._lock:
            return self._counts.get(order_id, 0)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def __len__(self) -> int:
        with self._lock:
            return len(self._counts)
