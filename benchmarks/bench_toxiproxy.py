"""Benchmark: what a Toxiproxy hop costs, and how exact an injected latency is.

1. Per-hop overhead: GET /health on a service directly and through its proxy with no
   toxic, interleaved in one run over keep-alive connections (p50, p99, ratio).
2. Accuracy: with a latency toxic of 50, 200 and 1000 ms on the proxy, measured minus
   injected, per request (p50, max).

    .venv/bin/python benchmarks/bench_toxiproxy.py [--requests N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import requests
from figures import Figure

from testbed.faults import injected, make_fault
from testbed.runtime.local import LocalRuntime
from testbed.topology import sync_chain


def timed_get(session: requests.Session, url: str) -> float:
    started = time.perf_counter()
    session.get(url, timeout=10).raise_for_status()
    return time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(requests_per_path: int = 2000) -> list[Figure]:
    """Print the details; return the figures for the summary table."""
    figures = []
    with LocalRuntime() as runtime:
        deployment = runtime.deploy(sync_chain(1))
        direct_url = deployment.url("orders") + "/health"
        proxy = deployment.proxies["gateway-orders"]
        proxied_url = f"http://127.0.0.1:{proxy.listen_port}/health"
        direct, proxied = requests.Session(), requests.Session()
        for _ in range(50):  # warm both paths up
            timed_get(direct, direct_url)
            timed_get(proxied, proxied_url)
        d, p = [], []
        for _ in range(requests_per_path):
            d.append(timed_get(direct, direct_url))
            p.append(timed_get(proxied, proxied_url))
        print(f"Toxiproxy hop overhead, {requests_per_path} interleaved GETs each (ms)")
        print(f"{'path':10}{'p50':>9}{'p99':>9}")
        for name, values in (("direct", d), ("proxied", p)):
            print(f"{name:10}{percentile(values, .5) * 1e3:9.3f}"
                  f"{percentile(values, .99) * 1e3:9.3f}")
        for q in (.5, .99):
            extra = (percentile(p, q) - percentile(d, q)) * 1e3
            print(f"p{int(q * 100)}: proxied/direct = {percentile(p, q) / percentile(d, q):.2f}x "
                  f"(+{extra:.3f} ms per hop)")
            figures.append(Figure("toxiproxy", f"GET through one proxy hop, p{int(q * 100)}",
                                  percentile(p, q) * 1e3, "ms", "the same GET direct",
                                  percentile(d, q) * 1e3, f"{extra:+.2f} ms per hop"))
        print("\ninjected latency accuracy: measured - injected (ms), fresh session per level")
        print(f"{'injected':>9}{'n':>5}{'p50':>9}{'max':>9}")
        for latency_ms, count in ((50, 40), (200, 20), (1000, 8)):
            fault = make_fault(deployment, "latency", "gateway-orders", latency=latency_ms)
            with injected(fault):
                session = requests.Session()
                errors = [timed_get(session, proxied_url) * 1e3 - latency_ms
                          for _ in range(count)]
            print(f"{latency_ms:9d}{count:5d}{statistics.median(errors):9.2f}{max(errors):9.2f}")
            figures.append(Figure("toxiproxy", f"latency toxic {latency_ms} ms: measured p50",
                                  latency_ms + statistics.median(errors), "ms",
                                  "latency injected", latency_ms,
                                  f"max +{max(errors):.1f} ms over"))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    measure(parser.parse_args().requests)


if __name__ == "__main__":
    main()
