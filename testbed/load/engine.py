"""The part of the load generator that keeps time, run in a process of its own.

In the controller's process the samplers, the fault schedule and the Toxiproxy adapter
compete for the GIL, which was measured to delay sends by up to 50 ms. Here nothing
else runs: a dispatcher keeps the schedule and hands each due request to a pool of
worker threads, each holding one keep-alive connection (http.client, the cheapest
client per request in the standard library). Parent and child share CLOCK_MONOTONIC.

Protocol: the parent writes one pickled EngineSpec to stdin; the child answers with a
pickled ("started", start_time) once its workers are ready, then a pickled EngineResult.
Run as: ``python -m testbed.load`` (its __main__ calls main() here, so the pickled
classes resolve to this module on both sides).
"""

from __future__ import annotations

import http.client
import json
import os
import pickle
import queue
import socket
import sys
import threading
import time
from dataclasses import dataclass

from testbed.services.deadline import header as deadline_header


@dataclass(frozen=True)
class EngineSpec:
    host: str
    port: int
    offsets: list[float]  # scheduled send times, seconds after the start
    timeout_s: float
    workers: int
    order_prefix: str
    keys: int = 0  # LoadProfile.keys: orders carry "key": "key-<n mod keys>"
    # Each worker GETs this once before the clock starts, so its keep-alive connection
    # is up before the first order (None: each connects at its first order).
    warm_path: str | None = None


@dataclass(frozen=True)
class EngineResult:
    start: float  # monotonic time of offset 0
    sent: list[float]  # monotonic; NaN when never sent
    done: list[float]
    status: list[int]  # 0: no HTTP response
    error: list[str]


def order_id(prefix: str, index: int) -> str:
    return f"{prefix}-{index:06d}"


def classify(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | http.client.RemoteDisconnected):
        return "reset"
    return "connection"


class Engine:
    def __init__(self, spec: EngineSpec) -> None:
        self.spec = spec
        n = len(spec.offsets)
        self.sent = [float("nan")] * n
        self.done = [float("nan")] * n
        self.status = [0] * n
        self.error = [""] * n
        self.start_time = 0.0
        self._queue: queue.Queue[int | None] = queue.Queue()
        self._threads: list[threading.Thread] = []

    def start(self) -> float:
        """Start the workers, let them settle, then start the clock; returns it."""
        count = min(self.spec.workers, max(1, len(self.spec.offsets)))
        ready = threading.Barrier(count + 1)
        self._threads = [threading.Thread(target=self._work, args=(ready,), daemon=True)
                         for _ in range(count)]
        for thread in self._threads:
            thread.start()
        ready.wait(timeout=30)
        self.start_time = time.monotonic()
        dispatcher = threading.Thread(target=self._dispatch, args=(count,), daemon=True)
        dispatcher.start()
        self._threads.append(dispatcher)
        return self.start_time

    def wait(self) -> EngineResult:
        duration = self.spec.offsets[-1] if self.spec.offsets else 0.0
        deadline = self.start_time + duration + self.spec.timeout_s + 30
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return EngineResult(self.start_time, self.sent, self.done, self.status, self.error)

    def _dispatch(self, workers: int) -> None:
        for index, offset in enumerate(self.spec.offsets):
            delay = self.start_time + offset - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._queue.put(index)
        for _ in range(workers):
            self._queue.put(None)

    def _warm(self) -> http.client.HTTPConnection | None:
        """A connection that has carried one GET of the warm path: what a connection
        costs to set up (through kubectl port-forward on k8s, 100-300 ms each; the first
        2.5 s of a trial's edge latency were that) is paid before time zero. None when
        the entry does not answer: the worker connects at its first order."""
        spec = self.spec
        if spec.warm_path is None:
            return None
        connection = http.client.HTTPConnection(spec.host, spec.port, timeout=spec.timeout_s)
        try:
            connection.request("GET", spec.warm_path)
            connection.getresponse().read()
            return connection
        except (OSError, http.client.HTTPException):
            connection.close()
            return None

    def _work(self, ready: threading.Barrier) -> None:
        spec = self.spec
        connection = self._warm()
        ready.wait(timeout=30)
        while (index := self._queue.get()) is not None:
            if connection is None:
                connection = http.client.HTTPConnection(spec.host, spec.port,
                                                        timeout=spec.timeout_s)
            order = {"order_id": order_id(spec.order_prefix, index)}
            if spec.keys:
                order["key"] = f"key-{index % spec.keys}"
            body = json.dumps(order)
            self.sent[index] = time.monotonic()
            try:
                # The user's patience travels with the order, for hops that honour it.
                connection.request("POST", "/orders", body,
                                   {"Content-Type": "application/json",
                                    **deadline_header(spec.timeout_s)})
                response = connection.getresponse()
                response.read()
                self.status[index] = response.status
                if response.status >= 400:
                    self.error[index] = f"http_{response.status}"
            except (OSError, http.client.HTTPException) as exc:
                self.error[index] = classify(exc)
                connection.close()
                connection = None
            self.done[index] = time.monotonic()
        if connection is not None:
            connection.close()


def exit_with_parent(parent: int) -> None:
    """End the engine as soon as the controller that started it is gone, even by SIGKILL:
    it carries no run id, so neither the run's watchdog nor `testbed gc` can find it, and
    orphaned it would keep sending load (to ports freed for other runs) to its schedule's
    end. A parent gone before this started is caught by the "started" write (no reader)."""
    while os.getppid() == parent:
        time.sleep(0.1)
    os._exit(1)


def main() -> int:
    threading.Thread(target=exit_with_parent, args=(os.getppid(),), daemon=True).start()
    spec: EngineSpec = pickle.load(sys.stdin.buffer)
    engine = Engine(spec)
    out = sys.stdout.buffer
    pickle.dump(("started", engine.start()), out)
    out.flush()
    pickle.dump(engine.wait(), out)
    out.flush()
    return 0
