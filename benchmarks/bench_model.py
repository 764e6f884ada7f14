"""Benchmark: how fast the model (testbed.model.simulate) simulates, on one core.

The workload is a depth-5 pair (sync chain and async pipeline) at 1,000 orders/s,
default calibration, no fault, sized to carry that load in steady state, as the model
itself says it must be: pool_size=32 (with the default 8 the sync gateway, holding a
worker ~9 ms per order through five hops, needs 9 busy workers: the chain collapses)
and replicas=4 (one consumer that publishes with a confirm per message manages
1 / (handler + confirm) = 333/s: the queues would grow for the whole hour). Prints, in one run:
- bare SimPy: timeout events per second of a one-process loop (the floor any SimPy
  model stands on), the baseline of the first figure;
- one simulated minute of the pair: orders per second of wall (and CPU) time;
- one simulated hour of the pair (3.6 million orders each): wall time, against 60 x
  the minute (1.00x: the cost is linear in the length), target under 60 s.

    .venv/bin/python benchmarks/bench_model.py [--quick]

--quick leaves the hour out.
"""

from __future__ import annotations

import argparse
import gc
import os
import time

import psutil
import simpy
from figures import Figure

from testbed.load import Step
from testbed.model import simulate
from testbed.topology import Knobs, paired

RATE = 1000.0
KNOBS = Knobs(pool_size=32, replicas=4)


def bare_simpy(events: int = 500_000) -> float:
    """Timeout events per second of wall time, one process, nothing else."""
    env = simpy.Environment()

    def loop() -> simpy.events.ProcessGenerator:
        for _ in range(events):
            yield env.timeout(0.001)

    env.process(loop())
    started = time.perf_counter()
    env.run()
    return events / (time.perf_counter() - started)


def pair(seconds: float) -> tuple[float, float, int]:
    """Simulate the pair for ``seconds`` at RATE: (wall s, CPU s, orders simulated)."""
    wall = cpu = 0.0
    orders = 0
    for topology in paired(5, knobs=KNOBS):
        gc.collect()
        w, c = time.perf_counter(), time.process_time()
        result = simulate(topology, [Step(seconds, RATE)])
        wall += time.perf_counter() - w
        cpu += time.process_time() - c
        orders += len(result.requests)
        failed = int((~result.requests["ok"]).sum())
        p99 = float(result.requests["latency_s"].quantile(0.99)) * 1000
        print(f"  {topology.name:6} {len(result.requests):>9,} orders, {failed} failed, "
              f"p99 {p99:.1f} ms, {len(result.ledgers):,} ledger rows, "
              f"{len(result.samples):,} samples, {time.perf_counter() - w:.1f} s")
        del result
    return wall, cpu, orders


def measure(hour: bool = True) -> list[Figure]:
    """Print the details; return the figures for the summary table."""
    os.sched_setaffinity(0, {0})  # one core
    try:
        floor = bare_simpy()
        print(f"bare SimPy: {floor:,.0f} timeout events/s\n")
        print(f"depth-5 pair at {RATE:,.0f}/s for 60 s")
        wall, cpu, orders = pair(60.0)
        print(f"  {orders / wall:,.0f} orders/s of wall time ({orders / cpu:,.0f} of CPU "
              f"time)\n")
        figures = [Figure("model", "simulated orders per second of wall time (depth-5 pair, "
                                   "1,000/s, one core)", orders / wall, "orders/s",
                          "bare SimPy timeout events per second", floor,
                          "orders per bare event")]
        if hour:
            print(f"depth-5 pair at {RATE:,.0f}/s for one hour")
            rss = psutil.Process().memory_info().rss
            hour_wall, hour_cpu, _ = pair(3600.0)
            peak = psutil.Process().memory_info().rss
            print(f"  {hour_wall:.0f} s wall, {hour_cpu:.0f} s CPU (target: under 60 s); "
                  f"resident memory {rss / 2**30:.1f} -> {peak / 2**30:.1f} GiB")
            figures.append(Figure("model", "wall time to simulate one hour at 1,000/s "
                                           "(depth-5 pair, one core)", hour_wall, "s",
                                  "60 x one simulated minute", 60 * wall,
                                  "1.00x = linear in length; target < 60 s"))
        return figures
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="leave the hour out")
    measure(hour=not parser.parse_args().quick)


if __name__ == "__main__":
    main()
