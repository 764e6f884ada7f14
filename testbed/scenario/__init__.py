"""A paired experiment as data: the experiment API (trials under one name, faults
addressed by the service they hurt, a metric vocabulary over a RunResult) and scenario
files that state a whole experiment in TOML. Python experiments and scenario files go
through the same API; the pytest plugin and the command line only run them."""

from testbed.scenario import metrics
from testbed.scenario.experiment import (
    Experiment,
    ExperimentError,
    Results,
    Trial,
    name_of_module,
    run_together,
)
from testbed.scenario.faults import ServiceFault, fault, resolve, slower, unreachable

__all__ = [
    "Experiment",
    "ExperimentError",
    "Results",
    "ServiceFault",
    "Trial",
    "fault",
    "metrics",
    "name_of_module",
    "resolve",
    "run_together",
    "slower",
    "unreachable",
]
