"""Falsifiable hypotheses: a number predicted before the run, checked against the
measurement after it, and carried into the report whether it holds or not.

    h = Hypotheses("E2 outage, async")
    predicted_backlog = rate * outage_s               # the model, before the run
    ... run ...
    h.check(close_to("backlog peak", predicted_backlog, peak(depth)[0], rel=0.25,
                     unit="messages"))
    h.check(at_most("recovery time", 10, time_to_recover(...), unit="s",
                    none_text="never recovered"))
    h.assert_all()      # raises HypothesisFailed listing every finding

A prediction may also be stated up front and measured later, so a run that stops half
way still reports what it had claimed (as "not measured", failing):

    h.expect(at_most, "recovery time", 10, unit="s", none_text="never recovered")
    ... run ...
    h.measure("recovery time", time_to_recover(...))

Every check returns a ``Verdict`` whose ``finding`` reads like a line of an incident
report: "backlog peak was 1,930 messages, predicted 2,000 ± 25%: holds". A measurement
of None or NaN (never recovered, never detected, nothing measured) fails every check
but ``never`` with ``none_text`` in the finding instead of a crash.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import pandas as pd

from testbed.analysis.frames import AnalysisError

Value = float | int | bool | str | None

HOLDS = "holds"
FAILS = "does NOT hold"
NOT_MEASURED = "no value measured"
MODEL = "model"  # a Verdict's source when its prediction is the simulation's number


@dataclass(frozen=True)
class Verdict:
    """One hypothesis after the run: what was claimed, predicted and measured."""

    name: str  # a noun phrase: "backlog peak", "recovery time"
    claim: str  # the statement made before the run
    predicted: Value
    measured: Value
    tolerance_text: str  # how close counts: "± 25%", "upper bound", ...
    passed: bool
    finding: str  # the incident-report line
    source: str = ""  # where the prediction is from: "model" (the simulation), "" (by hand)

    def __str__(self) -> str:
        return self.finding


class HypothesisFailed(AssertionError):
    """At least one hypothesis does not hold; the message lists every finding."""

    def __init__(self, message: str, verdicts: tuple[Verdict, ...]) -> None:
        super().__init__(message)
        self.verdicts = verdicts
        self.failed = tuple(v for v in verdicts if not v.passed)


# ------------------------------------------------------------------------ formatting

def format_number(x: float | int) -> str:
    """Readable numbers for findings: 1,930 / 14.2 / 0.0123."""
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, numbers.Integral):  # numpy integers too
        return f"{int(x):,}"
    x = float(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "infinite" if x > 0 else "minus infinite"
    if x.is_integer() and math.fabs(x) < 1e15:
        return f"{int(x):,}"
    if math.fabs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def _with_unit(text: str, unit: str) -> str:
    if not unit:
        return text
    return text + unit if unit.startswith("%") else f"{text} {unit}"


def _show(value: Value, unit: str) -> str:
    if isinstance(value, str):
        return repr(value)
    if value is None:
        return "None"
    return _with_unit(format_number(value), unit)


def _missing(measured: Value) -> bool:
    return measured is None or (isinstance(measured, float) and math.isnan(measured))


def _number(name: str, measured: Value) -> float:
    if isinstance(measured, str | bool):
        raise AnalysisError(f"hypothesis {name!r}: measured {measured!r} is not a number")
    assert measured is not None
    return float(measured)


def _verdict(name: str, claim: str | None, predicted: Value, predicted_text: str,
             measured: Value, unit: str, tolerance_text: str, passed: bool,
             none_text: str, source: str = "") -> Verdict:
    outcome = HOLDS if passed else FAILS
    missing = _missing(measured)
    said = f"{name}: {none_text}" if missing else f"{name} was {_show(measured, unit)}"
    return Verdict(name=name, claim=claim or f"{name} is {predicted_text}",
                   predicted=predicted, measured=measured, tolerance_text=tolerance_text,
                   passed=passed, finding=f"{said}, predicted {predicted_text}"
                   f"{' by the model' if source == MODEL else ''}: {outcome}",
                   source=source)


# ---------------------------------------------------------------------------- checks

def close_to(name: str, predicted: float, measured: float | None,
             rel: float | None = None, abs: float | None = None,
             unit: str = "", *, claim: str | None = None,
             none_text: str = NOT_MEASURED, source: str = "") -> Verdict:
    """Holds when |measured - predicted| <= max(rel * |predicted|, abs): the model's
    number, within the slack the model deserves. Give rel (a fraction: 0.25 = 25%),
    abs (in ``unit``) or both."""
    if rel is None and abs is None:
        raise AnalysisError(f"hypothesis {name!r}: close_to needs rel= (a fraction of "
                            "the prediction, 0.25 for 25%) or abs= (in the unit), or both")
    if (rel is not None and rel < 0) or (abs is not None and abs < 0):
        raise AnalysisError(f"hypothesis {name!r}: rel={rel}, abs={abs}; neither may be "
                            "negative")
    rel_text = f"{rel * 100:g}%" if rel is not None else ""
    abs_text = _with_unit(format_number(abs), unit) if abs is not None else ""
    if rel is not None and abs is not None:
        tolerance_text = f"± max({rel_text}, {abs_text})"
    else:
        tolerance_text = f"± {rel_text or abs_text}"
    predicted_text = f"{format_number(predicted)} {tolerance_text}"
    slack = max((rel or 0.0) * math.fabs(predicted), abs or 0.0)
    passed = (not _missing(measured)
              and math.fabs(_number(name, measured) - predicted) <= slack)
    return _verdict(name, claim, predicted, predicted_text, measured, unit,
                    tolerance_text, passed, none_text, source)


def at_most(name: str, limit: float, measured: float | None, unit: str = "", *,
            claim: str | None = None, none_text: str = NOT_MEASURED,
            source: str = "") -> Verdict:
    """Holds when measured <= limit: a bound the system must not exceed (recovery
    time, error rate, latency)."""
    passed = not _missing(measured) and _number(name, measured) <= limit
    return _verdict(name, claim, limit, f"at most {_show(limit, unit)}", measured, unit,
                    "upper bound", passed, none_text, source)


def at_least(name: str, limit: float, measured: float | None, unit: str = "", *,
             claim: str | None = None, none_text: str = NOT_MEASURED,
             source: str = "") -> Verdict:
    """Holds when measured >= limit: a floor the system must reach (throughput,
    backlog that should build, amplification that should show)."""
    passed = not _missing(measured) and _number(name, measured) >= limit
    return _verdict(name, claim, limit, f"at least {_show(limit, unit)}", measured, unit,
                    "lower bound", passed, none_text, source)


def equals(name: str, expected: Value, measured: Value, unit: str = "", *,
           claim: str | None = None, none_text: str = NOT_MEASURED,
           source: str = "") -> Verdict:
    """Holds when measured == expected exactly: counts (orders lost: 0), states,
    flags. Use close_to for measured floats."""
    passed = not _missing(measured) and measured == expected
    return _verdict(name, claim, expected, _show(expected, unit), measured, unit,
                    "exact", passed, none_text, source)


def never(name: str, measured: Value, unit: str = "", *, claim: str | None = None,
          none_text: str = "never happened") -> Verdict:
    """Holds when the measurement is None (or NaN): the thing must not happen at all,
    e.g. ``never("async edge alert", time_to_detect(errors, 0.01, t0), "s",
    none_text="never fired")``. The measured value, if any, is in the finding."""
    passed = _missing(measured)
    return _verdict(name, claim or f"{name} never happens", None, "never", measured, unit,
                    "must not happen", passed, none_text)


# ------------------------------------------------------------------------ collection

class Hypotheses:
    """The hypotheses of one experiment (one topology, usually), in the order checked."""

    def __init__(self, title: str = "") -> None:
        self.title = title
        self._verdicts: list[Verdict] = []
        self._expected: dict[str, tuple[str, Callable[[Value], Verdict]]] = {}

    def check(self, verdict: Verdict) -> Verdict:
        """Record a verdict and hand it back (so it can be printed or asserted alone)."""
        self._verdicts.append(verdict)
        return verdict

    def expect(self, check: Callable[..., Verdict], name: str, *predicted: Value,
               **options: Any) -> None:
        """State a prediction before the run: ``check(name, *predicted, measured,
        **options)`` is called by ``measure(name, measured)`` after it. Until then it
        counts as failed ("not measured")."""
        if name in self._expected:
            raise AnalysisError(f"hypothesis {name!r} is already expected; give each "
                                "prediction its own name")
        claim = check(name, *predicted, None, **options).claim  # checks the options now

        def judge(measured: Value) -> Verdict:
            return check(name, *predicted, measured, **options)

        self._expected[name] = (claim, judge)

    def measure(self, name: str, measured: Value) -> Verdict:
        """Judge a prediction stated with ``expect`` against its measurement."""
        if name not in self._expected:
            raise AnalysisError(f"hypothesis {name!r} was not expected (or is already "
                                f"measured); waiting for: {sorted(self._expected)}")
        _, judge = self._expected.pop(name)
        return self.check(judge(measured))

    @property
    def verdicts(self) -> tuple[Verdict, ...]:
        """Every verdict, then every prediction still waiting for its measurement."""
        pending = tuple(
            Verdict(name=name, claim=claim, predicted=None, measured=None,
                    tolerance_text="", passed=False,
                    finding=f"{name}: not measured, claimed {claim!r}: {FAILS}")
            for name, (claim, _) in self._expected.items())
        return (*self._verdicts, *pending)

    @property
    def failed(self) -> tuple[Verdict, ...]:
        return tuple(v for v in self.verdicts if not v.passed)

    @property
    def passed(self) -> bool:
        return not self.failed

    def report(self) -> str:
        """Failed findings first, one per line, then the ones that hold, for context."""
        verdicts = self.verdicts
        failed = [v for v in verdicts if not v.passed]
        held = [v for v in verdicts if v.passed]
        total = len(verdicts)
        noun = "hypothesis" if total == 1 else "hypotheses"
        if failed:
            verb = "does" if len(failed) == 1 else "do"
            head = f"{len(failed)} of {total} {noun} {verb} NOT hold"
        elif total:
            head = f"{total} of {total} {noun} {'holds' if total == 1 else 'hold'}"
        else:
            head = "no hypotheses checked"
        lines = [f"{self.title}: {head}" if self.title else head]
        lines += [f"  FAILED  {v.finding}" for v in failed]
        lines += [f"  held    {v.finding}" for v in held]
        return "\n".join(lines)

    def assert_all(self) -> None:
        """Raise HypothesisFailed, listing every finding, if any hypothesis fails."""
        if not self.passed:
            raise HypothesisFailed(self.report(), self.verdicts)

    def to_frame(self) -> pd.DataFrame:
        """One row per verdict, columns as Verdict's fields, for reports."""
        columns = [f.name for f in fields(Verdict)]
        return pd.DataFrame([asdict(v) for v in self.verdicts], columns=columns)
