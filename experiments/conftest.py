"""The experiment suite: one module per row of the catalog (../shared/EXPERIMENTS.md).

Each module states its model and predictions in its docstring, runs its trials through
the ``experiment`` fixture (testbed.scenario.Experiment: saved under the module's name,
where the report finds them) and reads every number through testbed.scenario.metrics.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "experiments" in str(item.path):
            item.add_marker(pytest.mark.experiment)
