"""`make bench`: every benchmark in one run, one table of figures with their same-run
baselines and ratios, written to benchmarks/RESULTS.md with the machine and date.

    .venv/bin/python benchmarks/run_all.py [--quick] [--skip-docker] [--skip-suite]

--quick shortens each benchmark (fewer rounds and requests) for a smoke run; the figures
in RESULTS.md come from a full run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import bench_catalog
import bench_kafka
import bench_load
import bench_model
import bench_suite
import bench_topology
import bench_toxiproxy
import bench_tracing
from figures import Figure, text_table, write_results

HERE = Path(__file__).resolve().parent


def topology_runtimes(args: argparse.Namespace) -> str:
    if args.skip_docker:
        return "local"
    if args.skip_k8s:
        return "both"
    from testbed.components.kube.cluster import Cluster

    if not Cluster().running():
        print("k8s left out of the topology benchmark: the testbed's cluster is not running "
              "(`make k8s` starts it)")
        return "both"
    return "all"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (smoke test)")
    parser.add_argument("--skip-docker", action="store_true", help="local runtime only")
    parser.add_argument("--skip-k8s", action="store_true",
                        help="leave the k8s runtime out of the topology benchmark (left out "
                             "anyway when the testbed's cluster is not running)")
    parser.add_argument("--skip-suite", action="store_true",
                        help="leave out the suite runs (flagship twice, the catalog once: "
                             "about 12 minutes)")
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    started = time.monotonic()
    figures: list[Figure] = []
    sections = [
        ("paired topology up and down", lambda: bench_topology.measure(
            repeat=1 if args.quick else 3, runtime=topology_runtimes(args))),
        ("Toxiproxy overhead and latency accuracy", lambda: bench_toxiproxy.measure(
            200 if args.quick else 2000)),
        ("load generator", bench_load.measure),
        ("the model (simulation speed)", lambda: bench_model.measure(hour=not args.quick)),
        ("Kafka against RabbitMQ: boot and round trip", lambda: bench_kafka.measure(
            boots=1 if args.quick else 3, messages=100 if args.quick else 500)),
        ("the cost of tracing", lambda: bench_tracing.measure(200 if args.quick else 1000)),
    ]
    if not args.skip_suite:
        sections.append(("flagship suite and controller memory", bench_suite.measure))
        sections.append(("the whole catalog against its floor", bench_catalog.measure))
    for title, run in sections:
        print(f"\n=== {title} ===", flush=True)
        figures += run()
    seconds = time.monotonic() - started
    print("\n" + text_table(figures))
    command = " ".join(["benchmarks/run_all.py", *sys.argv[1:]])
    write_results(args.results, figures, command, seconds)
    print(f"\nwritten: {args.results} ({seconds / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
