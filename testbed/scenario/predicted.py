"""Predictions from the model: a trial simulated before it runs, and hypotheses whose
predicted number is a metric read on that simulated run.

    model = simulate_trial(topology, profile, faults, "local", timeout_s=2)   # before
    ... the real trial runs ...
    h.check(predicted("sync edge errors", m.edge_errors, measured, model, unit="orders"))

One definition per quantity: the same metric function reads the model's frames and the
measured ones, so the prediction and the measurement cannot mean different things. The
default tolerance is the issue's: 15% of the prediction, or ``abs`` units (2 for small
counts); a metric the model says never happens (None, NaN) becomes ``never``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict
from typing import Any

from testbed.analysis import Verdict, close_to, equals, never
from testbed.analysis.hypotheses import MODEL
from testbed.load import LoadProfile
from testbed.observe import RunResult
from testbed.scenario.faults import ServiceFault
from testbed.topology import Topology

REL = 0.15  # how close a point prediction from the model must land
SIMULATED_OPTIONS = ("timeout_s", "period_s", "drain_timeout_s", "tail_s", "order_prefix",
                     "traced")
Metric = Callable[..., Any]


def simulate_trial(topology: Topology, profile: LoadProfile, faults: Iterable[ServiceFault],
                   runtime: str, name: str | None = None, **options: Any) -> RunResult:
    """The trial as the model predicts it, with the calibration measured for ``runtime``
    (or the defaults); marked simulated, its calibration and source in the meta.
    Raises NotModelled (a TestbedError) for what the model does not reproduce."""
    from testbed.model import simulate
    from testbed.model.calibration import load_calibration

    calibration, source = load_calibration(runtime)
    known = {k: v for k, v in options.items() if k in SIMULATED_OPTIONS}
    result = simulate(topology, profile, [f for f in faults if f.applies_to(topology)],
                      name=name or topology.name, calibration=calibration, **known)
    result.meta["simulated"] = True
    result.meta["model"]["calibration_source"] = source
    return result


def calibration_meta(runtime: str) -> dict[str, Any]:
    """What a measured run keeps of the model's constants: the numbers its predictions
    were made with, and where they are from."""
    from testbed.model.calibration import load_calibration

    calibration, source = load_calibration(runtime)
    return {"constants": asdict(calibration), "source": source}


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def predicted(name: str, metric: Metric, measured: RunResult, model: RunResult, *args: Any,
              rel: float | None = REL, abs: float | None = None, unit: str = "",
              **metric_args: Any) -> Verdict:
    """A point prediction: ``metric`` read on the model's run, within ``rel`` (a
    fraction) or ``abs`` (units) of the same metric read on the measured run. Flags and
    text must be equal; a metric the model says never happens must never happen."""
    expected = metric(model, *args, **metric_args)
    actual = metric(measured, *args, **metric_args)
    if _missing(expected):
        return never(name, actual, unit, claim=f"{name} never happens (the model's "
                     "prediction)", none_text="never happened")
    if isinstance(expected, bool | str):
        return equals(name, expected, actual, unit, source=MODEL)
    return close_to(name, float(expected), actual, rel=rel, abs=abs, unit=unit, source=MODEL)
