"""Hypotheses carry predicted and measured values, and read like incident findings."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from testbed.analysis import (
    AnalysisError,
    Hypotheses,
    HypothesisFailed,
    Verdict,
    at_least,
    at_most,
    close_to,
    drain_rate,
    equals,
    growth_rate,
    ledger_audit,
    never,
    peak,
    time_to_recover,
)
from testbed.analysis.hypotheses import format_number

# ------------------------------------------------------------------------------ checks


def test_close_to_within_a_relative_tolerance_holds() -> None:
    verdict = close_to("backlog peak", 2000, 1930, rel=0.25, unit="messages")
    assert verdict.passed
    assert verdict.finding == "backlog peak was 1,930 messages, predicted 2,000 ± 25%: holds"
    assert verdict.claim == "backlog peak is 2,000 ± 25%"
    assert (verdict.predicted, verdict.measured, verdict.tolerance_text) == (2000, 1930,
                                                                             "± 25%")
    assert str(verdict) == verdict.finding


def test_close_to_outside_an_absolute_tolerance_does_not_hold() -> None:
    verdict = close_to("gateway p99", 0.6, 0.75, abs=0.1, unit="s")
    assert not verdict.passed
    assert verdict.finding == "gateway p99 was 0.75 s, predicted 0.6 ± 0.1 s: does NOT hold"


def test_close_to_with_both_tolerances_takes_the_wider() -> None:
    near_zero = close_to("errors", 0, 3, rel=0.1, abs=5)
    assert near_zero.passed and near_zero.tolerance_text == "± max(10%, 5)"
    large = close_to("backlog", 1000, 1080, rel=0.1, abs=5)
    assert large.passed
    assert not close_to("backlog", 1000, 1101, rel=0.1, abs=5).passed


def test_close_to_needs_a_tolerance() -> None:
    with pytest.raises(AnalysisError, match=r"close_to needs rel= .* or abs="):
        close_to("backlog", 1000, 1000)
    with pytest.raises(AnalysisError, match="neither may be negative"):
        close_to("backlog", 1000, 1000, rel=-0.1)


def test_at_most_reads_like_an_incident_finding() -> None:
    verdict = at_most("recovery time", 10, 14.2, unit="s")
    assert not verdict.passed
    assert verdict.finding == "recovery time was 14.2 s, predicted at most 10 s: does NOT hold"
    assert at_most("recovery time", 10, 10.0, unit="s").passed


def test_never_recovering_fails_at_most_with_a_readable_finding() -> None:
    verdict = at_most("recovery time", 10, None, unit="s", none_text="never recovered")
    assert not verdict.passed and verdict.measured is None
    assert verdict.finding == ("recovery time: never recovered, predicted at most 10 s: "
                               "does NOT hold")


@pytest.mark.parametrize("missing", [None, math.nan])
def test_a_missing_measurement_fails_every_bounded_check(missing: float | None) -> None:
    for verdict in (at_most("x", 1, missing), at_least("x", 1, missing),
                    close_to("x", 1, missing, rel=1.0), equals("x", 1, missing)):
        assert not verdict.passed
        assert verdict.finding.startswith("x: no value measured, predicted ")


def test_at_least() -> None:
    assert at_least("drain rate", 100, 180.5, unit="messages/s").passed
    verdict = at_least("drain rate", 100, 42, unit="messages/s")
    assert verdict.finding == ("drain rate was 42 messages/s, predicted at least "
                               "100 messages/s: does NOT hold")
    assert verdict.tolerance_text == "lower bound"


def test_equals_for_counts_and_text() -> None:
    assert equals("orders lost", 0, 0).finding == "orders lost was 0, predicted 0: holds"
    assert not equals("orders lost", 0, 3).passed
    status = equals("edge status", "200", "503")
    assert status.finding == "edge status was '503', predicted '200': does NOT hold"


def test_never_holds_only_when_nothing_was_measured() -> None:
    quiet = never("async edge alert", None, "s", none_text="never fired")
    assert quiet.passed
    assert quiet.finding == "async edge alert: never fired, predicted never: holds"
    assert quiet.claim == "async edge alert never happens"
    fired = never("async edge alert", 2.5, "s")
    assert not fired.passed
    assert fired.finding == "async edge alert was 2.5 s, predicted never: does NOT hold"


def test_a_custom_claim_is_kept() -> None:
    verdict = at_most("error rate", 1, 0, unit="%", claim="the async edge stays up")
    assert verdict.claim == "the async edge stays up"
    assert verdict.finding == "error rate was 0%, predicted at most 1%: holds"


def test_a_bound_on_text_is_refused() -> None:
    with pytest.raises(AnalysisError, match="measured 'fast' is not a number"):
        at_most("latency", 1, "fast")  # type: ignore[arg-type]


def test_verdicts_are_frozen() -> None:
    verdict = equals("n", 1, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        verdict.passed = False  # type: ignore[misc]


@pytest.mark.parametrize(("value", "text"), [
    (1930.4, "1,930"), (2000.0, "2,000"), (14.23, "14.2"), (0.0123, "0.0123"),
    (0.0, "0"), (7, "7"), (1234567, "1,234,567"), (-3.5, "-3.5"), (math.nan, "NaN"),
    (math.inf, "infinite"), (True, "True"), (np.int64(1500), "1,500"),
    (np.float64(0.25), "0.25"),
])
def test_numbers_in_findings_are_readable(value: float, text: str) -> None:
    assert format_number(value) == text


# -------------------------------------------------------------------------- collection

def outage_verdicts(h: Hypotheses) -> None:
    h.check(close_to("backlog peak", 2000, 1930, rel=0.25, unit="messages"))
    h.check(at_most("recovery time", 10, 14.2, unit="s"))  # deliberately wrong
    h.check(equals("orders lost", 0, 0))


def test_all_holding_hypotheses_assert_quietly() -> None:
    h = Hypotheses("E2 outage, async")
    verdict = h.check(at_most("edge error rate", 0, 0, unit="%"))
    assert isinstance(verdict, Verdict) and h.verdicts == (verdict,)
    assert h.passed and h.failed == ()
    h.assert_all()
    assert h.report() == ("E2 outage, async: 1 of 1 hypothesis holds\n"
                          "  held    edge error rate was 0%, predicted at most 0%: holds")


def test_a_wrong_hypothesis_fails_with_every_finding_in_the_message() -> None:
    h = Hypotheses("E2 outage, async")
    outage_verdicts(h)
    assert [v.name for v in h.failed] == ["recovery time"]
    with pytest.raises(HypothesisFailed) as caught:
        h.assert_all()
    assert isinstance(caught.value, AssertionError)
    assert str(caught.value) == (
        "E2 outage, async: 1 of 3 hypotheses does NOT hold\n"
        "  FAILED  recovery time was 14.2 s, predicted at most 10 s: does NOT hold\n"
        "  held    backlog peak was 1,930 messages, predicted 2,000 ± 25%: holds\n"
        "  held    orders lost was 0, predicted 0: holds")
    assert [v.name for v in caught.value.failed] == ["recovery time"]
    assert len(caught.value.verdicts) == 3


def test_several_failures_are_each_listed() -> None:
    h = Hypotheses()
    h.check(at_most("a", 1, 2))
    h.check(at_least("b", 5, 1))
    with pytest.raises(HypothesisFailed, match=r"^2 of 2 hypotheses do NOT hold\n"
                                               r"  FAILED  a was 2.*\n  FAILED  b was 1"):
        h.assert_all()


def test_to_frame_carries_predicted_and_measured_for_the_report() -> None:
    h = Hypotheses()
    outage_verdicts(h)
    frame = h.to_frame()
    assert list(frame.columns) == ["name", "claim", "predicted", "measured",
                                   "tolerance_text", "passed", "finding", "source"]
    assert frame["name"].tolist() == ["backlog peak", "recovery time", "orders lost"]
    assert frame["passed"].tolist() == [True, False, True]
    assert frame.loc[1, "measured"] == 14.2 and frame.loc[1, "predicted"] == 10
    assert list(Hypotheses().to_frame().columns) == list(frame.columns)
    assert Hypotheses("E9").report() == "E9: no hypotheses checked"


def test_a_prediction_stated_before_the_run_is_judged_by_its_measurement() -> None:
    h = Hypotheses("E1")
    h.expect(at_most, "recovery time", 10, unit="s", none_text="never recovered")
    h.expect(close_to, "backlog peak", 2000, rel=0.25, unit="messages")
    h.expect(never, "edge alert", none_text="never fired")
    assert len(h.failed) == 3  # nothing measured yet
    h.measure("recovery time", None)
    h.measure("backlog peak", 2100)
    h.measure("edge alert", None)
    assert [v.finding for v in h.verdicts] == [
        "recovery time: never recovered, predicted at most 10 s: does NOT hold",
        "backlog peak was 2,100 messages, predicted 2,000 ± 25%: holds",
        "edge alert: never fired, predicted never: holds"]


def test_a_prediction_never_measured_fails_and_says_so() -> None:
    h = Hypotheses()
    h.expect(at_most, "recovery time", 10, unit="s")
    with pytest.raises(HypothesisFailed, match="recovery time: not measured, claimed "
                                               "'recovery time is at most 10 s'"):
        h.assert_all()


def test_predictions_are_checked_when_stated_and_named_once() -> None:
    h = Hypotheses()
    with pytest.raises(AnalysisError, match="close_to needs rel="):
        h.expect(close_to, "backlog peak", 2000)
    h.expect(equals, "lost", 0)
    with pytest.raises(AnalysisError, match="'lost' is already expected"):
        h.expect(equals, "lost", 0)
    with pytest.raises(AnalysisError, match=r"'typo' was not expected.*\['lost'\]"):
        h.measure("typo", 0)
    h.measure("lost", 0)
    with pytest.raises(AnalysisError, match="already measured"):
        h.measure("lost", 0)


# --------------------------------------------------- from synthetic frames to verdicts

def test_an_async_outage_from_samples_to_verdicts() -> None:
    """Payments down for 10 s at 50 orders/s; consumers drain at 250/s, so the net drain
    is 200/s: a 500-message backlog, cleared 2.5 s after the fault ends."""
    arrival, service, down_from, down_until = 50.0, 250.0, 5.0, 15.0
    t = [i / 10 for i in range(300)]

    def depth(x: float) -> float:
        if x < down_from:
            return 0.0
        if x < down_until:
            return arrival * (x - down_from)
        return max(0.0, arrival * (down_until - down_from) - (service - arrival) *
                   (x - down_until))

    backlog = pd.Series([depth(x) for x in t], index=pd.Index(t, name="t"))
    h = Hypotheses("E2 outage, async")
    h.check(close_to("backlog peak", arrival * (down_until - down_from), peak(backlog)[0],
                     rel=0.1, unit="messages"))
    h.check(close_to("backlog growth", arrival, growth_rate(backlog, down_from, down_until),
                     rel=0.05, unit="messages/s"))
    h.check(close_to("net drain rate", service - arrival, drain_rate(backlog, down_from),
                     rel=0.05, unit="messages/s"))
    h.check(at_most("recovery time", 500 / (service - arrival) + 0.5,
                    time_to_recover(backlog, down_from - 0.1, down_until, tolerance=1,
                                    hold_s=1.0), unit="s", none_text="never recovered"))
    audit = ledger_audit({f"o{i}" for i in range(1500)}, {f"o{i}": 1 for i in range(1500)})
    h.check(equals("orders lost", 0, audit.lost))
    h.assert_all()
    assert h.verdicts[3].measured == pytest.approx(2.5)
