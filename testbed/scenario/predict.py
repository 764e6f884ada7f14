"""What-if from the model alone: a scenario file simulated, at any scale, in seconds.

``testbed predict FILE.toml [--rate R] [--duration S] [--set SERVICE.KNOB=V]`` runs each
topology of the scenario through testbed.model.simulate (no process, container or
broker is started), prints every hypothesis' number as the model gives it beside what
the file predicted, and writes the same incident report from the simulated runs, titled
and marked SIMULATED. The load may be far beyond what a real trial allows (hours, millions
of orders): the model takes plain load steps, from --rate / --duration or from the file's
own [load] (``load_for_model``: a what-if file at a seed's scale, e.g.
examples/whatif/seed004-flood-full-scale.toml, which `testbed run` refuses).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from testbed.analysis import Hypotheses
from testbed.load import Step
from testbed.model import simulate
from testbed.model.calibration import load_calibration
from testbed.observe import RunResult
from testbed.report.suite_report import SuiteReport, write_reports
from testbed.scenario.experiment import Experiment
from testbed.scenario.spec import Scenario, ScenarioError, load_scenario, scenario_from_dict
from testbed.topology import Topology
from testbed.topology.model import knobs_from_dict

SIMULATED = "SIMULATED"
NOT_A_RUNTIME: Any = None  # the model deploys nothing


@dataclass(frozen=True)
class WhatIf:
    """Changes to a scenario before it is simulated."""

    rate: float | None = None  # orders/s, for the whole load (one step)
    duration_s: float | None = None
    knobs: Mapping[str, Mapping[str, Any]] | None = None  # service -> knob -> value
    # The file's own load where it is beyond a real trial's limits (load_for_model):
    load: tuple[Step, ...] | None = None


def load_for_model(path: Path) -> tuple[Scenario, WhatIf]:
    """A scenario file as the model reads it. Its [load] may be beyond what a real trial
    allows (an hour, a million orders): the limit guards real runs, and a what-if file
    states the seed's own scale. Such a load is kept in the returned WhatIf (the one
    predict simulates) and the file is checked with a one-second stand-in load, since
    its checks need a real trial's; within the limits it is load_scenario's."""
    try:
        return load_scenario(path), WhatIf()
    except ScenarioError as exc:
        if exc.field != "load" or "limit" not in exc.problem:
            raise
    # Only the limit was passed (LoadProfile checks the steps are possible first).
    data = tomllib.loads(path.read_text())
    table = data["load"]
    raw = table["steps"] if "steps" in table else [[table["duration"], table["rate"]]]
    load = tuple(Step(float(duration), float(rate)) for duration, rate in raw)
    stand_in = {k: v for k, v in table.items() if k not in ("rate", "duration", "steps")}
    stand_in.update(rate=max(step.rate for step in load) or 1.0, duration=1.0)
    return scenario_from_dict({**data, "load": stand_in}, path), WhatIf(load=load)


def parse_settings(settings: Sequence[str], scenario: Scenario) -> dict[str, dict[str, Any]]:
    """``payments.work_ms=100`` -> {"payments": {"work_ms": 100.0}}; values as TOML would
    read them (true/false, whole numbers, decimals, or text)."""
    found: dict[str, dict[str, Any]] = {}
    services = {s.name for t in scenario.topologies for s in t.services}
    for setting in settings:
        target, equals, raw = setting.partition("=")
        service, dot, knob = target.partition(".")
        if not (equals and dot and service and knob):
            raise ScenarioError("--set", setting, "not SERVICE.KNOB=VALUE",
                                "write e.g. --set payments.work_ms=100")
        if service not in services:
            raise ScenarioError("--set", setting, f"no service {service!r}",
                                f"use one of {sorted(services)}")
        found.setdefault(service, {})[knob] = _value(raw)
    return found


def _value(raw: str) -> Any:
    if raw in ("true", "false"):
        return raw == "true"
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            continue
    return raw


def _with_knobs(topology: Topology, knobs: Mapping[str, Mapping[str, Any]]) -> Topology:
    services = []
    for spec in topology.services:
        changes = knobs.get(spec.name)
        if changes:
            merged = {**asdict(spec.knobs), **changes}
            spec = replace(spec, knobs=knobs_from_dict(merged, f"--set {spec.name}"))
        services.append(spec)
    return replace(topology, services=tuple(services))


def steps(scenario: Scenario, what_if: WhatIf) -> list[Step]:
    """The load to simulate: the file's, or one step at the rate and duration asked."""
    base = list(what_if.load or scenario.profile.steps)
    if what_if.rate is None and what_if.duration_s is None:
        return base
    base_duration = sum(step.duration_s for step in base)
    rate = what_if.rate if what_if.rate is not None else sum(
        step.rate * step.duration_s for step in base) / base_duration
    duration = what_if.duration_s or base_duration
    if not (rate > 0 and duration > 0):
        raise ScenarioError("what-if", f"rate {rate}, duration {duration}", "impossible",
                            "give a rate and a duration above 0")
    return [Step(float(duration), float(rate))]


def predict(scenario: Scenario, report_dir: Path, what_if: WhatIf = WhatIf(),
            seed: int = 1) -> tuple[dict[str, RunResult], dict[str, Hypotheses], SuiteReport]:
    """Simulate every topology of the scenario; judge its hypotheses on the simulated
    runs; write the (SIMULATED) report."""
    load = steps(scenario, what_if)
    longest = sum(step.duration_s for step in load)
    results: dict[str, RunResult] = {}
    calibration, source = load_calibration()
    for topology in scenario.topologies:
        changed = _with_knobs(topology, what_if.knobs or {})
        result = simulate(changed, load, [f for f in scenario.faults if f.applies_to(changed)],
                          timeout_s=scenario.trial_options.get("timeout_s", 5.0), seed=seed,
                          calibration=calibration,
                          drain_timeout_s=max(scenario.trial_options.get(
                              "drain_timeout_s", 30.0), 10 * longest))
        result.meta["simulated"] = True  # the report says so
        result.meta["model"]["calibration_source"] = source
        results[topology.name] = result
    experiment = Experiment(scenario.name, NOT_A_RUNTIME, report_dir,
                            f"{SIMULATED}: {scenario.title}")
    judged = {}
    for name, result in results.items():
        experiment.keep(name, result)
        if any(h.topology == name for h in scenario.hypotheses):
            # predicted = "model": the number is the simulated run's own
            judged[name] = experiment.record(scenario.judge(results, name, results),
                                             echo=False)
    return results, judged, write_reports(report_dir)
