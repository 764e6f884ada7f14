"""Analysis on synthetic frames whose answers are known by construction."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from testbed.analysis import (
    EVENTS,
    REQUESTS,
    SAMPLES,
    AnalysisError,
    FaultWindow,
    FrameError,
    Schema,
    between,
    drain_rate,
    error_rate,
    events_frame,
    fault_windows,
    growth_rate,
    ledger_audit,
    peak,
    percentile,
    series,
    time_to_detect,
    time_to_recover,
    windowed_latency,
)
from testbed.faults.timeline import Event

NAN = math.nan


def requests(t: list[float], latency: list[float], ok: list[bool] | None = None
             ) -> pd.DataFrame:
    """A full requests frame; a request without a latency failed unless told."""
    n = len(t)
    oks = ok if ok is not None else [not math.isnan(x) for x in latency]
    return REQUESTS.frame({
        "t_scheduled": t[i], "t_sent": t[i], "latency_s": latency[i],
        "status": 200 if oks[i] else 0, "error": "" if oks[i] else "timeout",
        "ok": oks[i], "topology": "sync", "order_id": f"o{i}"} for i in range(n))


def curve(points: dict[float, float]) -> pd.Series:
    return pd.Series(list(points.values()), index=pd.Index(list(points), dtype=float,
                                                           name="t"), dtype=float)


def events(*rows: tuple[float, str, str, str]) -> pd.DataFrame:
    return EVENTS.frame({"t": t, "kind": k, "fault": f, "target": g, "detail": ""}
                        for t, k, f, g in rows)


# ------------------------------------------------------------------------------ frames

@pytest.mark.parametrize("schema", [REQUESTS, SAMPLES, EVENTS])
def test_empty_frames_have_every_documented_column_and_validate(schema: Schema) -> None:
    frame = schema.empty()
    assert list(frame.columns) == list(schema.names)
    assert schema.validate(frame) is frame


def test_a_missing_column_is_named_with_its_meaning() -> None:
    frame = REQUESTS.empty().drop(columns=["ok"])
    with pytest.raises(FrameError, match=r"requests frame lacks column\(s\) \['ok'\].*"
                                         r"Fix: give it these columns: ok \(bool"):
        REQUESTS.validate(frame)


def test_a_column_of_the_wrong_kind_is_refused_with_the_fix() -> None:
    frame = pd.DataFrame({"t_scheduled": [0.0], "latency_s": ["slow"]})
    with pytest.raises(FrameError, match=r"column 'latency_s' has dtype .* expected float"):
        windowed_latency(frame)
    with pytest.raises(FrameError, match=r"'ok' has dtype .* expected bool"):
        error_rate(pd.DataFrame({"t_scheduled": [0.0], "ok": [1]}))


def test_functions_check_only_the_columns_they_read() -> None:
    frame = pd.DataFrame({"t_scheduled": [0.0, 0.5], "latency_s": [0.1, 0.3]})
    assert windowed_latency(frame)["p50"].tolist() == [pytest.approx(0.2)]


def test_events_frame_puts_timeline_events_on_the_run_clock() -> None:
    origin = 1000.0
    frame = events_frame([Event(1002.5, "inject", "latency", "a-b", "+100 ms"),
                          Event(1007.0, "remove", "latency", "a-b")], origin)
    EVENTS.validate(frame)
    assert frame["t"].tolist() == [2.5, 7.0]
    assert fault_windows(frame) == [FaultWindow("latency", "a-b", 2.5, 7.0)]


def test_events_frame_of_no_events_is_empty_but_typed() -> None:
    frame = events_frame([])
    assert frame.empty and list(frame.columns) == list(EVENTS.names)


# -------------------------------------------------------------------- windowed latency

def test_windowed_latency_has_known_percentiles_and_keeps_empty_windows() -> None:
    # window 0: latencies 1..100 ms; window 1: nothing; window 2: one request of 7 ms
    t = [i / 100 for i in range(100)] + [2.5]
    latency = [(i + 1) / 1000 for i in range(100)] + [0.007]
    table = windowed_latency(requests(t, latency))
    assert table.index.tolist() == [0.0, 1.0, 2.0]
    assert table.index.name == "t"
    assert list(table.columns) == ["p50", "p95", "p99", "count", "answered"]
    # linear interpolation over 1..100 ms
    assert table.loc[0.0, "p50"] == pytest.approx(0.0505)
    assert table.loc[0.0, "p95"] == pytest.approx(0.09505)
    assert table.loc[0.0, "p99"] == pytest.approx(0.09901)
    assert table.loc[0.0, "count"] == 100
    assert np.isnan(table.loc[1.0, ["p50", "p95", "p99"]].to_numpy(dtype=float)).all()
    assert table.loc[1.0, "count"] == 0 and table.loc[1.0, "answered"] == 0
    assert table.loc[2.0, ["p50", "p99"]].tolist() == [0.007, 0.007]  # single point
    assert table["count"].dtype == np.int64


def test_failed_requests_are_left_out_of_percentiles_but_counted_as_errors() -> None:
    t = [0.1, 0.2, 0.3, 0.4]
    latency = [0.010, 0.020, NAN, NAN]  # two answered, two never answered
    frame = requests(t, latency)
    row = windowed_latency(frame).loc[0.0]
    assert row["p50"] == pytest.approx(0.015)
    assert row["p99"] == pytest.approx(0.0199)
    assert (row["count"], row["answered"]) == (4, 2)
    assert error_rate(frame).tolist() == [0.5]


def test_a_window_where_nothing_was_answered_has_nan_percentiles() -> None:
    table = windowed_latency(requests([0.1, 0.2], [NAN, NAN]))
    assert np.isnan(table.loc[0.0, "p99"])
    assert (table.loc[0.0, "count"], table.loc[0.0, "answered"]) == (2, 0)


def test_windows_are_aligned_to_the_run_origin_not_to_the_first_request() -> None:
    table = windowed_latency(requests([3.4, 5.9], [0.1, 0.2]), window_s=2.0)
    assert table.index.tolist() == [2.0, 4.0]


def test_window_boundaries_survive_float_rounding() -> None:
    table = windowed_latency(requests([0.3, 0.7], [0.1, 0.2]), window_s=0.1)
    assert table.index[0] == 0.3  # 0.3 / 0.1 is 2.999...; still window 3
    assert len(table) == 5


def test_percentiles_are_named_and_ordered_as_asked() -> None:
    table = windowed_latency(requests([0.0, 0.1], [0.1, 0.3]), percentiles=(99.9, 50))
    assert list(table.columns) == ["p99.9", "p50", "count", "answered"]


def test_empty_requests_give_empty_but_typed_results() -> None:
    table = windowed_latency(REQUESTS.empty())
    assert table.empty and list(table.columns) == ["p50", "p95", "p99", "count", "answered"]
    rate = error_rate(REQUESTS.empty())
    assert rate.empty and rate.dtype == float


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"window_s": 0}, "window_s=0"),
    ({"percentiles": (50, 101)}, r"percentiles \[101\] are outside 0..100"),
    ({"percentiles": ()}, "at least one"),
    ({"percentiles": (99, 99)}, "repeat"),
])
def test_bad_window_arguments_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(AnalysisError, match=message):
        windowed_latency(requests([0.0], [0.1]), **kwargs)  # type: ignore[arg-type]


def test_a_request_without_a_scheduled_time_is_refused() -> None:
    with pytest.raises(FrameError, match=r"1 row.* have no t_scheduled"):
        windowed_latency(pd.DataFrame({"t_scheduled": [0.0, NAN], "latency_s": [0.1, 0.1]}))


# -------------------------------------------------------------------------- error rate

def test_error_rate_is_the_fraction_not_ok_with_nan_for_empty_windows() -> None:
    frame = requests([0.1, 0.2, 0.3, 0.4, 2.0, 2.5],
                     [0.1, 0.1, 0.1, 0.2, 0.1, 0.1],
                     ok=[True, True, True, False, False, False])
    rate = error_rate(frame)
    assert rate.index.tolist() == [0.0, 1.0, 2.0]
    assert rate[0.0] == 0.25
    assert np.isnan(rate[1.0])
    assert rate[2.0] == 1.0
    assert rate.name == "error_rate"


# ------------------------------------------------------------------- slices of a frame

def test_percentile_and_between_slice_by_scheduled_time() -> None:
    frame = requests([0.0, 1.0, 2.0, 3.0, 4.0], [0.01, 1.0, 2.0, NAN, 0.01])
    during = between(frame, 1.0, 4.0)
    assert during["order_id"].tolist() == ["o1", "o2", "o3"]
    assert percentile(frame, 50, 1.0, 4.0) == pytest.approx(1.5)  # NaN left out
    assert percentile(frame, 50) == pytest.approx(0.505)
    assert math.isnan(percentile(frame, 99, 10.0, 20.0))
    assert len(between(frame)) == 5


# ------------------------------------------------------------------------------ series

def test_series_picks_one_metric_of_one_source_in_time_order() -> None:
    samples = SAMPLES.frame([
        {"t": 2.0, "source": "queue:payments", "metric": "ready", "value": 20.0},
        {"t": 1.0, "source": "queue:payments", "metric": "ready", "value": 10.0},
        {"t": 1.0, "source": "queue:payments", "metric": "unacked", "value": 99.0},
        {"t": 1.0, "source": "queue:inventory", "metric": "ready", "value": 98.0},
    ])
    ready = series(samples, "queue:payments", "ready")
    assert ready.index.tolist() == [1.0, 2.0]
    assert ready.tolist() == [10.0, 20.0]
    assert ready.name == "queue:payments ready"
    assert series(samples, "queue:nowhere", "ready").empty
    assert series(SAMPLES.empty(), "queue:payments", "ready").empty


# ------------------------------------------------------------------ peaks and rates

def test_peak_is_the_highest_value_and_the_first_time_it_was_reached() -> None:
    assert peak(curve({0: 1, 1: 5, 2: NAN, 3: 5, 4: 2})) == (5.0, 1.0)
    assert peak(curve({7: 3})) == (3.0, 7.0)


@pytest.mark.parametrize("empty", [curve({}), curve({1: NAN})])
def test_peak_of_nothing_is_nan(empty: pd.Series) -> None:
    value, t = peak(empty)
    assert math.isnan(value) and math.isnan(t)


def test_growth_rate_is_the_least_squares_slope_over_the_range() -> None:
    backlog = curve({t: 50.0 * t + (3 if t % 2 else -3) for t in range(11)})
    backlog[20.0] = 0.0  # after the range: ignored
    assert growth_rate(backlog, 0, 10) == pytest.approx(50.0, rel=0.02)
    assert growth_rate(curve({0: 0, 1: 10, 2: 20}), 0, 2) == pytest.approx(10.0)
    assert growth_rate(curve({0: 10, 1: 5, 2: 0}), 0, 2) == pytest.approx(-5.0)


def test_growth_rate_needs_two_points() -> None:
    assert math.isnan(growth_rate(curve({1: 5}), 0, 10))
    assert math.isnan(growth_rate(curve({}), 0, 10))
    with pytest.raises(AnalysisError, match="start=5 is after end=1"):
        growth_rate(curve({1: 5}), 5, 1)


def test_drain_rate_runs_from_the_peak_to_the_first_minimum_after_it() -> None:
    backlog = curve({0: 0, 5: 500, 10: 1000, 12: 600, 15: 0, 16: 0, 17: 40})
    assert drain_rate(backlog, after=0) == pytest.approx(1000 / 5)


def test_drain_rate_looks_only_after_the_given_time() -> None:
    backlog = curve({0: 900, 1: 0, 10: 100, 12: 0})  # an earlier, larger peak
    assert drain_rate(backlog, after=5) == pytest.approx(50.0)


def test_a_backlog_that_never_drains_has_drain_rate_zero() -> None:
    assert drain_rate(curve({0: 0, 1: 10, 2: 20}), after=0) == 0.0
    assert drain_rate(curve({0: 5, 1: 5}), after=0) == 0.0


def test_drain_rate_needs_two_points() -> None:
    assert math.isnan(drain_rate(curve({0: 7}), after=0))
    assert math.isnan(drain_rate(curve({}), after=0))


# ------------------------------------------------------------------------ detection

def test_time_to_detect_is_measured_from_the_given_time() -> None:
    depth = curve({0: 0, 10: 0, 11: 50, 12: NAN, 13: 150, 14: 300})
    assert time_to_detect(depth, threshold=100, after=10) == 3.0
    assert time_to_detect(depth, threshold=150, after=10) == 3.0  # at the threshold
    assert time_to_detect(depth, threshold=1000, after=10) is None
    consumers = curve({0: 2, 5: 2, 6: 0})
    assert time_to_detect(consumers, threshold=0, after=5, above=False) == 1.0
    assert time_to_detect(curve({}), threshold=1, after=0) is None


# ------------------------------------------------------------------------- recovery

def outage() -> pd.Series:
    """Baseline 10 until t=10, 100 during the fault, removed at 20; a short dip into
    the band at 21, then back in band for good from 23."""
    points = {float(t): 10.0 for t in range(10)}
    points |= {float(t): 100.0 for t in range(10, 21)}
    points |= {21.0: 11.0, 21.5: 80.0, 22.0: 40.0}
    points |= {23.0 + i / 2: 10.5 for i in range(10)}
    return curve(points)


def test_recovery_is_the_first_time_the_series_holds_in_the_band() -> None:
    assert time_to_recover(outage(), baseline_end=9, removed_at=20, tolerance=2) == 3.0


def test_a_hold_of_zero_takes_the_first_point_in_the_band() -> None:
    assert time_to_recover(outage(), 9, 20, tolerance=2, hold_s=0) == 1.0


def test_a_series_that_never_comes_back_never_recovers() -> None:
    stuck = curve({0: 10, 5: 10, 10: 100, 20: 100, 30: 100})
    assert time_to_recover(stuck, baseline_end=5, removed_at=20, tolerance=2) is None


def test_a_fault_never_removed_has_no_recovery_time() -> None:
    assert time_to_recover(outage(), baseline_end=9, removed_at=None, tolerance=2) is None


def test_recovery_must_be_seen_for_the_whole_hold() -> None:
    ends_early = curve({0: 10, 5: 10, 10: 100, 20: 10, 20.5: 10})  # data stops
    assert time_to_recover(ends_early, 5, 20, tolerance=1, hold_s=1.0) is None
    assert time_to_recover(ends_early, 5, 20, tolerance=1, hold_s=0.5) == 0.0


def test_missing_data_breaks_a_hold() -> None:
    gap = curve({0: 10, 5: 10, 20: 10, 20.5: NAN, 21: 10, 22: 10})
    assert time_to_recover(gap, 5, 20, tolerance=1, hold_s=1.0) == 1.0


def test_relative_tolerance_widens_the_band_around_a_large_baseline() -> None:
    latency = curve({0: 100, 1: 100, 2: 500, 3: 108, 4: 108, 5: 108})
    assert time_to_recover(latency, 1, 2, tolerance=1, hold_s=1) is None
    assert time_to_recover(latency, 1, 2, tolerance=1, hold_s=1, rel=0.1) == 1.0


def test_baseline_start_leaves_a_warm_up_out_of_the_baseline() -> None:
    warm = curve({0: 90, 1: 90, 2: 90, 3: 10, 4: 10, 5: 10, 6: 100, 7: 10, 8: 10, 9: 10})
    assert time_to_recover(warm, 5, 7, tolerance=1, baseline_start=3) == 0.0
    assert time_to_recover(warm, 5, 7, tolerance=1) is None  # median of 90,90,90,10,10,10


def test_no_baseline_is_an_error_not_a_silent_answer() -> None:
    with pytest.raises(AnalysisError, match=r"no point of late lies in the baseline range"):
        time_to_recover(curve({10: 1, 11: 1}).rename("late"), 5, 10, tolerance=1)
    with pytest.raises(AnalysisError, match="baseline range"):
        time_to_recover(curve({}), 5, 10, tolerance=1)
    with pytest.raises(AnalysisError, match="none may be negative"):
        time_to_recover(outage(), 9, 20, tolerance=-1)


def test_a_single_point_cannot_show_a_recovery() -> None:
    assert time_to_recover(curve({0: 1}), 0, 0, tolerance=1) is None


def test_recovery_of_user_facing_p99_from_a_requests_frame() -> None:
    # 10 requests/s; 10 ms before, 1 s during the fault [10, 20), errors at [10, 15)
    t = [i / 10 for i in range(400)]
    latency = [1.0 if 10 <= x < 20 else 0.01 for x in t]
    latency = [NAN if 10 <= x < 15 else v for x, v in zip(t, latency, strict=True)]
    frame = requests(t, latency)
    p99 = windowed_latency(frame)["p99"]
    assert time_to_recover(p99, baseline_end=9, removed_at=20, tolerance=0.005) == 0.0
    errors = error_rate(frame)
    assert time_to_detect(errors, threshold=0.5, after=10) == 0.0
    assert time_to_recover(errors, 9, removed_at=15, tolerance=0.0) == 0.0


# ---------------------------------------------------------------------- fault windows

def test_fault_windows_pair_injections_with_their_removal() -> None:
    frame = events((1.0, "inject", "latency", "a-b"), (1.1, "verify", "latency", "a-b"),
                   (2.0, "inject", "latency", "b-c"), (6.0, "remove", "latency", "a-b"),
                   (9.0, "inject", "kill", "payments"))
    assert fault_windows(frame) == [FaultWindow("latency", "a-b", 1.0, 6.0),
                                    FaultWindow("latency", "b-c", 2.0, None),
                                    FaultWindow("kill", "payments", 9.0, None)]
    assert fault_windows(frame)[0].duration == 5.0
    assert fault_windows(frame)[1].duration is None


def test_a_failed_injection_opens_no_window_and_a_failed_removal_closes_none() -> None:
    frame = events((1.0, "inject_failed", "latency", "a-b"), (1.2, "remove", "latency", "a-b"),
                   (3.0, "inject", "pause", "p"), (3.5, "verify_failed", "pause", "p"),
                   (3.6, "remove", "pause", "p"),
                   (5.0, "inject", "down", "broker"), (8.0, "remove_failed", "down", "broker"))
    assert fault_windows(frame) == [FaultWindow("pause", "p", 3.0, 3.6),
                                    FaultWindow("down", "broker", 5.0, None)]


def test_repeated_injections_pair_in_order_whatever_the_row_order() -> None:
    frame = events((7.0, "remove", "kill", "p"), (1.0, "inject", "kill", "p"),
                   (5.0, "inject", "kill", "p"), (3.0, "remove", "kill", "p"))
    assert fault_windows(frame) == [FaultWindow("kill", "p", 1.0, 3.0),
                                    FaultWindow("kill", "p", 5.0, 7.0)]


def test_fault_windows_of_no_events_and_of_unknown_kinds() -> None:
    assert fault_windows(EVENTS.empty()) == []
    with pytest.raises(FrameError, match=r"unknown kind\(s\) \['explode'\]"):
        fault_windows(events((1.0, "explode", "x", "y")))


# ----------------------------------------------------------------------------- ledgers

def test_an_audit_where_everything_was_processed_once_balances() -> None:
    audit = ledger_audit({"a", "b", "c"}, {"a": 1, "b": 1, "c": 1})
    assert (audit.accepted, audit.processed, audit.processed_once) == (3, 3, 3)
    assert (audit.duplicated, audit.duplicates, audit.lost, audit.unexpected) == (0, 0, 0, 0)
    assert audit.balanced


def test_duplicates_count_orders_and_extra_deliveries() -> None:
    audit = ledger_audit(["a", "b", "c", "a"], {"a": 2, "b": 3, "c": 1})
    assert audit.accepted == 3  # ids, not rows
    assert (audit.processed_once, audit.duplicated, audit.duplicates) == (1, 2, 3)
    assert audit.duplicated_ids == {"a", "b"}
    assert audit.balanced


def test_lost_is_what_neither_processing_nor_dead_letters_nor_the_queue_explain() -> None:
    accepted = [f"o{i}" for i in range(10)]
    processed = {f"o{i}": 1 for i in range(6)} | {"o6": 0}  # a 0 count is not processed
    audit = ledger_audit(accepted, processed, dead_lettered=["o7"], still_queued=1)
    assert (audit.processed, audit.dead_lettered, audit.still_queued) == (6, 1, 1)
    assert audit.missing_ids == {"o6", "o8", "o9"}
    assert audit.lost == 2
    assert not audit.balanced
    settled = ledger_audit(accepted, processed, dead_lettered=["o7"], still_queued=3)
    assert settled.lost == 0 and settled.balanced
    overfull = ledger_audit(accepted, processed, dead_lettered=["o7"], still_queued=5)
    assert overfull.lost == 0 and not overfull.balanced


def test_a_processed_order_is_not_also_dead_lettered_and_strangers_are_counted() -> None:
    audit = ledger_audit({"a", "b"}, {"a": 1, "b": 1, "z": 1}, dead_lettered={"a", "y"})
    assert (audit.processed, audit.dead_lettered, audit.unexpected) == (2, 0, 1)
    assert audit.balanced


def test_an_empty_audit_balances_and_bad_counts_are_refused() -> None:
    assert ledger_audit(set(), {}).balanced
    with pytest.raises(AnalysisError, match="negative counts for \\['a'\\]"):
        ledger_audit({"a"}, {"a": -1})
    with pytest.raises(AnalysisError, match="still_queued=-1"):
        ledger_audit({"a"}, {"a": 1}, still_queued=-1)


def test_an_audit_describes_itself_in_one_line() -> None:
    audit = ledger_audit({"a", "b", "c"}, {"a": 2, "b": 1})
    assert audit.describe() == ("3 accepted: 2 processed (1 more than once, 1 extra "
                                "deliveries), 0 dead-lettered, 0 still queued, 1 lost, "
                                "0 processed but never accepted (does not balance)")
