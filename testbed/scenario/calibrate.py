"""`testbed calibrate`: the model's machine constants, measured on the runtime at hand.

Each constant is read off a short real trial through a model simple enough to invert,
all trials at a rate far below any capacity so nothing queues:

- http_hop_ms: the edge p50 of a depth-4 chain minus a depth-1 chain's, over the 3 extra
  hops (the client's own cost cancels out);
- publish_confirm_ms: the async edge's p50 (client + the gateway's hop + the confirm)
  less a depth-1 chain's (client + 2 hops), plus one hop;
- handler_ms and delivery_ms: a consumer with no work draining the 600 messages queued
  while it was cut off, one message at a time (prefetch 1: handler + delivery per
  message) and with prefetch 10 (the deliveries overlap the handling: handler only);
- forward_confirm_ms: the same drain by a consumer that publishes the next stage's
  event (confirmed) before each ack, less the prefetch-1 drain's per message;
- reject_ms: a consumer whose handler fails every delivery (error_rate p = 1), each
  nacked and requeued after a 5 ms pause: the time per attempt beyond the pause;
- connect_ms: what a consumer cut off for 2 s at 100 orders/s is behind beyond rate x
  cut, less the half of reconnect_max_s it waits on average before it tries again;
- restart_s: a killed service's fault window beyond its planned down time;
- broker_restart_s: the same for the broker (killed, started again, answering AMQP);
- fault_ms: how long after its planned time each cut is recorded (the median over the
  trials' injections and removals);
- on Kafka (broker kind "kafka"): kafka_produce_ms as publish_confirm_ms, from a Kafka
  pipeline's edge p50; kafka_commit_ms from a Kafka consumer's drain (handler + commit
  per message) less handler_ms; kafka_forward_ms from the same drain by a consumer that
  produces the next event, less that; kafka_restart_s and kafka_rejoin_s from a killed
  Kafka node: its fault window beyond the planned down time, and from the window's end
  until payments handles a message again.

The result is saved per runtime (``calibration-<runtime>.json`` under ~/.cache/testbed,
or $TESTBED_CALIBRATION_DIR) with when and where it was measured; the model uses it
from then on, and every simulated run carries it in its meta (printed in the reports).
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from testbed.analysis import drain_rate, series
from testbed.load import constant, stepped
from testbed.model import Calibration
from testbed.model.calibration import calibration_file
from testbed.observe import RunResult
from testbed.runtime import Runtime
from testbed.scenario import metrics as m
from testbed.scenario.experiment import Experiment, Trial
from testbed.scenario.faults import ServiceFault, fault, unreachable
from testbed.topology import Knobs, Topology, async_pipeline, sync_chain

QUIET = constant(20, 5)  # far below every capacity: nothing waits for a worker
WARM_S = 1.0  # the first second opens every connection: not the steady cost
CUT_S, DOWN_S = 2.0, 1.0
REJECT_S, REJECT_PAUSE_MS = 2.0, 5.0
CUT_LOAD = constant(100, 4)  # 10 ms a message: the reconnect's cost shows in the backlog
# 600 orders queued while payments is cut off, then a trickle while it drains them
BURST = stepped((CUT_S, 300), (3.0, 0.5))


def _per_message_s(result: RunResult) -> float:
    """Seconds per message while payments drains the backlog it was cut off from (the
    load is down to a trickle by then): the inverse of the drain rate from the peak to
    the lowest point after it."""
    rate = drain_rate(m.backlog(result, "payments"), after=CUT_S)
    return 1.0 / rate if rate > 0 else float("nan")


def _lags(result: RunResult, at: float, duration: float | None) -> list[float]:
    """How late the trial recorded its one fault's injection and removal."""
    events = result.events
    planned = {"inject": at, "remove": at + (duration or 0.0)}
    return [max(0.0, float(t) - planned[kind])
            for t, kind in zip(events["t"], events["kind"], strict=True) if kind in planned]


def measure(runtime: Runtime, report_dir: Path) -> tuple[Calibration, dict[str, Any]]:
    """Run the calibration trials; the constants and the raw figures behind them."""
    experiment = Experiment("calibration", runtime, report_dir, "Calibration of the model")
    no_work = Knobs(work_ms=0.0)
    prefetch_1, prefetch_10 = Knobs(prefetch=1), Knobs(prefetch=10)
    # The three at the same time, so whatever else the machine does hits them alike and
    # cancels out of their differences.
    found = experiment.trials([
        Trial("sync_d1", sync_chain(1, knobs=no_work, name="sync_d1"), QUIET),
        Trial("sync_d4", sync_chain(4, knobs=no_work, name="sync_d4"), QUIET),
        Trial("async_d1", async_pipeline(1, knobs=no_work, name="async_d1"), QUIET)])
    queued = [unreachable("payments", at=0.0, duration=CUT_S + 0.25)]
    found |= experiment.trials([
        Trial("drain_p1", async_pipeline(1, overrides={"payments": prefetch_1},
                                         name="drain_p1"), BURST, queued),
        Trial("drain_p10", async_pipeline(1, overrides={"payments": prefetch_10},
                                          name="drain_p10"), BURST, queued),
        Trial("cut", async_pipeline(1, overrides={"payments": prefetch_1}, name="cut"),
              CUT_LOAD, [unreachable("payments", at=1.0, duration=CUT_S)]),
        Trial("drain_forward", async_pipeline(2, overrides={"payments": prefetch_1},
                                              name="drain_forward"), BURST, queued),
        Trial("reject", async_pipeline(1, overrides={"payments": Knobs(error_backoff_ms=
                                                                      REJECT_PAUSE_MS)},
                                       name="reject"), QUIET,
              [fault("error_rate", "payments", at=1.0, duration=REJECT_S, p=1.0)]),
        Trial("restart", sync_chain(2, name="restart"), QUIET,
              [fault("kill", "payments", at=1.0, duration=DOWN_S)]),
        Trial("broker", async_pipeline(1, name="broker"), QUIET,
              [fault("broker_down", at=1.0, duration=DOWN_S, graceful=False)],
              {"drain_timeout_s": 20}),
        *kafka_trials(queued),
    ], concurrent=False)
    p50 = {k: m.edge_latency(found[k], 50, start=WARM_S)  # after the first connections
           for k in ("sync_d1", "sync_d4", "async_d1")}
    hop_s = max(0.0, (p50["sync_d4"] - p50["sync_d1"]) / 3)
    per_p1, per_p10, per_forward = (_per_message_s(found[k])
                                    for k in ("drain_p1", "drain_p10", "drain_forward"))
    behind_s = m.backlog_peak(found["cut"], "payments") / CUT_LOAD.steps[0].rate - CUT_S
    start, end = m.fault_window(found["restart"])
    broker_start, broker_end = m.fault_window(found["broker"])
    lags = [lag for key, at in (("drain_p1", 0.0), ("drain_p10", 0.0), ("cut", 1.0),
                                ("drain_forward", 0.0))
            for lag in _lags(found[key], at, queued[0].duration if at == 0.0 else CUT_S)]
    constants = {
        "http_hop_ms": 1000 * hop_s,
        # async edge = client + gateway hop + confirm; sync_d1 = client + 2 hops
        "publish_confirm_ms": 1000 * max(0.0, p50["async_d1"] - p50["sync_d1"] + hop_s),
        "handler_ms": 1000 * per_p10,
        "delivery_ms": 1000 * max(0.0, per_p1 - per_p10),
        "connect_ms": 1000 * max(0.0, behind_s - Knobs().reconnect_max_s / 2),
        "forward_confirm_ms": 1000 * max(0.0, per_forward - per_p1),
        "reject_ms": max(0.0, 1000 * REJECT_S / m.counter(found["reject"], "payments",
                                                          "handler_errors")
                         - REJECT_PAUSE_MS),
        "restart_s": max(0.0, end - start - DOWN_S),
        "broker_restart_s": max(0.0, broker_end - broker_start - DOWN_S),
        "fault_ms": 1000 * float(statistics.median(lags)),
    }
    constants |= kafka_constants(found, p50["sync_d1"], hop_s, per_p10)
    raw = {"edge_p50_s": p50, "per_message_s": {"prefetch_1": per_p1, "prefetch_10": per_p10,
                                                "forward": per_forward},
           "cut_behind_s": behind_s, "restart_window_s": end - start,
           "broker_window_s": broker_end - broker_start, "fault_lags_s": lags}
    return Calibration(**{k: round(v, 3) for k, v in constants.items()}), raw


def kafka_trials(queued: list[ServiceFault]) -> list[Trial]:
    """The Kafka pipeline's trials: quiet, drains without and with a forward, a kill."""
    def kafka(depth: int, name: str) -> Topology:
        return async_pipeline(depth, knobs=Knobs(work_ms=0.0), name=name, broker="kafka")

    return [Trial("kafka_d1", kafka(1, "kafka_d1"), QUIET),
            Trial("kafka_drain", kafka(1, "kafka_drain"), BURST, queued),
            Trial("kafka_forward", kafka(2, "kafka_forward"), BURST, queued),
            Trial("kafka_broker", kafka(1, "kafka_broker"), QUIET,
                  [fault("broker_down", at=1.0, duration=DOWN_S, graceful=False)],
                  {"drain_timeout_s": 20})]


def first_progress_after(result: RunResult, service: str, t: float) -> float:
    """When a service's ``ok`` counter first grows after ``t`` (NaN: never)."""
    ok = series(result.samples, f"service:{service}", "ok")
    after = ok[ok.index >= t]
    grown = after[after > after.iloc[0]] if len(after) else after
    return float(grown.index[0]) if len(grown) else math.nan


def kafka_constants(found: Mapping[str, RunResult], sync_d1_p50_s: float, hop_s: float,
                    handler_s: float) -> dict[str, float]:
    edge_s = m.edge_latency(found["kafka_d1"], 50, start=WARM_S)
    per_drain, per_forward = (_per_message_s(found[k]) for k in ("kafka_drain",
                                                                  "kafka_forward"))
    start, end = m.fault_window(found["kafka_broker"])
    return {
        "kafka_produce_ms": 1000 * max(0.0, edge_s - sync_d1_p50_s + hop_s),
        "kafka_commit_ms": 1000 * max(0.0, per_drain - handler_s),
        "kafka_forward_ms": 1000 * max(0.0, per_forward - per_drain),
        "kafka_restart_s": max(0.0, end - start - DOWN_S),
        "kafka_rejoin_s": max(0.0, first_progress_after(found["kafka_broker"], "payments",
                                                        end) - end),
    }


def save_calibration(calibration: Calibration, raw: dict[str, Any], runtime: str) -> Path:
    path = calibration_file(runtime)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "runtime": runtime, "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()}, {os.cpu_count()} cores",
        "constants": asdict(calibration), "raw": raw}, indent=2, default=str))
    return path
