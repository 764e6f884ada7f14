"""Read-after-write, simulated: testbed.observe.readback's closed loop on the model.

One write at a time to the entry; once it is answered, reads of the reader's read side
(its ledger: the order is visible once the reader recorded it) every ``poll_s`` until
it shows or ``max_wait_s`` passes; ``pause_s`` before the next write. A read costs one
HTTP hop (``Calibration.http_hop_ms``) and sees the ledger as it is half way through,
when the reader's handler looks. The frame has the real read-back's columns, so the
same metrics (staleness, stale first reads, never visible) read both.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import asdict
from typing import Any

import numpy as np
import simpy

from testbed.analysis.frames import REQUESTS, SAMPLES
from testbed.model.calibration import Calibration
from testbed.model.errors import ModelError
from testbed.model.flow import Call, drive
from testbed.model.record import (
    Counts,
    counts,
    events_frame,
    ledgers_frame,
    order_ids,
    requests_frame,
    times,
)
from testbed.model.server import Server
from testbed.model.simulate import build_shape, knobs_changed
from testbed.model.timers import Timers
from testbed.observe.result import RunResult
from testbed.topology.model import Topology


class Writer:
    """The read-back's user: one write in flight, answered into ``done``/``outcome``."""

    def __init__(self, env: simpy.Environment, n: int) -> None:
        self.env = env
        self.sent = times(n, math.nan)
        self.done = times(n, math.nan)
        self.outcome = counts(n)
        self.answered: simpy.Event = env.event()

    def answer(self, call: Call, outcome: int) -> None:
        self.done[call.order] = self.env.now
        self.outcome[call.order] = outcome
        self.answered.succeed()


def simulate_readback(topology: Topology, reader: str, count: int, *, poll_s: float = 0.005,
                      max_wait_s: float = 2.0, pause_s: float = 0.05, timeout_s: float = 5.0,
                      calibration: Calibration | None = None, seed: int = 1,
                      name: str | None = None) -> RunResult:
    """``count`` writes read back from ``reader``, as read_after_write does them."""
    if count < 1 or poll_s <= 0 or max_wait_s <= 0:
        raise ModelError(f"readback: count={count}, poll_s={poll_s}, max_wait_s={max_wait_s}; "
                         "give a count of 1 or more and times above 0")
    if reader not in {s.name for s in topology.services}:
        raise ModelError(f"readback: no service {reader!r} in {topology.name}")
    calibration = calibration if calibration is not None else Calibration()
    name = name or topology.name
    env = simpy.Environment()
    timers = Timers(env)
    ledgers: dict[str, Counts] = {spec.name: counts(count) for spec in topology.services}
    queued = times(count, 0.0)
    ids = order_ids(name, count)
    shape = build_shape(env, topology, calibration, timers, ledgers, queued, seed, "as_knobs",
                        ids)
    writer = Writer(env, count)
    reads: list[dict[str, Any]] = []
    read_s = calibration.http_hop_ms / 1000.0
    loop = env.process(_writes(env, shape.entry, timers, writer, ledgers[reader], reads,
                               timeout_s, poll_s, max_wait_s, pause_s, read_s))
    env.run(until=loop)
    frame = requests_frame(np.asarray(writer.sent), writer.sent, writer.done, writer.outcome,
                           queued, topology.name, ids)
    for column in ("reads", "read_errors", "first_read_visible", "visible", "staleness_s"):
        frame[column] = [row[column] for row in reads]
    meta = {"topology": topology.name, "deployment": "model", "runtime": "model",
            "reader": reader, "writes": count, "order_prefix": name, "simulated": True,
            "services": [spec.name for spec in topology.services],
            "knobs": knobs_changed(topology),
            "model": {"seed": seed, "calibration": asdict(calibration),
                      "simulated_s": env.now}}
    return RunResult(name, REQUESTS.frame(frame.to_dict("records")), SAMPLES.empty(),
                     events_frame([]), ledgers_frame(ledgers, ids), meta)


def _writes(env: simpy.Environment, entry: Server, timers: Timers, writer: Writer,
            ledger: Counts, reads: list[dict[str, Any]], timeout_s: float, poll_s: float,
            max_wait_s: float, pause_s: float, read_s: float
            ) -> Generator[simpy.Event, Any, None]:
    for n in range(len(writer.sent)):
        writer.answered = env.event()
        writer.sent[n] = env.now
        call = Call(writer, entry.into, n, env.now + timeout_s)
        if entry.into.tracked:
            entry.into.in_flight.add(call)
        timers.add(call, timeout_s)
        env.process(drive(entry.visit(n, call)))
        yield writer.answered
        ok = 200 <= writer.outcome[n] < 300
        reads.append((yield from _read_back(env, ledger, n, env.now, poll_s, max_wait_s,
                                            read_s)) if ok else _unseen(0))
        yield env.timeout(pause_s)


def _unseen(sent: int) -> dict[str, Any]:
    return {"reads": sent, "read_errors": 0, "first_read_visible": False, "visible": False,
            "staleness_s": math.nan}


def _read_back(env: simpy.Environment, ledger: Counts, order: int, answered: float,
               poll_s: float, max_wait_s: float, read_s: float
               ) -> Generator[simpy.Event, Any, dict[str, Any]]:
    """Reads until the order shows in the reader's ledger (see the real _read_until_visible)."""
    deadline, limit, sent = answered + max_wait_s, int(max_wait_s / poll_s) + 1, 0
    while sent < limit:
        started = env.now
        yield env.timeout(read_s / 2)  # the read reaches the reader's handler
        seen = ledger[order] > 0
        yield env.timeout(read_s / 2)
        sent += 1
        if seen:
            return {"reads": sent, "read_errors": 0, "first_read_visible": sent == 1,
                    "visible": True, "staleness_s": 0.0 if sent == 1 else started - answered}
        if env.now + poll_s > deadline:
            break
        yield env.timeout(poll_s)
    return _unseen(sent)
