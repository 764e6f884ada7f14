"""Benchmark: the open-loop load generator against a simple closed-loop client.

The generator is pinned to core 0 and the target (a depth-1 sync chain) to core 1, so
"on one core" means what it says. Prints, in one run:
- a closed-loop client (one thread, one keep-alive connection, send-wait-send) for 3 s:
  its throughput and latency;
- the generator at the experiment rates (20, 50, 100/s): scheduling lag p50/p99;
- a ramp: the highest rate the generator sustains (p99 lag under 20 ms, every
  request answered), as a ratio to the closed-loop client's throughput.

    .venv/bin/python benchmarks/bench_load.py
"""

from __future__ import annotations

import http.client
import json
import os
import time

import numpy as np
import psutil
from figures import Figure

from testbed.load import LoadGenerator, constant
from testbed.runtime.local import LocalRuntime, LocalService
from testbed.topology import Knobs, sync_chain


def closed_loop(url: str, seconds: float) -> tuple[float, list[float]]:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    latencies = []
    end = time.monotonic() + seconds
    index = 0
    while time.monotonic() < end:
        started = time.monotonic()
        connection.request("POST", "/orders", json.dumps({"order_id": f"c-{index}"}),
                           {"Content-Type": "application/json"})
        connection.getresponse().read()
        latencies.append(time.monotonic() - started)
        index += 1
    connection.close()
    return len(latencies) / seconds, latencies


def ms(values: np.ndarray | list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000


def measure() -> list[Figure]:
    """Print the details; return the figures for the summary table."""
    lag_at_100 = float("nan")
    with LocalRuntime() as runtime:
        deployment = runtime.deploy(sync_chain(1, knobs=Knobs(pool_size=16)))
        for service in deployment.services.values():
            assert isinstance(service, LocalService) and service.process.pid
            for proc in [psutil.Process(service.process.pid),
                         *psutil.Process(service.process.pid).children(recursive=True)]:
                proc.cpu_affinity([1])
        os.sched_setaffinity(0, {0})
        url = deployment.entry_url

        rate, latencies = closed_loop(url, 3.0)
        print("closed-loop client (1 thread, keep-alive), 3 s")
        print(f"  throughput {rate:.0f}/s, latency p50 {ms(latencies, 50):.2f} ms, "
              f"p99 {ms(latencies, 99):.2f} ms\n")

        print("open-loop generator: scheduling lag (sent - scheduled)")
        print(f"{'rate/s':>8}{'requests':>10}{'lag p50 ms':>12}{'lag p99 ms':>12}"
              f"{'lat p50 ms':>12}{'ok':>7}{'behind':>8}")
        best = 0.0
        for target in (20, 50, 100, 200, 300, 400, 600, 800):
            generator = LoadGenerator(url, constant(target, 3.0), order_prefix=f"g{target}")
            frame = generator.run()
            summary = generator.summary()
            ok = float(frame["ok"].mean())
            print(f"{target:8d}{summary.scheduled:10d}{summary.lag_p50_s * 1e3:12.2f}"
                  f"{summary.lag_p99_s * 1e3:12.2f}"
                  f"{frame['latency_s'].median() * 1e3:12.2f}{ok:7.1%}"
                  f"{'yes' if summary.fell_behind else 'no':>8}")
            if target == 100:
                lag_at_100 = summary.lag_p99_s * 1e3
            if summary.fell_behind or ok < 1.0:
                break
            best = target
        print(f"\nhighest sustained rate: {best:.0f}/s on one core "
              f"= {best / rate:.2f}x the closed-loop client's {rate:.0f}/s")
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    return [Figure("load", "open-loop generator: highest sustained rate (one core)", best,
                   "req/s", "closed-loop client's throughput", rate,
                   "lag p99 < 20 ms, all answered"),
            Figure("load", "open-loop generator: scheduling lag p99 at 100/s", lag_at_100, "ms",
                   "closed-loop request latency p50", ms(latencies, 50),
                   "lag / one request's time")]


def main() -> None:
    measure()


if __name__ == "__main__":
    main()
