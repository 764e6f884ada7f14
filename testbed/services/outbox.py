"""The transactional outbox: the order and its event written in one local transaction,
and a relay that publishes pending events until the broker confirms them.

A direct publish after the database write loses the event when the process dies in
between (or the broker is away); here the event is in the same SQLite transaction as the
order, so whatever is committed is published eventually: after a crash the restarted
relay finds it, after a broker outage it is sent once the broker is back. The price is
at-least-once (a crash after the publish and before the delete sends it twice).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pika.exceptions

RELAY_BATCH = 100
RELAY_BACKOFF_MAX_S = 0.5


class OutboxStore:
    """Orders (the gateway's ledger) and pending events in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self.pending_event = threading.Event()  # set when there is something to relay
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS orders "
                             "(order_id TEXT PRIMARY KEY, count INTEGER NOT NULL)")
            self._db.execute("CREATE TABLE IF NOT EXISTS outbox "
                             "(id INTEGER PRIMARY KEY AUTOINCREMENT, body BLOB NOT NULL)")
        if self.pending():
            self.pending_event.set()

    def record_with_event(self, order_id: str, body: bytes) -> None:
        """The order and its event, both or neither."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("INSERT INTO orders VALUES (?, 1) ON CONFLICT(order_id) "
                                 "DO UPDATE SET count = count + 1", (order_id,))
                self._db.execute("INSERT INTO outbox (body) VALUES (?)", (body,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        self.pending_event.set()

    def batch(self) -> list[tuple[int, bytes]]:
        with self._lock:
            return list(self._db.execute("SELECT id, body FROM outbox ORDER BY id LIMIT ?",
                                         (RELAY_BATCH,)))

    def delete(self, event_id: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM outbox WHERE id = ?", (event_id,))

    def pending(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    # The ledger interface (what /ledger and /read show): the orders table.
    def count(self, order_id: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT count FROM orders WHERE order_id = ?",
                                   (order_id,)).fetchone()
        return int(row[0]) if row else 0

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {order: int(n) for order, n in self._db.execute(
                "SELECT order_id, count FROM orders ORDER BY rowid")}


def relay_forever(store: OutboxStore, publish: Callable[[bytes], None],
                  drop: Callable[[], None], count: Callable[[str], None]) -> None:
    """Publish pending events in order, deleting each once confirmed; back off (capped)
    while the broker cannot be reached. Runs in its own thread for the process's life."""
    backoff = 0.0
    while True:
        store.pending_event.wait(timeout=0.5)
        store.pending_event.clear()
        for event_id, body in store.batch():
            try:
                publish(body)
            except (pika.exceptions.AMQPError, OSError):
                count("relay_errors")
                with contextlib.suppress(Exception):
                    drop()
                backoff = min(RELAY_BACKOFF_MAX_S, max(0.05, backoff * 2))
                time.sleep(backoff)
                store.pending_event.set()  # try the rest again
                break
            store.delete(event_id)
            count("relayed")
            backoff = 0.0
        else:
            if store.pending():
                store.pending_event.set()
