"""The record of which orders a service processed, and how often.

Kept in memory for /ledger and appended to a file (one order id per line, flushed per
write) so a crashed service's history survives for the loss/duplicate audit.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        if path.exists():  # a restarted service keeps its history
            self._counts.update(line for line in path.read_text().splitlines() if line)
        self._file = path.open("a", buffering=1)

    def record(self, order_id: str) -> int:
        """Note one processing of an order; returns how many times it has been processed."""
        with self._lock:
            self._counts[order_id] += 1
            self._file.write(order_id + "\n")
            return self._counts[order_id]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def __len__(self) -> int:
        with self._lock:
            return len(self._counts)
