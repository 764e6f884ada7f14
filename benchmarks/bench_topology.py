"""Benchmark: bring the paired topology up and down on the local runtime.

Prints, per repetition and as medians, the time to boot the private RabbitMQ node,
the time for everything else of bringing the pair up (Toxiproxy, proxies, vhost,
service processes, readiness), and the time to tear it all down. Each repetition uses
a fresh runtime, so the broker boots every time, as it does once per test session.

    .venv/bin/python benchmarks/bench_topology.py [--repeat N]
"""

from __future__ import annotations

import argparse
import statistics
import time

from testbed.runtime.local import LocalRuntime
from testbed.topology import paired


def one_round() -> dict[str, float]:
    runtime = LocalRuntime()
    started = time.monotonic()
    runtime.open()
    for topology in paired():
        runtime.deploy(topology)
    up = time.monotonic() - started
    down_started = time.monotonic()
    runtime.close()
    down = time.monotonic() - down_started
    broker = runtime.timings["broker_boot_s"]
    return {"up_total_s": up, "broker_boot_s": broker, "up_rest_s": up - broker,
            "down_s": down}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rounds = [one_round() for _ in range(args.repeat)]
    keys = list(rounds[0])
    print(f"paired topology (depth 3: 8 services, 7 proxies, 1 broker), local runtime, "
          f"{args.repeat} rounds")
    print(f"{'figure':16}" + "".join(f"{'round ' + str(i + 1):>10}" for i in range(len(rounds)))
          + f"{'median':>10}")
    for key in keys:
        values = [r[key] for r in rounds]
        print(f"{key:16}" + "".join(f"{v:10.2f}" for v in values)
              + f"{statistics.median(values):10.2f}")
    median = {k: statistics.median(r[k] for r in rounds) for k in keys}
    print(f"broker boot is {median['broker_boot_s'] / median['up_total_s']:.0%} of bring-up; "
          f"teardown takes {median['down_s'] / median['up_total_s']:.0%} of bring-up time")


if __name__ == "__main__":
    main()
