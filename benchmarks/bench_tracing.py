"""Benchmark: what tracing costs a sync chain, and how long the run's Jaeger takes to boot.

One run (LocalRuntime(tracing=True)), two identical chains (gateway -> orders ->
payments, every hop through its proxy): the first deployed traced, the second with
tracing switched off for its deploy. Orders alternate between the two over keep-alive
sessions, so both see the same machine; edge latency p50 and p99 for each, and how many
of the traced orders' traces Jaeger holds afterwards (none may be dropped).

    .venv/bin/python benchmarks/bench_tracing.py [--orders N]
"""

from __future__ import annotations

import argparse
import time

import requests
from figures import Figure

from testbed.observe.traces import JaegerQuery, traces_by_order
from testbed.runtime.local import LocalRuntime
from testbed.topology import sync_chain


def timed_post(session: requests.Session, url: str, order_id: str) -> float:
    started = time.perf_counter()
    session.post(url, json={"order_id": order_id}, timeout=10).raise_for_status()
    return time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(orders: int = 1000) -> list[Figure]:
    """Print the details; return the figures for the summary table."""
    with LocalRuntime(tracing=True) as runtime:
        traced = runtime.deploy(sync_chain(2))
        runtime.tracing = False
        plain = runtime.deploy(sync_chain(2))
        runtime.tracing = True
        boot = runtime.timings["jaeger_boot_s"]
        toxiproxy_boot = runtime.timings["toxiproxy_boot_s"]
        urls = {"traced": traced.entry_url + "/orders", "plain": plain.entry_url + "/orders"}
        sessions = {name: requests.Session() for name in urls}
        for i in range(50):  # warm-up: connections, imports, the exporter's first batch
            for name, url in urls.items():
                timed_post(sessions[name], url, f"warm-{name}-{i}")
        times: dict[str, list[float]] = {name: [] for name in urls}
        for i in range(orders):
            for name, url in urls.items():
                times[name].append(timed_post(sessions[name], url, f"{name}-{i}"))
        query = JaegerQuery(runtime.jaeger().query_url)
        services = ["gateway", "orders", "payments"]
        wanted = {f"traced-{i}" for i in range(orders)}
        found = query.wait_for(traced.id, lambda t: wanted <= set(traces_by_order(t)),
                               timeout_s=30, services=services)
        held = wanted & set(traces_by_order(found))
        query.close()
    print(f"sync chain depth 2, {orders} alternating orders each (ms)")
    print(f"{'chain':8}{'p50':>9}{'p99':>9}")
    for name, values in times.items():
        print(f"{name:8}{percentile(values, .5) * 1e3:9.3f}{percentile(values, .99) * 1e3:9.3f}")
    print(f"jaeger boot {boot:.2f} s (toxiproxy {toxiproxy_boot:.2f} s); traces in Jaeger: "
          f"{len(held)} of {orders}")
    figures = []
    for q in (.5, .99):
        on, off = percentile(times["traced"], q) * 1e3, percentile(times["plain"], q) * 1e3
        figures.append(Figure("tracing", f"edge p{int(q * 100)}, sync chain depth 2, traced",
                              on, "ms", "the same chain untraced", off,
                              f"{on - off:+.2f} ms per order (3 server + 2 client spans)"))
    figures.append(Figure("tracing", "Jaeger boot (all-in-one, in-memory)", boot, "s",
                          "Toxiproxy boot", toxiproxy_boot, "until query API and OTLP answer"))
    figures.append(Figure("tracing", "traced orders found in Jaeger", len(held), "orders",
                          "orders sent traced", orders, "1.00x: nothing dropped"))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1000)
    measure(parser.parse_args().orders)


if __name__ == "__main__":
    main()
