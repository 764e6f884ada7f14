"""Samplers: queue depths and service stats on a fixed period, on the shared timeline.

One background thread per deployment polls, every ``period_s``, the deployment's queues
(ready exactly over AMQP; unacked and consumers from the management API, all queues in
one request, dead-letter queues included; on Kafka the groups' lags, kafka_access.py)
and each service's /stats (in flight, saturation, counters). A component that does not
answer (a broker that is down, a killed service) costs a sample, never the run: the miss
is a sample with metric ``unreachable``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field

import pandas as pd
import pika
import pika.exceptions
import requests

from testbed.errors import BrokerError
from testbed.runtime.base import BrokerAccess, Deployment

SAMPLE_COLUMNS = ["t", "source", "metric", "value"]
SERVICE_METRICS = ("in_flight", "saturation")


class ReadyCounter:
    """Exact ready counts by passive queue.declare over one AMQP connection, reopened
    after the broker comes back."""

    def __init__(self, broker: BrokerAccess | None) -> None:
        self.broker = broker
        self._connection: pika.BlockingConnection | None = None

    def counts(self, queues: list[str]) -> dict[str, int]:
        if self.broker is None:
            return {}
        try:
            if self._connection is None or not self._connection.is_open:
                address = self.broker.address
                self._connection = pika.BlockingConnection(pika.ConnectionParameters(
                    host=address.host, port=address.amqp_port, virtual_host=self.broker.vhost,
                    credentials=pika.PlainCredentials(address.user, address.password),
                    connection_attempts=1, socket_timeout=2, heartbeat=30))
            channel = self._connection.channel()
            counts = {q: int(channel.queue_declare(q, passive=True).method.message_count)
                      for q in queues}
            channel.close()
            return counts
        except (pika.exceptions.AMQPError, OSError):
            self.close()
            return {}

    def close(self) -> None:
        if self._connection is not None and self._connection.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                self._connection.close()
        self._connection = None


@dataclass
class Sampler:
    deployment: Deployment
    period_s: float = 0.25
    origin: float = field(default_factory=time.monotonic)
    timeout_s: float = 1.0
    rows: list[tuple[float, str, str, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sampler:
        self._http = requests.Session()
        self._counter = ReadyCounter(self.deployment.broker)
        self.sample_once()  # first sample (and AMQP connection) before the load starts
        self._thread = threading.Thread(target=self._loop, name="sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> pd.DataFrame:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self._http.close()
        self._counter.close()
        return self.frame()

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            self.sample_once()
            next_tick += self.period_s
            self._stop.wait(max(0.0, next_tick - time.monotonic()))

    def sample_once(self) -> None:
        self._sample_queues()
        for name in self.deployment.instrumented:  # an own service has no /stats
            self._sample_service(name, self.deployment.services[name].url)

    def _add(self, source: str, metric: str, value: float) -> None:
        self.rows.append((time.monotonic() - self.origin, source, metric, float(value)))

    def _sample_kafka(self) -> None:
        """On Kafka, ready is a group's lag (testbed.runtime.kafka_access defines it)."""
        assert self.deployment.kafka is not None
        try:
            states = self.deployment.kafka.queue_states()
        except BrokerError:
            self._add("broker", "unreachable", 1)
            return
        for state in states:
            self._add_queue(state.name, state.ready, state.unacked, state.consumers)

    def _add_queue(self, queue: str, ready: int, unacked: int, consumers: int) -> None:
        source = f"queue:{queue}"
        self._add(source, "ready", ready)
        self._add(source, "unacked", unacked)
        self._add(source, "messages", ready + unacked)
        self._add(source, "consumers", consumers)

    def _sample_queues(self) -> None:
        if self.deployment.kafka is not None:
            self._sample_kafka()
            return
        broker = self.deployment.broker
        if broker is None:
            return
        try:
            queues = broker.admin.queues(broker.vhost)
            exact = self._counter.counts([q.name for q in queues])
        except (BrokerError, ValueError, KeyError):  # a broker that is down is data
            self._add("broker", "unreachable", 1)
            return
        for state in queues:
            # ready is exact (AMQP, now). unacked comes from the management API: it lags
            # by its collection interval (250 ms) and was once seen stuck for 5 s after a
            # consumer reconnected, so backlog hypotheses should read "ready".
            self._add_queue(state.name, exact.get(state.name, state.ready), state.unacked,
                            state.consumers)

    def _sample_service(self, name: str, url: str) -> None:
        source = f"service:{name}"
        try:
            stats = self._http.get(url + "/stats", timeout=self.timeout_s).json()
        except (requests.RequestException, ValueError):
            self._add(source, "unreachable", 1)
            return
        for metric in SERVICE_METRICS:
            self._add(source, metric, stats[metric])
        for counter, value in stats["counters"].items():
            self._add(source, counter, value)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(list(self.rows), columns=SAMPLE_COLUMNS)


def ready_now(deployment: Deployment) -> dict[str, int]:
    """Each queue's ready count now, read as the sampler reads it (one definition of a
    backlog for trials and for probes); empty when the broker does not answer."""
    sampler = Sampler(deployment)
    sampler._counter = ReadyCounter(deployment.broker)
    try:
        sampler._sample_queues()
    finally:
        sampler._counter.close()
    return {source.removeprefix("queue:"): int(value)
            for _, source, metric, value in sampler.rows if metric == "ready"}
