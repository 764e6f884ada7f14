"""Scenario files: one TOML file states a whole paired experiment.

The file says the shape and depth (or topology files), knobs for every service or one,
the load, the faults by the service they hurt, and the hypotheses (a metric of the
vocabulary, the topology it is read on, the predicted value and how close counts).
Everything is checked when the file is read, before anything starts: each mistake is a
ScenarioError naming the field (``faults[1].service``) and the fix.

    [scenario]                       # name: the file's stem unless given
    title = "Payments outage"
    [topology]
    shape = "paired"                 # sync | async | paired; depth 1-5
    depth = 2                        # (broker = "kafka", partitions = 3: async on Kafka)
    [knobs]                          # every service
    timeout_s = 1.0
    [services.payments]              # one service (in every topology that has it)
    work_ms = 20
    [load]
    rate = 20                        # orders/s ...
    duration = 8                     # ... for this long; or steps = [[s, rate], ...]
    [[faults]]
    kind = "unreachable"             # or slower (ms = ...), or any catalog fault
    service = "payments"
    at = 2.0
    duration = 3.0
    [[hypotheses]]
    topology = "sync"
    metric = "edge_errors"
    predicted = 60
    check = "within"                 # exact | within | at_most | at_least | never
    rel = 0.2
"""

from __future__ import annotations

import inspect
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from testbed.analysis import Hypotheses, Verdict, at_least, at_most, close_to, equals, never
from testbed.analysis.hypotheses import MODEL  # predicted = "model": the simulation's number
from testbed.errors import TestbedError, TopologyError
from testbed.faults import FaultSpecError
from testbed.faults.catalog import APPLICATION, BROKER, PROCESS
from testbed.faults.network import TOXICS
from testbed.load import LoadProfile, LoadSpecError, Step
from testbed.observe import RunResult
from testbed.scenario.faults import KINDS, ServiceFault
from testbed.scenario.metrics import METRICS
from testbed.topology import Knobs, Topology, async_pipeline, load_topology, sync_chain
from testbed.topology.model import knobs_from_dict

CHECKS = ("exact", "within", "at_most", "at_least", "never")
SHAPES = ("sync", "async", "paired")
_TOP = {"scenario", "topology", "knobs", "services", "load", "faults", "hypotheses",
        "controls"}
_SCENARIO = {"name", "title", "description", "seed", "scale"}
_TOPOLOGY = {"shape", "depth", "sync_depth", "async_depth", "files", "broker", "partitions"}
_LOAD = {"rate", "duration", "steps", "timeout_s", "drain_timeout_s", "tail_s", "concurrent"}
_FAULT = {"kind", "service", "at", "duration", "link", "only"}
_HYPOTHESIS = {"name", "topology", "metric", "predicted", "check", "rel", "abs", "unit",
               "why", "args"}
_CONTROL = {"hypotheses", "on", "why"}


class ScenarioError(TestbedError, ValueError):
    """A scenario file is wrong: names the file, the field, the problem and the fix."""

    def __init__(self, source: str, field: str, problem: str, fix: str) -> None:
        self.field, self.problem, self.fix = field, problem, fix
        super().__init__(f"{source}: field {field!r}: {problem}. Fix: {fix}")


@dataclass(frozen=True)
class HypothesisSpec:
    """One claim: ``metric(result of topology, **args)`` against the prediction."""

    name: str
    topology: str
    metric: str
    check: str
    predicted: float | bool | str | None = None  # "model": from the simulated trial
    rel: float | None = None
    abs: float | None = None
    unit: str = ""
    why: str = ""
    args: dict[str, Any] = field(default_factory=dict)

    def judge(self, result: RunResult, model: RunResult | None = None) -> Verdict:
        """The verdict on ``result``; a prediction taken from the model (predicted =
        "model") is the same metric read on ``model``, the trial simulated before it."""
        measured = METRICS[self.metric](result, **self.args)
        predicted = self.predicted
        source = ""
        if predicted == MODEL:
            if model is None:
                raise ScenarioError(self.name, "predicted", "taken from the model, but no "
                                    "simulated run was given", "simulate the scenario first")
            predicted, source = METRICS[self.metric](model, **self.args), MODEL
            if predicted is None or (isinstance(predicted, float) and math.isnan(predicted)):
                return never(self.name, measured, self.unit,
                             claim=f"{self.name} never happens (the model's prediction)")
        if self.check == "never":
            return never(self.name, measured, self.unit)
        if self.check == "exact":
            return equals(self.name, predicted, measured, self.unit, source=source)
        assert isinstance(predicted, int | float)
        if self.check == "at_most":
            return at_most(self.name, predicted, measured, self.unit, source=source)
        if self.check == "at_least":
            return at_least(self.name, predicted, measured, self.unit, source=source)
        return close_to(self.name, predicted, measured, rel=self.rel, abs=self.abs,
                        unit=self.unit, source=source)


@dataclass(frozen=True)
class ControlSpec:
    """A negative control: these hypotheses, read on the ``on`` topology's run, fail."""

    hypotheses: tuple[str, ...]
    on: str
    why: str = ""


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    description: str
    path: Path
    topologies: tuple[Topology, ...]
    profile: LoadProfile
    faults: tuple[ServiceFault, ...]
    hypotheses: tuple[HypothesisSpec, ...]
    controls: tuple[ControlSpec, ...] = ()
    trial_options: dict[str, Any] = field(default_factory=dict)
    concurrent: bool = True
    model: Mapping[str, RunResult] | None = None  # the simulated trials, when predicted

    def topology(self, name: str) -> Topology:
        return next(t for t in self.topologies if t.name == name)

    @property
    def uses_model(self) -> bool:
        return any(h.predicted == MODEL for h in self.hypotheses)

    def simulate(self, runtime: str = "local") -> dict[str, RunResult]:
        """Every topology's trial as the model predicts it (before any real run), with
        the calibration measured for ``runtime``."""
        from testbed.scenario.predicted import simulate_trial

        return {t.name: simulate_trial(t, self.profile, self.faults, runtime, t.name,
                                       **self.trial_options) for t in self.topologies}

    def judge(self, results: Mapping[str, RunResult], topology: str,
              model: Mapping[str, RunResult] | None = None) -> Hypotheses:
        """The hypotheses stated for one topology, read on its run (predictions from the
        model read on ``model``, its simulated runs)."""
        hypotheses = Hypotheses(f"{self.title}: {topology}")
        for spec in self.hypotheses:
            if spec.topology == topology:
                hypotheses.check(spec.judge(results[topology], (model or {}).get(topology)))
        return hypotheses

    def control(self, results: Mapping[str, RunResult], control: ControlSpec,
                model: Mapping[str, RunResult] | None = None) -> Hypotheses:
        """The named hypotheses read on the control's run; a model prediction stays the
        one made for the hypothesis' own topology."""
        hypotheses = Hypotheses(f"{self.title}: control on {control.on}")
        for spec in self.hypotheses:
            if spec.name in control.hypotheses:
                hypotheses.check(spec.judge(results[control.on],
                                            (model or {}).get(spec.topology)))
        return hypotheses


# ------------------------------------------------------------------------------ reading

class _Reader:
    """Field checks that all name the file and the path of the field."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, problem: str, fix: str) -> ScenarioError:
        return ScenarioError(self.source, path, problem, fix)

    def table(self, path: str, data: Any, allowed: set[str] | None) -> Mapping[str, Any]:
        if not isinstance(data, Mapping):
            raise self.fail(path, f"expected a table, got {type(data).__name__}",
                            f"write it as [{path}] with key = value lines")
        if allowed is not None:
            unknown = sorted(set(data) - allowed)
            if unknown:
                raise self.fail(f"{path}.{unknown[0]}" if path else unknown[0],
                                "unknown key", f"use only {sorted(allowed)}")
        return data

    def array(self, path: str, data: Any) -> list[Any]:
        if not isinstance(data, list):
            raise self.fail(path, f"expected an array of tables, got {type(data).__name__}",
                            f"write each entry as its own [[{path}]] table")
        return data

    def number(self, path: str, data: Mapping[str, Any], key: str, default: Any = None,
               positive: bool = False) -> Any:
        value = data.get(key, default)
        if value is None:
            if default is None and key in data:
                raise self.fail(f"{path}.{key}", "empty", "give a number")
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or \
                not math.isfinite(value) or value < 0 or (positive and value == 0):
            raise self.fail(f"{path}.{key}", f"{value!r} is not allowed",
                            f"give a number {'above' if positive else 'of at least'} 0")
        return value

    def text(self, path: str, data: Mapping[str, Any], key: str, default: str | None = None,
             choices: tuple[str, ...] | None = None) -> str:
        if key not in data:
            if default is None:
                raise self.fail(f"{path}.{key}", "missing", f"add {key} = \"...\"")
            return default
        value = data[key]
        if not isinstance(value, str):
            raise self.fail(f"{path}.{key}", f"{value!r} is not text", "write it in quotes")
        if choices is not None and value not in choices:
            raise self.fail(f"{path}.{key}", f"unknown value {value!r}",
                            f"use one of {', '.join(choices)}")
        return value


def load_scenario(path: Path) -> Scenario:
    """Read and check a scenario file; nothing is started."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ScenarioError(str(path), "file", f"cannot read it ({exc.strerror})",
                            "give the path of an existing .toml file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(str(path), "file", f"not valid TOML ({exc})",
                            "fix the syntax at the position shown") from exc
    return scenario_from_dict(data, path)


def scenario_from_dict(data: Mapping[str, Any], path: Path) -> Scenario:
    r = _Reader(str(path))
    r.table("", data, _TOP)
    head = r.table("scenario", data.get("scenario", {}), _SCENARIO)
    name = r.text("scenario", head, "name", path.stem)
    topologies = _topologies(r, data, path)
    names = [t.name for t in topologies]
    load = r.table("load", data.get("load"), _LOAD) if "load" in data else None
    if load is None:
        raise r.fail("load", "missing", "add a [load] table with rate and duration")
    hypotheses = _hypotheses(r, data, names)
    if not hypotheses:
        raise r.fail("hypotheses", "none stated", "add at least one [[hypotheses]] table: "
                     "a scenario without a prediction cannot fail")
    options = {k: r.number("load", load, k, positive=True)
               for k in ("timeout_s", "drain_timeout_s", "tail_s") if k in load}
    concurrent = load.get("concurrent", True)
    if not isinstance(concurrent, bool):
        raise r.fail("load.concurrent", f"{concurrent!r} is not allowed", "give true or false")
    scenario = Scenario(
        name=name, title=r.text("scenario", head, "title", name),
        description=r.text("scenario", head, "description", ""), path=path,
        topologies=topologies, profile=_profile(r, load),
        faults=_faults(r, data, topologies), hypotheses=hypotheses,
        controls=_controls(r, data, names, hypotheses), trial_options=options,
        concurrent=concurrent)
    return _with_model(r, scenario)


def _with_model(r: _Reader, scenario: Scenario) -> Scenario:
    """Predictions from the model are made now, when the file is read: before any run,
    and a scenario the model cannot simulate is refused before anything starts."""
    if not scenario.uses_model:
        return scenario
    first = next(i for i, h in enumerate(scenario.hypotheses) if h.predicted == MODEL)
    try:
        return replace(scenario, model=scenario.simulate())
    except TestbedError as exc:  # NotModelled, ModelError
        raise r.fail(f"hypotheses[{first}].predicted", f"the model cannot simulate this "
                     f"scenario ({exc})", "state the number yourself, or use faults and "
                     "knobs the model reproduces") from None


def _knob_table(r: _Reader, path: str, data: Any,
                base: dict[str, Any] | None = None) -> dict[str, Any]:
    """A knobs table, checked as the service will get it: over ``base`` ([knobs])."""
    table = dict(r.table(path, data, None))
    try:
        knobs_from_dict({**(base or {}), **table}, path)
    except TopologyError as exc:
        raise r.fail(exc.field, exc.problem, exc.fix) from None
    return table


def _topologies(r: _Reader, data: Mapping[str, Any], path: Path) -> tuple[Topology, ...]:
    top = r.table("topology", data.get("topology", {}), _TOPOLOGY)
    base = _knob_table(r, "knobs", data.get("knobs", {}))
    per_service = {name: _knob_table(r, f"services.{name}", knobs, base) for name, knobs in
                   r.table("services", data.get("services", {}), None).items()}
    if "files" in top:
        if set(top) - {"files"}:
            raise r.fail("topology.files", "given together with shape or depth",
                         "give either files or shape and depth")
        files = top["files"]
        if not isinstance(files, list) or not files or \
                not all(isinstance(f, str) for f in files):
            raise r.fail("topology.files", f"{files!r} is not a list of paths",
                         'write files = ["my-topology.toml"] (relative to this file)')
        try:
            built = tuple(load_topology(path.parent / f) for f in files)
        except TopologyError as exc:
            raise r.fail(f"topology.files ({exc.field})", exc.problem, exc.fix) from None
        if base or per_service:
            raise r.fail("knobs", "knobs beside topology files",
                         "set the knobs in the topology files themselves")
    else:
        shape = r.text("topology", top, "shape", "paired", SHAPES)
        depth = top.get("depth", 3)
        depths = {"sync": top.get("sync_depth", depth), "async": top.get("async_depth", depth)}
        broker = {"broker": top.get("broker", "rabbitmq"), "partitions": top.get("partitions", 1)}
        built = tuple(_build(r, s, depths[s], base, per_service, broker)
                      for s in (("sync", "async") if shape == "paired" else (shape,)))
    names = [t.name for t in built]
    if len(set(names)) != len(names):
        raise r.fail("topology.files", f"two topologies are named alike: {names}",
                     "give each topology file its own name")
    known = {s.name for t in built for s in t.services}
    unknown = sorted(set(per_service) - known)
    if unknown:
        raise r.fail(f"services.{unknown[0]}", "no such service in the topology",
                     f"use one of {sorted(known)}")
    return built


def _build(r: _Reader, shape: str, depth: Any, base: dict[str, Any],
           per_service: dict[str, dict[str, Any]], broker: dict[str, Any]) -> Topology:
    """One shape's topology; the async one on ``broker`` (kind and partitions)."""
    def builder(depth: Any, knobs: Knobs | None = None,
                overrides: Mapping[str, Knobs] | None = None) -> Topology:
        if shape == "sync":
            return sync_chain(depth, knobs, overrides)
        return async_pipeline(depth, knobs, overrides, broker=broker["broker"],
                              partitions=broker["partitions"])

    try:
        names = {s.name for s in builder(depth).services}
        overrides = {n: Knobs(**{**base, **k}) for n, k in per_service.items() if n in names}
        return builder(depth, Knobs(**base), overrides)
    except TopologyError as exc:
        field_name = exc.field if exc.field.startswith("knobs") else f"topology.{exc.field}"
        raise r.fail(field_name, exc.problem, exc.fix) from None


def _profile(r: _Reader, load: Mapping[str, Any]) -> LoadProfile:
    try:
        if "steps" in load:
            if "rate" in load or "duration" in load:
                raise r.fail("load.steps", "given together with rate / duration",
                             "give either steps or rate and duration")
            steps = load["steps"]
            if not isinstance(steps, list) or not steps or not all(
                    isinstance(s, list) and len(s) == 2 for s in steps):
                raise r.fail("load.steps", f"{steps!r} is not a list of [seconds, rate]",
                             "write steps = [[10, 20], [5, 80]]")
            return LoadProfile(tuple(Step(float(d), float(rate)) for d, rate in steps))
        rate = r.number("load", load, "rate", 0)
        duration = r.number("load", load, "duration", 0)
        for key, value in (("rate", rate), ("duration", duration)):
            if not value:
                raise r.fail(f"load.{key}", "missing or 0", f"add {key} = a number above 0")
        return LoadProfile((Step(float(duration), float(rate)),))
    except LoadSpecError as exc:
        raise r.fail("load", str(exc), "ask for at most an hour and a million orders") \
            from None


def _fault_params(kind: str) -> set[str] | None:
    """The parameters a fault kind takes (None: any, checked when it is built)."""
    name = {"unreachable": "link_down", "slower": "latency"}.get(kind, kind)
    extra = {"ms", "jitter_ms"} if kind == "slower" else set()
    if name in TOXICS:
        return {*TOXICS[name].attributes, "stream", "toxicity", *extra} - (
            {"latency"} if kind == "slower" else set())
    factory = {**PROCESS, **BROKER, **APPLICATION}.get(name)
    if factory is None:
        return set()
    parameters = list(inspect.signature(factory).parameters.values())
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters} - {"deployment", "service", "queue"}


def _faults(r: _Reader, data: Mapping[str, Any],
            topologies: tuple[Topology, ...]) -> tuple[ServiceFault, ...]:
    found = []
    for index, raw in enumerate(r.array("faults", data.get("faults", []))):
        path = f"faults[{index}]"
        table = r.table(path, raw, None)
        kind = r.text(path, table, "kind", choices=KINDS)
        params = {k: v for k, v in table.items() if k not in _FAULT}
        allowed = _fault_params(kind)
        if allowed is not None:
            unknown = sorted(set(params) - allowed)
            if unknown:
                raise r.fail(f"{path}.{unknown[0]}", f"not a parameter of {kind}",
                             f"{kind} takes {sorted(allowed) or 'no parameters'}")
        if kind == "slower":
            if "ms" not in params:
                raise r.fail(f"{path}.ms", "missing", "say how much slower: ms = 400")
            params["latency"] = params.pop("ms")
            if "jitter_ms" in params:
                params["jitter"] = params.pop("jitter_ms")
        duration = r.number(path, table, "duration", positive=True)
        try:
            fault = ServiceFault(kind, r.text(path, table, "service", ""),
                                 float(r.number(path, table, "at", 0.0)),
                                 None if duration is None else float(duration), params,
                                 table.get("link"), table.get("only"))
            hit = [t for t in topologies if fault.applies_to(t)]
            if not hit:
                raise r.fail(f"{path}.only", "the fault applies to no topology here",
                             "drop only, or add the shape it is meant for")
            for topology in hit:
                fault.targets(topology)
        except FaultSpecError as exc:
            raise r.fail(path, str(exc), "see the fault catalog in the README") from None
        found.append(fault)
    return tuple(found)


def _metric_args(metric: str) -> tuple[set[str], set[str]]:
    """(every argument, the required ones) of a metric, besides the run."""
    parameters = list(inspect.signature(METRICS[metric]).parameters.values())[1:]
    return ({p.name for p in parameters},
            {p.name for p in parameters if p.default is inspect.Parameter.empty})


def _hypotheses(r: _Reader, data: Mapping[str, Any],
                topologies: list[str]) -> tuple[HypothesisSpec, ...]:
    found: list[HypothesisSpec] = []
    for index, raw in enumerate(r.array("hypotheses", data.get("hypotheses", []))):
        path = f"hypotheses[{index}]"
        table = r.table(path, raw, None)
        metric = r.text(path, table, "metric", choices=tuple(METRICS))
        allowed, required = _metric_args(metric)
        args = {k: v for k, v in table.items() if k not in _HYPOTHESIS}
        args.update(r.table(f"{path}.args", table.get("args", {}), None))
        unknown = sorted(set(args) - allowed)
        if unknown:
            raise r.fail(f"{path}.{unknown[0]}", f"not an argument of {metric}",
                         f"{metric} takes {sorted(allowed) or 'no arguments'}")
        missing = sorted(required - set(args))
        if missing:
            raise r.fail(f"{path}.{missing[0]}", f"{metric} needs it",
                         f"add {missing[0]} = ...")
        topology = r.text(path, table, "topology", topologies[0] if len(topologies) == 1
                          else None, tuple(topologies))
        check = r.text(path, table, "check", "within", CHECKS)
        predicted = table.get("predicted")
        if check != "never":
            if predicted is None:
                raise r.fail(f"{path}.predicted", "missing",
                             "state the number predicted before the run")
            if predicted == MODEL:
                pass  # the simulation's number (checked below: is the scenario modelled?)
            elif check != "exact" and (isinstance(predicted, bool)
                                       or not isinstance(predicted, int | float)):
                raise r.fail(f"{path}.predicted", f"{predicted!r} is not a number",
                             "give a number, or \"model\" for the simulation's (or check = "
                             "\"exact\" for true / false)")
        rel = r.number(path, table, "rel")
        absolute = r.number(path, table, "abs")
        if check == "within" and rel is None and absolute is None:
            raise r.fail(f"{path}.rel", "within needs a tolerance",
                         "add rel = 0.2 (a fraction of the prediction) or abs = ...")
        if check != "within" and (rel is not None or absolute is not None):
            raise r.fail(f"{path}.check", f"{check} takes no rel / abs",
                         'use check = "within" for a tolerance')
        name = r.text(path, table, "name", f"{topology} {metric.replace('_', ' ')}")
        if name in {h.name for h in found}:
            raise r.fail(f"{path}.name", f"{name!r} is stated twice",
                         "give each hypothesis its own name")
        found.append(HypothesisSpec(name, topology, metric, check, predicted, rel, absolute,
                                    r.text(path, table, "unit", ""),
                                    r.text(path, table, "why", ""), args))
    return tuple(found)


def _controls(r: _Reader, data: Mapping[str, Any], topologies: list[str],
              hypotheses: tuple[HypothesisSpec, ...]) -> tuple[ControlSpec, ...]:
    found = []
    names = {h.name for h in hypotheses}
    for index, raw in enumerate(r.array("controls", data.get("controls", []))):
        path = f"controls[{index}]"
        table = r.table(path, raw, _CONTROL)
        chosen = table.get("hypotheses")
        if not isinstance(chosen, list) or not chosen:
            raise r.fail(f"{path}.hypotheses", "missing or empty",
                         'name the hypotheses that must fail: hypotheses = ["..."]')
        unknown = sorted(set(map(str, chosen)) - names)
        if unknown:
            raise r.fail(f"{path}.hypotheses", f"no hypothesis named {unknown[0]!r}",
                         f"use names from [[hypotheses]]: {sorted(names)}")
        found.append(ControlSpec(tuple(map(str, chosen)),
                                 r.text(path, table, "on", choices=tuple(topologies)),
                                 r.text(path, table, "why", "")))
    return tuple(found)


