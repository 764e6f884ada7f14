"""The machine constants the model adds to the knobs: what a hop, a publish, a delivery
cost on the machine the real trials run on.

The knobs say what the services are told to do (work_ms, timeouts, pool sizes); the
real runs also spend time the knobs do not name (HTTP parsing, the proxy hop, the
broker's confirm). ``testbed calibrate`` measures them on the machine at hand
(testbed.scenario.calibrate) and saves them per runtime, where ``load_calibration``
finds them. The defaults were measured here (a 2-core Debian machine, 2026-12-01): the
per-operation costs as the median of four ``testbed calibrate`` runs (each noisy by a
fraction of a millisecond: the split between handler and delivery moves from run to
run, their sum stays at 1.7 ms); the restart, broker restart, fault lag and reject
cost as the catalog's own runs saw them, two trials at once under ``pytest -n 2`` (a
quiet machine, as calibrate has it, restarts a service in 0.15 s, the broker in 3.9 s).
The kafka_* constants come from `testbed calibrate`'s Kafka trials, each used in one
place (testbed.model.kafka and kafka_client; kafka_restart_s by simulate's fault
schedule); kafka_delivery_ms is not measured yet (no trial isolates a fetch).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path

from testbed.model.errors import ModelError

CALIBRATION_DIR_ENV = "TESTBED_CALIBRATION_DIR"


@dataclass(frozen=True)
class Calibration:
    """Per-operation costs in milliseconds (seconds where it says so)."""

    # What one HTTP hop adds to a request's latency beyond its work (client send, proxy,
    # parse, route, answer, read): spent, in the model, by the callee's worker.
    http_hop_ms: float = 1.5  # measured 1.25-1.9
    publish_confirm_ms: float = 1.4  # the gateway's publish until the broker's confirm
    # a consumer's own publish (the next stage's event, a retry, a reply) until its
    # confirm: a warm channel in the consumer's thread, cheaper than the gateway's
    forward_confirm_ms: float = 0.8
    delivery_ms: float = 0.0  # a delivery slot freeing (ack) until the next message is in
    handler_ms: float = 1.7  # a consumer's own time per message: callback, JSON, ledger
    # a delivery its handler fails at once (an injected error, a poison message): the
    # callback and the nack, no parsing, no ledger
    reject_ms: float = 0.6
    connect_ms: float = 0.0  # an AMQP (re)connect: TCP, handshake, channel, qos, consume
    # A killed service started again until its readiness check: E11's five catalog runs
    # (2026-12-01) measured 0.20-0.60 s, median 0.26 s, sync and async alike.
    restart_s: float = 0.26
    # The broker (broker_down) started again until it answers AMQP: E12's five catalog
    # runs measured 3.6-4.9 s beyond the planned down time, median 4.4 s.
    broker_restart_s: float = 4.4
    # A fault's call (Toxiproxy, the broker, a signal) until the trial records it: the
    # fault takes effect, and is recorded, this long after its planned time: the median
    # of the catalog's runs (2-73 ms), 3.9 ms on a quiet machine.
    fault_ms: float = 8.0
    # Kafka (the async shape with broker kind "kafka"), measured here by `testbed
    # calibrate`'s Kafka trials (2026-12-01, four runs: produce 0.9-3.9 ms, commit
    # 4.7-6.8 ms, forward 0.5-3.3 ms, restart 3.8-3.9 s, rejoin 0.35-0.46 s):
    kafka_produce_ms: float = 2.5  # the gateway's produce until its delivery report
    kafka_forward_ms: float = 1.5  # a consumer's produce of the next event, same
    kafka_delivery_ms: float = 2.0  # a message appended until a member has it (fetch)
    kafka_commit_ms: float = 6.0  # a synchronous offset commit, a round trip
    # The broker (broker_down) started again until it answers: a KRaft JVM's boot.
    kafka_restart_s: float = 3.9
    # A consumer group's members able to heartbeat again until the group is formed
    # and they read (join, sync, the assignment, the first fetch).
    kafka_rejoin_s: float = 0.4

    # Tracing (OpenTelemetry in the services, exported to Jaeger): what an HTTP hop's
    # client and server spans add to it; the cost measured by E16, traced vs untraced
    # sync chains of depth 3 side by side: 1.32 ms over 4 hops.
    traced_hop_ms: float = 0.33

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not math.isfinite(value) or value < 0:
                raise ModelError(f"calibration.{f.name}={value!r}: give a finite number of "
                                 "0 or more")

    @classmethod
    def ideal(cls) -> Calibration:
        """Every overhead zero: the services cost exactly their knobs, so a run can be
        checked against queueing theory's closed forms."""
        return cls(**{f.name: 0.0 for f in fields(cls)})


def calibration_file(runtime: str) -> Path:
    base = os.environ.get(CALIBRATION_DIR_ENV) or Path.home() / ".cache" / "testbed"
    return Path(base) / f"calibration-{runtime}.json"


def load_calibration(runtime: str = "local") -> tuple[Calibration, str]:
    """The calibration measured for this runtime, else the defaults; and where it is
    from (for the reports)."""
    path = calibration_file(runtime)
    if not path.exists():
        return Calibration(), "defaults (not measured: run `testbed calibrate`)"
    data = json.loads(path.read_text())
    known = {f.name for f in fields(Calibration)}
    constants = {k: float(v) for k, v in data.get("constants", {}).items() if k in known}
    return Calibration(**constants), (f"measured by testbed calibrate on {data.get('runtime')} "
                                      f"at {data.get('measured_at')} ({data.get('machine')})")
