"""Benchmark: the whole catalog's wall time against its floor, in one run.

Runs `testbed run --all -n 2` (experiments/ and scenarios/, local runtime, reports
included) and reads back what each trial took from its saved frames: from its first
scheduled order to its last sample (load, drain, the steady-state tail). The floor is the
sum of those trial times over the two workers, as if they ran back to back with nothing
else (deployments, teardowns, waiting); the figure is wall / floor. Trials that run at the
same time (a paired experiment's sync and async) overlap, so the ratio can go below 1.

    .venv/bin/python benchmarks/bench_catalog.py [--report-dir DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from figures import Figure

ROOT = Path(__file__).resolve().parents[1]
WORKERS = 2


def trial_seconds(report_dir: Path) -> list[float]:
    """Each saved trial's length: last sample time (the timeline starts at the load)."""
    seconds = []
    for samples in sorted((report_dir / "runs").glob("*/*/samples.csv")):
        frame = pd.read_csv(samples, usecols=["t"])
        if len(frame):
            seconds.append(float(frame["t"].max()))
    return seconds


def run_catalog(report_dir: Path) -> tuple[float, int]:
    argv = [sys.executable, "-m", "testbed.cli", "run", "--all", "-n", str(WORKERS),
            "--report-dir", str(report_dir)]
    started = time.monotonic()
    status = subprocess.call(argv, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.monotonic() - started, status


def measure(report_dir: Path | None = None) -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="bench-catalog-") as scratch:
        folder = report_dir or Path(scratch)
        wall, status = run_catalog(folder)
        trials = trial_seconds(folder)
    floor = sum(trials) / WORKERS
    print(f"catalog: {wall:.0f} s wall (exit {status}), {len(trials)} trials, "
          f"{sum(trials):.0f} s of trials, floor {floor:.0f} s on {WORKERS} workers: "
          f"{wall / floor:.2f}x")
    verdicts = "" if status == 0 else " (a verdict FAILED)"
    return [Figure("catalog", f"testbed run --all -n {WORKERS} wall time", wall, "s",
                   f"floor: {len(trials)} trials' load + drain / {WORKERS} workers", floor,
                   "target <= 1.2x" + verdicts)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report-dir", type=Path)
    measure(parser.parse_args().report_dir)


if __name__ == "__main__":
    main()
