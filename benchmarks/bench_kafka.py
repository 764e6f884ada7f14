"""Benchmark: the private Kafka node against the private RabbitMQ node.

1. Boot: a new node each time (a cold JVM, a fresh data dir: storage format included),
   Kafka and RabbitMQ alternately in one run, until each answers its readiness check.
2. Round trip: produce -> the consumer holds it, one message at a time, through the
   client's own Toxiproxy proxy and direct, interleaved in blocks.

    .venv/bin/python benchmarks/bench_kafka.py [--boots N] [--messages N]
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

from confluent_kafka import Consumer, Producer
from figures import Figure

from testbed.components.kafka import ClientListener, KafkaNode
from testbed.components.rabbitmq import RabbitNode
from testbed.ports import allocate_port
from testbed.runtime.local import LocalRuntime


def boot_kafka(runtime: LocalRuntime) -> dict[str, float]:
    assert runtime.run_dir is not None
    run_id = runtime.run_id
    node = KafkaNode(run_id, runtime.run_dir / f"k{uuid.uuid4().hex[:6]}",
                     allocate_port(run_id), allocate_port(run_id))
    try:
        node.start()
        return dict(node.timings)
    finally:
        node.stop()


def boot_rabbitmq(runtime: LocalRuntime) -> float:
    assert runtime.run_dir is not None
    run_id = f"{runtime.run_id}r{uuid.uuid4().hex[:4]}"  # a node name of its own
    node = RabbitNode(run_id, runtime.run_dir / run_id,
                      *[allocate_port(runtime.run_id) for _ in range(4)])
    # Tag its processes with the runtime's run, so its watchdog sweeps them on a crash.
    node.epmd.run_id = node.process.run_id = runtime.run_id
    try:
        return node.start()
    finally:
        node.stop()


def round_trip(producer: Producer, consumer: Consumer, topic: str, value: str) -> float:
    started = time.perf_counter()
    producer.produce(topic, value=value.encode())
    producer.poll(0)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        message = consumer.poll(0.05)
        if message is not None and message.error() is None and message.value() == value.encode():
            return time.perf_counter() - started
    raise RuntimeError(f"{value} did not come back within 10 s")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(boots: int = 3, messages: int = 500) -> list[Figure]:
    figures = []
    with LocalRuntime() as runtime:
        kafka_boots, rabbit_boots = [], []
        for i in range(boots):
            kafka = boot_kafka(runtime)
            rabbit = boot_rabbitmq(runtime)
            kafka_boots.append(kafka)
            rabbit_boots.append(rabbit)
            print(f"boot {i + 1}: Kafka {kafka['boot_s']:.2f} s (format {kafka['format_s']:.2f}"
                  f" s + broker {kafka['broker_s']:.2f} s), RabbitMQ {rabbit:.2f} s")
        kafka_s = statistics.median(k["boot_s"] for k in kafka_boots)
        rabbit_s = statistics.median(rabbit_boots)
        figures.append(Figure("kafka", "Kafka node boot, cold JVM (format + broker), median",
                              kafka_s, "s", "RabbitMQ node boot, median", rabbit_s,
                              "Kafka / RabbitMQ"))

        assert runtime.run_dir is not None
        run_id = runtime.run_id
        toxiproxy = runtime.toxiproxy()
        listener = ClientListener("bench", allocate_port(run_id), allocate_port(run_id))
        node = KafkaNode(run_id, runtime.run_dir, allocate_port(run_id),
                         allocate_port(run_id), [listener])
        try:
            node.start()
            toxiproxy.client.create_proxy(f"{run_id}.bench", listener.proxy_port,
                                          listener.upstream)
            topic = f"bench-{uuid.uuid4().hex[:6]}"
            node.admin.create_topic(topic)
            times: dict[str, list[float]] = {"proxied": [], "direct": []}
            clients = {}
            for path, bootstrap in (("proxied", listener.bootstrap),
                                    ("direct", node.bootstrap)):
                producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                                     "linger.ms": 0})
                consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": path,
                                     "auto.offset.reset": "latest"})
                consumer.subscribe([topic])
                while not consumer.assignment():
                    consumer.poll(0.1)
                clients[path] = (producer, consumer)
            for block in range(-1, messages // 50):  # block -1 warms both paths up
                for path, (producer, consumer) in clients.items():
                    for i in range(50):
                        took = round_trip(producer, consumer, topic, f"{path}-{block}-{i}")
                        if block >= 0:
                            times[path].append(took)
            for producer, consumer in clients.values():
                producer.flush(10)
                consumer.close()
            print(f"produce -> consume round trip, {messages} each (ms)")
            for path, values in times.items():
                print(f"  {path:8} p50 {percentile(values, .5) * 1e3:7.2f}  "
                      f"p99 {percentile(values, .99) * 1e3:7.2f}")
            for q in (.5, .99):
                name = f"p{int(q * 100)}"
                figures.append(Figure(
                    "kafka", f"produce->consume round trip through Toxiproxy, {name}",
                    percentile(times["proxied"], q) * 1e3, "ms", f"the same direct, {name}",
                    percentile(times["direct"], q) * 1e3, "proxied / direct"))
        finally:
            node.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boots", type=int, default=3)
    parser.add_argument("--messages", type=int, default=500)
    args = parser.parse_args()
    for figure in measure(args.boots, args.messages):
        print(f"{figure.name}: {figure.value:.3g} {figure.unit} vs {figure.baseline_name} "
              f"{figure.baseline:.3g} {figure.unit} ({figure.ratio:.2f}x)")


if __name__ == "__main__":
    main()
