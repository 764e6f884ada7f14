"""Benchmark: bring the paired topology up and down, on the local runtime, on the docker
runtime (cached images), on the k8s runtime (the testbed's own cluster, images loaded),
or on several in the same run, interleaved, with ratios against local.

Prints, per repetition and as medians, the time to boot the broker (a process, or a
container), the time for everything else of bringing the pair up (Toxiproxy, proxies,
vhost, services, readiness), and the time to tear it all down. Each repetition uses a
fresh runtime, so the broker boots every time, as it does once per test session.

    .venv/bin/python benchmarks/bench_topology.py [--repeat N]
        [--runtime local|docker|k8s|both|all]   (both: local and docker; all: the three)
"""

from __future__ import annotations

import argparse
import statistics
import time

from figures import Figure

from testbed.runtime import get_runtime
from testbed.topology import paired

Round = dict[str, float]


def one_round(runtime_name: str) -> Round:
    runtime = get_runtime(runtime_name)
    started = time.monotonic()
    runtime.open()
    opened = time.monotonic() - started
    for topology in paired():
        runtime.deploy(topology)
    up = time.monotonic() - started
    down_started = time.monotonic()
    runtime.close()
    down = time.monotonic() - down_started
    broker = runtime.timings["broker_boot_s"]  # type: ignore[attr-defined]
    return {"open_s": opened, "up_total_s": up, "broker_boot_s": broker,
            "up_rest_s": up - broker - opened, "down_s": down}


def table(name: str, rounds: list[Round]) -> dict[str, float]:
    keys = list(rounds[0])
    print(f"\npaired topology (depth 3: 8 services, 7 proxies, 1 broker), {name} runtime, "
          f"{len(rounds)} rounds")
    print(f"{'figure':16}" + "".join(f"{'round ' + str(i + 1):>10}" for i in range(len(rounds)))
          + f"{'median':>10}")
    for key in keys:
        values = [r[key] for r in rounds]
        print(f"{key:16}" + "".join(f"{v:10.2f}" for v in values)
              + f"{statistics.median(values):10.2f}")
    median = {k: statistics.median(r[k] for r in rounds) for k in keys}
    print(f"broker boot is {median['broker_boot_s'] / median['up_total_s']:.0%} of bring-up; "
          f"teardown takes {median['down_s'] / median['up_total_s']:.0%} of bring-up time")
    return median


def measure(repeat: int = 3, runtime: str = "both") -> list[Figure]:
    """Print the rounds and medians; return the figures for the summary table."""
    names = {"both": ["local", "docker"], "all": ["local", "docker", "k8s"]}.get(
        runtime, [runtime])
    if "docker" in names or "k8s" in names:  # images built (or found cached) first
        from testbed.images import build_images

        build_images()
    if "k8s" in names:  # and in the cluster's containerd, before anything is timed
        from testbed.components.kube.images import ensure_images
        from testbed.images import image_refs

        ensure_images(image_refs().values())
    rounds: dict[str, list[Round]] = {name: [] for name in names}
    for _ in range(repeat):  # interleaved: the machine's noise hits both alike
        for name in names:
            rounds[name].append(one_round(name))
    medians = {name: table(name, found) for name, found in rounds.items()}
    figures = []
    if "local" in medians:
        local = medians["local"]
        figures += [
            Figure("topology", "paired up, local (runtime open + broker boot + deploy)",
                   local["up_total_s"], "s", "RabbitMQ boot alone", local["broker_boot_s"],
                   "the broker's own boot is the floor"),
            Figure("topology", "paired down, local", local["down_s"], "s",
                   "paired up, local", local["up_total_s"], "teardown / bring-up")]
    for other, meaning in (("docker", "containers / processes"),
                           ("k8s", "pods on a real cluster / processes")):
        if "local" not in medians or other not in medians:
            continue
        print(f"\n{other} / local (medians, same run):")
        for key in ("up_total_s", "broker_boot_s", "up_rest_s", "down_s"):
            local_s, other_s = medians["local"][key], medians[other][key]
            print(f"  {key:14} {other_s:7.2f} s / {local_s:7.2f} s = {other_s / local_s:5.2f}x")
        figures += [
            Figure("topology", f"paired {label}, {other} (cached images)",
                   medians[other][key], "s", f"paired {label}, local",
                   medians["local"][key], meaning)
            for label, key in (("up", "up_total_s"), ("up minus broker boot", "up_rest_s"),
                               ("down", "down_s"))]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--runtime", choices=["local", "docker", "k8s", "both", "all"],
                        default="local")
    args = parser.parse_args()
    measure(args.repeat, args.runtime)


if __name__ == "__main__":
    main()
