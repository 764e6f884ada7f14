"""Shared pieces of the experiment suite: saving results, the numbers every experiment reads.

Each experiment module states its hypotheses as numbers predicted from the fault, the
load and a simple model (in its docstring and constants), runs the same fault against
the sync and the async topology once per module, and checks predicted vs measured.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.analysis import Hypotheses
from testbed.observe import RunResult
from testbed.pytest_plugin import record_verdicts


def save(config: pytest.Config, experiment: str, results: dict[str, RunResult]) -> None:
    """Keep every run under --report-dir/runs/<experiment>/<topology>/ for the report."""
    base = Path(config.getoption("--report-dir")) / "runs" / experiment
    for name, result in results.items():
        result.save(base / name)


def edge_errors(result: RunResult, start: float | None = None,
                end: float | None = None) -> int:
    """Orders the user saw fail (optionally only those scheduled in [start, end))."""
    requests = result.requests
    if start is not None:
        requests = requests[requests["t_scheduled"] >= start]
    if end is not None:
        requests = requests[requests["t_scheduled"] < end]
    return int((~requests["ok"]).sum())


def accepted(result: RunResult) -> set[str]:
    return set(result.requests.loc[result.requests["ok"], "order_id"])


def counter(result: RunResult, service: str, name: str) -> float:
    """The last sampled value of a service counter (0 if it never counted)."""
    samples = result.samples
    rows = samples[(samples["source"] == f"service:{service}") & (samples["metric"] == name)]
    return float(rows["value"].iloc[-1]) if len(rows) else 0.0


def report(hypotheses: Hypotheses) -> None:
    """Print the verdicts (visible with -s and in the saved output), keep them for the
    suite summary, then assert."""
    print("\n" + hypotheses.report())
    record_verdicts(hypotheses)
    hypotheses.assert_all()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "experiments" in str(item.path):
            item.add_marker(pytest.mark.experiment)


def stored(result: RunResult) -> set[str]:
    """Orders in the gateway's own database (its ledger): what the business thinks it took."""
    return set(result.processed("gateway"))


def charges(result: RunResult, service: str) -> int:
    """Side effects a service performed (a ledger's counts summed: duplicates included)."""
    return sum(result.processed(service).values())
