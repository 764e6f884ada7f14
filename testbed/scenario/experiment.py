"""Running an experiment: trials under one name, kept where the report will find them.

    experiment = Experiment.for_module("test_e02_outage", runtime, Path("reports"))
    results = experiment.paired(paired(2), constant(20, 8),
                                [unreachable("payments", at=2, duration=3)])
    experiment.check(hypotheses_over(results))        # records the verdicts, asserts
    experiment.negative_control(wrong_claims(results), "sync edge errors")

The experiment's name (``e02-outage``) comes from the test module or scenario file, and
every trial and verdict is saved under it, so the report joins them by that name and
nothing has to be spelled twice. Trials of one experiment share nothing but the machine:
``paired`` runs the sync and the async trial at the same time (``concurrent=True``), each
on its own deployment, after both are up.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.analysis import Hypotheses, HypothesisFailed
from testbed.errors import TestbedError
from testbed.faults import Planned
from testbed.load import LoadProfile
from testbed.observe import RunResult, run_trial
from testbed.report.verdicts import save_verdicts
from testbed.runtime import Deployment, Runtime
from testbed.scenario.faults import ServiceFault, resolve
from testbed.scenario.predicted import calibration_meta, simulate_trial
from testbed.topology import Topology

RUNS_DIR = "runs"
TITLE_FILE = "title.txt"  # beside the trials: the report's heading
NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_ORDER_PREFIXES = itertools.count(1)  # trials of this process never share order ids
FaultPlan = Sequence[ServiceFault] | Callable[[Deployment], list[Planned]]
MODEL_SUFFIX = "_model"  # the key a trial's simulated run is kept under, beside it


class Results(dict[str, RunResult]):
    """An experiment's trials by key ("sync", "async", ...); ``model`` holds the same
    trials as the model simulated them before they ran (``unmodelled``: why not, for
    a trial it could not simulate)."""

    def __init__(self, runs: Mapping[str, RunResult] | None = None,
                 model: Mapping[str, RunResult] | None = None,
                 unmodelled: Mapping[str, str] | None = None) -> None:
        super().__init__(runs or {})
        self.model = dict(model or {})
        self.unmodelled = dict(unmodelled or {})

    def __or__(self, other: Mapping[str, RunResult]) -> Results:  # type: ignore[override]
        """Two experiments' worth of trials in one (each trial's simulated run too)."""
        found = Results({**self, **other}, self.model, self.unmodelled)
        if isinstance(other, Results):
            found.model.update(other.model)
            found.unmodelled.update(other.unmodelled)
        return found

    def predicted(self, key: str) -> RunResult:
        """The simulated run of trial ``key`` (what its predictions are read on)."""
        if key in self.model:
            return self.model[key]
        why = self.unmodelled.get(key, f"no trial {key!r}; trials: {sorted(self)}")
        raise ExperimentError(f"trial {key!r} was not simulated: {why}")


class ExperimentError(TestbedError):
    """An experiment was asked something it cannot do (a bad name, a missing control)."""


def name_of_module(module: str) -> str:
    """``experiments.test_e02_outage`` -> ``e02-outage``: the report's folder name."""
    stem = module.rsplit(".", 1)[-1].removeprefix("test_")
    return stem.replace("_", "-").lower()


def current_test() -> str:
    """The running pytest test id (what JUnit and the summary list), if any."""
    return os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]


def plan_for(faults: FaultPlan, deployment: Deployment) -> list[Planned]:
    """The fault plan for one deployment: faults that mean nothing for its shape (a
    poison message in an HTTP chain, a broker outage) leave that shape untouched."""
    if callable(faults):
        return faults(deployment)
    return resolve([f for f in faults if f.applies_to(deployment.topology)], deployment)


@dataclass(frozen=True)
class Trial:
    """One trial to run: a topology under a load and faults, kept under ``key``; options
    go to ``run_trial`` (timeout_s: the users' patience, drain_timeout_s, ...)."""

    key: str
    topology: Topology
    profile: LoadProfile
    faults: FaultPlan = ()
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Experiment:
    """One experiment's trials and verdicts, under one name in one report folder."""

    name: str
    runtime: Runtime
    report_dir: Path
    title: str = ""  # the report's heading (default: from the name, "E02 outage")

    def __post_init__(self) -> None:
        if not NAME.match(self.name):
            raise ExperimentError(f"experiment name {self.name!r}: use lower-case letters, "
                                  "digits and dashes (e.g. e02-outage); it names the "
                                  "report's folder")

    @classmethod
    def for_module(cls, module: str, runtime: Runtime, report_dir: Path) -> Experiment:
        return cls(name_of_module(module), runtime, report_dir)

    @property
    def runs_dir(self) -> Path:
        return self.report_dir / RUNS_DIR / self.name

    # ----------------------------------------------------------------------- trials

    def keep(self, key: str, result: RunResult) -> RunResult:
        """Save one trial's result under this experiment (the report reads it there)."""
        if not NAME.match(key.replace("_", "-")):
            raise ExperimentError(f"trial key {key!r}: use letters, digits, - and _")
        if not result.meta.get("simulated"):  # the constants its predictions were made with
            result.meta.setdefault("calibration", calibration_meta(self.runtime.name))
        result.save(self.runs_dir / key)
        if self.title:
            (self.runs_dir / TITLE_FILE).write_text(self.title + "\n")
        return result

    def trial(self, topology: Topology, profile: LoadProfile, faults: FaultPlan = (),
              key: str | None = None, **options: Any) -> RunResult:
        """Deploy, run the load and faults, tear down, keep the result under ``key``
        (default: the topology's name). ``traced``: trace this trial (or not), whatever
        the runtime does by default."""
        traced = options.pop("traced", None)
        with self._deploy(topology, traced) as deployment:
            result = run_trial(deployment, profile, plan_for(faults, deployment),
                               name=key or topology.name, **options)
        return self.keep(key or topology.name, result)

    def _deploy(self, topology: Topology, traced: bool | None) -> Deployment:
        """Deploy, traced or not as asked (None: as the runtime does)."""
        if traced is None or (not traced and not hasattr(self.runtime, "tracing")):
            return self.runtime.deploy(topology)
        if not hasattr(self.runtime, "tracing"):
            raise ExperimentError(f"the {self.runtime.name} runtime cannot trace; run "
                                  "traced trials on the local runtime")
        default = self.runtime.tracing
        self.runtime.tracing = traced
        try:
            return self.runtime.deploy(topology)
        finally:
            self.runtime.tracing = default

    def simulate(self, trials: Sequence[Trial], done: Mapping[str, RunResult] | None = None
                 ) -> tuple[dict[str, RunResult], dict[str, str]]:
        """Each trial as the model predicts it, before anything runs (``done``: those
        simulated already), kept under ``<key>_model`` (the report draws it over the
        measured run); and why not, for a trial the model does not reproduce."""
        model: dict[str, RunResult] = {}
        unmodelled: dict[str, str] = {}
        for spec in trials:
            if done is not None and spec.key in done:
                model[spec.key] = done[spec.key]
            elif callable(spec.faults):
                unmodelled[spec.key] = ("its fault plan is a function of the deployment; "
                                        "give ServiceFaults for the model to follow")
                continue
            else:
                try:
                    model[spec.key] = simulate_trial(spec.topology, spec.profile,
                                                     spec.faults, self.runtime.name,
                                                     spec.key, **spec.options)
                except TestbedError as exc:  # NotModelled, ModelError: said, not guessed
                    unmodelled[spec.key] = str(exc)
                    continue
            self.keep(spec.key + MODEL_SUFFIX, model[spec.key])
        return model, unmodelled

    def _fixed(self, spec: Trial) -> Trial:
        """The trial with its order ids and tracing fixed now, so the model and the real
        run share them (on Kafka the ids decide each order's partition)."""
        options = dict(spec.options)
        options.setdefault("order_prefix",
                           f"{spec.key}-{self.runtime.run_id}-e{next(_ORDER_PREFIXES)}")
        # the model traces what the runtime will: the trial's say, else the runtime's
        options.setdefault("traced", bool(getattr(self.runtime, "tracing", False)))
        return dataclasses.replace(spec, options=options)

    def paired(self, topologies: Iterable[Topology], profile: LoadProfile,
               faults: FaultPlan = (), keys: Sequence[str] | None = None,
               concurrent: bool = True, model: Mapping[str, RunResult] | None = None,
               **options: Any) -> Results:
        """The same load and faults on each topology (sync and async, usually); results
        keyed by ``keys`` (default: the topologies' names)."""
        tops = list(topologies)
        names = list(keys) if keys is not None else [t.name for t in tops]
        if len(names) != len(tops):
            raise ExperimentError(f"paired: {len(tops)} topologies need as many keys, "
                                  f"got {names}")
        return self.trials([Trial(k, t, profile, faults, options)
                            for k, t in zip(names, tops, strict=True)], concurrent, model)

    def trials(self, trials: Sequence[Trial], concurrent: bool = True,
               model: Mapping[str, RunResult] | None = None) -> Results:
        """Several trials, each on its own deployment, run at the same time (after all
        are up) unless ``concurrent`` is False; results by key, each kept. Before they
        run, the model simulates each (``model``: simulated already, by key)."""
        names = [t.key for t in trials]
        if len(set(names)) != len(names):
            raise ExperimentError(f"trials need distinct keys, got {names}")
        trials = [self._fixed(t) for t in trials]
        model, unmodelled = self.simulate(trials, model)
        if not concurrent:
            return Results({t.key: self.trial(t.topology, t.profile, t.faults, t.key,
                                              **t.options) for t in trials},
                           model, unmodelled)
        deployments: list[Deployment] = []
        try:
            for spec in trials:  # up one after the other: the trials start together
                deployments.append(self._deploy(spec.topology, spec.options.get("traced")))
            plans = [plan_for(t.faults, d) for t, d in zip(trials, deployments, strict=True)]
            found = run_together([functools.partial(run_trial, d, t.profile, p, name=t.key,
                                                    **_run_options(t.options))
                                  for d, p, t in zip(deployments, plans, trials, strict=True)])
        finally:
            close_all(deployments)
        return Results({t.key: self.keep(t.key, r) for t, r in zip(trials, found, strict=True)},
                       model, unmodelled)

    # --------------------------------------------------------------------- verdicts

    def record(self, hypotheses: Hypotheses, echo: bool = True) -> Hypotheses:
        """Keep the verdicts under this experiment (and the running test) for the
        reports; print them (visible with -s and in the captured output)."""
        if echo:
            print("\n" + hypotheses.report())
        save_verdicts(self.report_dir, current_test() or self.name, hypotheses, self.name)
        return hypotheses

    def check(self, hypotheses: Hypotheses) -> None:
        """Record the verdicts, then fail the test if any does not hold."""
        self.record(hypotheses).assert_all()

    def negative_control(self, hypotheses: Hypotheses, *must_fail: str,
                         model: Hypotheses | None = None) -> None:
        """A control: the named hypotheses, read on a run with the mechanism switched
        off, must NOT hold (else the claim could not fail, and proves nothing).
        ``model``: the same hypotheses read on the control's simulated run; the model
        must predict the failure too (else it cannot tell the mechanism either)."""
        if not must_fail:
            raise ExperimentError("negative_control: name the hypotheses that must fail")
        for found, where in ((hypotheses, "control run"), (model, "model's control run")):
            if found is None:
                continue
            print("\n" + found.report())
            known = {v.name for v in found.verdicts}
            unknown = sorted(set(must_fail) - known)
            if unknown:
                raise ExperimentError(f"negative control: no hypothesis named {unknown}; "
                                      f"checked: {sorted(known)}")
            held = sorted(set(must_fail) - {v.name for v in found.failed})
            if held:
                raise HypothesisFailed(f"negative control of {self.name}: {held} held on "
                                       f"the {where}, so the claim cannot tell the mechanism "
                                       "from its absence\n" + found.report(), found.verdicts)


def _run_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's options that run_trial takes (``traced`` is the deploy's)."""
    return {k: v for k, v in options.items() if k != "traced"}


def run_together(calls: Sequence[Callable[[], RunResult]]) -> list[RunResult]:
    """Run the calls in threads at once; every one finishes; the first error is raised."""
    results: list[RunResult | None] = [None] * len(calls)
    errors: list[BaseException | None] = [None] * len(calls)

    def one(index: int) -> None:
        try:
            results[index] = calls[index]()
        except BaseException as exc:  # re-raised in the caller's thread below
            errors[index] = exc

    threads = [threading.Thread(target=one, args=(i,), name=f"trial-{i}", daemon=True)
               for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for error in errors:
        if error is not None:
            raise error
    return [r for r in results if r is not None]


def close_all(deployments: Sequence[Deployment]) -> None:
    """Tear every deployment down, the last first; the first failure is raised after
    all were tried."""
    failure: BaseException | None = None
    for deployment in reversed(deployments):
        try:
            deployment.close()
        except Exception as exc:
            failure = failure or exc
    if failure is not None:
        raise failure
