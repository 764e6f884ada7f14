"""One benchmark figure with the baseline it is judged against, measured in the same run
(these machines are noisy: a ratio within one run means more than a number across runs),
and the table that `make bench` prints and writes to benchmarks/RESULTS.md."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil


@dataclass(frozen=True)
class Figure:
    group: str
    name: str
    value: float
    unit: str
    baseline_name: str
    baseline: float
    meaning: str = ""  # how to read the ratio

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else float("nan")


def _number(value: float, unit: str) -> str:
    return f"{value:,.0f} {unit}" if abs(value) >= 100 else f"{value:.3g} {unit}"


def rows(figures: list[Figure]) -> list[tuple[str, ...]]:
    return [(f.group, f.name, _number(f.value, f.unit), f.baseline_name,
             _number(f.baseline, f.unit), f"{f.ratio:.2f}x", f.meaning) for f in figures]


HEADER = ("group", "figure", "value", "baseline (same run)", "baseline value", "ratio",
          "reading")


def text_table(figures: list[Figure]) -> str:
    table = [HEADER, *rows(figures)]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
             for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(figures: list[Figure]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(figures)]
    return "\n".join(lines)


def machine() -> str:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in
                     Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        model = cpu
    try:
        docker = subprocess.run(["docker", "version", "-f", "{{.Server.Version}}"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        docker = ""
    return (f"{os.cpu_count()} cores ({model}), {psutil.virtual_memory().total / 2**30:.0f} GiB,"
            f" {platform.system()} {platform.release()}, Python {platform.python_version()}"
            + (f", Docker {docker}" if docker else ""))


def write_results(path: Path, figures: list[Figure], command: str, seconds: float) -> None:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    path.write_text(
        "# Benchmark results\n\n"
        f"Written by `{command}` on {when}, in {seconds / 60:.1f} min.\n\n"
        f"Machine: {machine()}.\n\n"
        "Every ratio divides the figure by its baseline, both measured in the same run.\n\n"
        + markdown_table(figures) + "\n")
