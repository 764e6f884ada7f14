"""Numbers out of the frames: what users saw, what operators saw, what was lost.

Pure functions over the frames of ``testbed.analysis.frames``; nothing here touches a
component. Conventions shared by every function:

- Time is float seconds on the run's one timeline. Windows are aligned to the timeline's
  origin (window k covers [k * window_s, (k + 1) * window_s)), so two topologies
  measured in the same run get the same windows and line up side by side.
- A request belongs to the window of its SCHEDULED time: that is when the user wanted
  it, and it keeps latency and error rate from drifting when the generator falls behind.
- A "series" is a pandas Series of floats indexed by time (``series()`` builds one from
  samples; a column of ``windowed_latency()`` or ``error_rate()`` is one too). Points
  are taken in time order; NaN means "no data" and is never evidence of anything:
  it is not a peak, not a breach, and not a recovered point.
- "Cannot be measured" is NaN for rates and levels, None for durations of something
  that never happened (never breached, never recovered).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import pandas as pd

from testbed.analysis.frames import (
    EVENT_KINDS,
    EVENTS,
    FAULT,
    KIND,
    LATENCY_S,
    METRIC,
    OK,
    REQUESTS,
    SAMPLES,
    SOURCE,
    T_SCHEDULED,
    TARGET,
    VALUE,
    AnalysisError,
    FrameError,
    T,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

DEFAULT_PERCENTILES: tuple[float, ...] = (50, 95, 99)


# ---------------------------------------------------------------- windows over requests

def _check_window(window_s: float) -> None:
    if not window_s > 0:
        raise AnalysisError(f"window_s={window_s}: give a window longer than 0 s")


def _percentile_names(percentiles: Sequence[float]) -> list[str]:
    if not percentiles:
        raise AnalysisError("percentiles=(): ask for at least one, e.g. (50, 95, 99)")
    bad = [p for p in percentiles if not 0 <= p <= 100]
    if bad:
        raise AnalysisError(f"percentiles {bad} are outside 0..100")
    names = [f"p{p:g}" for p in percentiles]
    if len(set(names)) != len(names):
        raise AnalysisError(f"percentiles {list(percentiles)} repeat one")
    return names


def _scheduled(requests: pd.DataFrame) -> FloatArray:
    t = requests[T_SCHEDULED].to_numpy(dtype=float)
    if np.isnan(t).any():
        raise FrameError(f"requests frame: {int(np.isnan(t).sum())} row(s) have no "
                         f"{T_SCHEDULED}; every scheduled request has a due time")
    return t


def _window_keys(t: FloatArray, window_s: float) -> IntArray:
    """Window number of each time; the rounding keeps 0.3 / 0.1 in window 3, not 2."""
    return np.floor(np.round(t / window_s, 9)).astype(np.int64)


def _window_index(keys: IntArray, window_s: float) -> tuple[IntArray, pd.Index]:
    """Every window number from the first to the last used, and their start times."""
    full = np.arange(keys.min(), keys.max() + 1, dtype=np.int64)
    return full, pd.Index(np.round(full * window_s, 9), name=T)


def windowed_latency(requests: pd.DataFrame, window_s: float = 1.0,
                     percentiles: Sequence[float] = DEFAULT_PERCENTILES) -> pd.DataFrame:
    """Latency percentiles per window of scheduled send time: the user's view over time.

    Index: window start (s), every window from the first request's to the last one's,
    so gaps show as rows rather than vanish. Columns: ``p50``, ``p95``, ``p99`` (one
    per percentile asked, named ``p{p:g}``), ``count`` (requests scheduled in the
    window) and ``answered`` (those with a latency, the sample behind the
    percentiles). Requests without a response (latency NaN) are left out of the
    percentiles, since they have no latency, but are counted in ``count`` and show in
    ``error_rate``. Percentiles use linear interpolation. A window with no answered
    request has NaN percentiles; an empty window also has count 0.
    """
    REQUESTS.validate(requests, only=(T_SCHEDULED, LATENCY_S))
    _check_window(window_s)
    names = _percentile_names(percentiles)
    if requests.empty:
        frame = pd.DataFrame({**{n: pd.Series([], dtype=float) for n in names},
                              "count": pd.Series([], dtype="int64"),
                              "answered": pd.Series([], dtype="int64")})
        frame.index = pd.Index([], dtype=float, name=T)
        return frame
    keys = _window_keys(_scheduled(requests), window_s)
    full, index = _window_index(keys, window_s)
    latency = pd.Series(requests[LATENCY_S].to_numpy(dtype=float))
    grouped = latency.groupby(keys)
    quantiles = [p / 100 for p in percentiles]
    table = grouped.quantile(quantiles).unstack()
    table = table.rename(columns=dict(zip(quantiles, names, strict=True)))[names]
    table["count"] = grouped.size()
    table["answered"] = grouped.count()
    table = table.reindex(full)
    table[["count", "answered"]] = table[["count", "answered"]].fillna(0)
    table = table.astype({"count": "int64", "answered": "int64"})
    table.index = index
    table.columns.name = None
    return table


def error_rate(requests: pd.DataFrame, window_s: float = 1.0) -> pd.Series:
    """Fraction of requests not ok per window of scheduled send time (0.0 to 1.0).

    Same windows as ``windowed_latency``. A request with no response counts as an
    error here even though it has no latency. Empty windows are NaN: with no request
    there is no rate, and 0 would claim the edge was healthy.
    """
    REQUESTS.validate(requests, only=(T_SCHEDULED, OK))
    _check_window(window_s)
    if requests.empty:
        return pd.Series([], dtype=float, index=pd.Index([], dtype=float, name=T),
                         name="error_rate")
    keys = _window_keys(_scheduled(requests), window_s)
    full, index = _window_index(keys, window_s)
    failed = pd.Series((~requests[OK].to_numpy(dtype=bool)).astype(float))
    rate = failed.groupby(keys).mean().reindex(full)
    return pd.Series(rate.to_numpy(dtype=float), index=index, name="error_rate")


def between(frame: pd.DataFrame, start: float | None = None, end: float | None = None,
            column: str = T_SCHEDULED) -> pd.DataFrame:
    """Rows whose ``column`` lies in [start, end) (either side open when None), e.g.
    the requests scheduled during a fault window."""
    if column not in frame.columns:
        raise FrameError(f"frame lacks column {column!r}; it has {list(frame.columns)}")
    keep = pd.Series(True, index=frame.index)
    if start is not None:
        keep &= frame[column] >= start
    if end is not None:
        keep &= frame[column] < end
    return frame[keep]


def percentile(requests: pd.DataFrame, p: float, start: float | None = None,
               end: float | None = None) -> float:
    """One latency percentile over requests scheduled in [start, end): e.g. p99 during
    the fault. Requests without a response are left out; NaN if none answered."""
    REQUESTS.validate(requests, only=(T_SCHEDULED, LATENCY_S))
    _percentile_names([p])
    latency = between(requests, start, end)[LATENCY_S].to_numpy(dtype=float)
    latency = latency[~np.isnan(latency)]
    return float(np.percentile(latency, p)) if latency.size else math.nan


# ----------------------------------------------------------------------- series of samples

def series(samples: pd.DataFrame, source: str, metric: str) -> pd.Series:
    """One metric of one source as a float Series indexed by time, in time order.

    Empty if the samples hold no such pair (a sampler that never saw a queue yields no
    rows), so check ``.empty`` where a missing series would be a mistake.
    """
    SAMPLES.validate(samples)
    rows = samples[(samples[SOURCE] == source) & (samples[METRIC] == metric)]
    out = pd.Series(rows[VALUE].to_numpy(dtype=float),
                    index=pd.Index(rows[T].to_numpy(dtype=float), name=T),
                    name=f"{source} {metric}")
    return out.sort_index(kind="stable")


def _points(values: pd.Series) -> tuple[FloatArray, FloatArray]:
    """Times and values as float arrays in time order; NaN values kept."""
    t = np.asarray(values.index, dtype=float)
    v = values.to_numpy(dtype=float, na_value=np.nan)
    order = np.argsort(t, kind="stable")
    return t[order], v[order]


def _finite_points(values: pd.Series, start: float = -math.inf,
                   end: float = math.inf) -> tuple[FloatArray, FloatArray]:
    """Points with a value (NaN dropped) whose time lies in [start, end]."""
    t, v = _points(values)
    keep = ~np.isnan(v) & (t >= start) & (t <= end)
    return t[keep], v[keep]


def peak(values: pd.Series) -> tuple[float, float]:
    """(highest value, time it was first reached): e.g. the backlog's worst moment.
    (NaN, NaN) when the series has no value."""
    t, v = _finite_points(values)
    if v.size == 0:
        return math.nan, math.nan
    i = int(np.argmax(v))
    return float(v[i]), float(t[i])


def growth_rate(values: pd.Series, start: float, end: float) -> float:
    """Least-squares slope (units per second) of the points in [start, end].

    A fitted slope, not end minus start, so one noisy sample cannot swing it: e.g. the
    backlog growth during a fault, to compare with arrival rate minus service rate.
    NaN with fewer than two distinct times in the range.
    """
    if start > end:
        raise AnalysisError(f"growth_rate: start={start} is after end={end}")
    t, v = _finite_points(values, start, end)
    if t.size < 2 or np.ptp(t) == 0:
        return math.nan
    dt = t - t.mean()
    return float((dt * (v - v.mean())).sum() / (dt * dt).sum())


def drain_rate(values: pd.Series, after: float) -> float:
    """How fast a backlog went down, as a positive number per second.

    From the peak at or after ``after`` to the first time the series reaches its
    lowest value after that peak: (peak - lowest) / (t_lowest - t_peak). Read off the
    queue depth, this is the NET rate (consumers' rate minus the arrival rate that
    continued meanwhile). 0.0 when nothing drained after the peak (it is the last
    point, or the series never went down); NaN with fewer than two points.
    """
    t, v = _finite_points(values, start=after)
    if t.size < 2:
        return math.nan
    i = int(np.argmax(v))
    j = i + int(np.argmin(v[i:]))
    if v[j] >= v[i]:
        return 0.0
    if t[j] <= t[i]:
        return math.nan
    return float((v[i] - v[j]) / (t[j] - t[i]))


def time_to_detect(values: pd.Series, threshold: float, after: float,
                   above: bool = True) -> float | None:
    """Seconds from ``after`` (usually the injection) until the first point at or
    beyond ``threshold`` (``>=`` when ``above``, else ``<=``): how long an alert on
    this signal would have taken. None if it never got there."""
    t, v = _finite_points(values, start=after)
    breach = v >= threshold if above else v <= threshold
    hits = np.flatnonzero(breach)
    return float(t[hits[0]] - after) if hits.size else None


def time_to_recover(values: pd.Series, baseline_end: float, removed_at: float | None,
                    tolerance: float, hold_s: float = 1.0,
                    baseline_start: float | None = None, *, rel: float = 0.0
                    ) -> float | None:
    """Seconds from the fault's removal until the series is back to steady state.

    Baseline: the median of the points in [baseline_start (default: the first point),
    baseline_end], i.e. before the fault. Band: baseline ± max(tolerance, rel *
    |baseline|), so ``tolerance`` is absolute (in the series' unit) and ``rel`` an
    optional fraction of the baseline, whichever is wider (as ``math.isclose``).
    Recovered at the first point t >= removed_at from which every following point
    stays inside the band for at least ``hold_s`` seconds (a point exactly hold_s
    later must still be in the band, so recovery is seen, not assumed from the end of
    the data). A NaN point (no data) breaks the hold. Returns t - removed_at.

    None if the fault was never removed (``removed_at`` None) or the series never
    holds in the band. Raises AnalysisError if no point lies in the baseline range.
    """
    if removed_at is None:
        return None
    if tolerance < 0 or rel < 0 or hold_s < 0:
        raise AnalysisError(f"time_to_recover: tolerance={tolerance}, rel={rel}, "
                            f"hold_s={hold_s}; none may be negative")
    t, v = _points(values)
    start = baseline_start if baseline_start is not None else -math.inf
    base = v[(t >= start) & (t <= baseline_end) & ~np.isnan(v)]
    if base.size == 0:
        raise AnalysisError(
            f"time_to_recover: no point of {values.name or 'the series'} lies in the "
            f"baseline range [{start}, {baseline_end}] s ({t.size} point(s) in all). "
            "Fix: sample before the fault and end the baseline before the injection")
    baseline = float(np.median(base))
    band = max(tolerance, rel * abs(baseline))
    later = t >= removed_at
    t, v = t[later], v[later]
    inside = np.abs(v - baseline) <= band
    i = 0
    while i < t.size:
        if not inside[i]:
            i += 1
            continue
        j = i
        while j + 1 < t.size and inside[j + 1]:
            j += 1
        if t[j] - t[i] >= hold_s:
            return float(t[i] - removed_at)
        i = j + 1
    return None


# -------------------------------------------------------------------------- fault events

class FaultWindow(NamedTuple):
    """When one fault was in place: from its inject event to its remove event."""

    fault: str
    target: str
    start: float
    end: float | None  # None: never removed (or its removal failed)

    @property
    def duration(self) -> float | None:
        return None if self.end is None else self.end - self.start


def fault_windows(events: pd.DataFrame) -> list[FaultWindow]:
    """Pair each ``inject`` with the next ``remove`` of the same (fault, target).

    In time order; repeated injections of one fault pair first-in, first-out. A fault
    whose injection failed (``inject_failed``) never opens a window, so the remove the
    testbed then records closes nothing. ``remove_failed`` does not close a window:
    the fault may still be in place, so its end stays None, as for a fault never
    removed. ``verify``/``verify_failed`` change nothing (an unverified fault was
    still injected, and its remove follows).
    """
    EVENTS.validate(events, only=(T, KIND, FAULT, TARGET))
    unknown = sorted(set(events[KIND]) - set(EVENT_KINDS))
    if unknown:
        raise FrameError(f"events frame: unknown kind(s) {unknown}; known: "
                         f"{', '.join(EVENT_KINDS)}")
    ordered = events.sort_values(T, kind="stable")
    windows: list[FaultWindow] = []
    open_: dict[tuple[str, str], list[int]] = {}
    for t, kind, fault, target in zip(ordered[T], ordered[KIND], ordered[FAULT],
                                      ordered[TARGET], strict=True):
        key = (str(fault), str(target))
        if kind == "inject":
            open_.setdefault(key, []).append(len(windows))
            windows.append(FaultWindow(key[0], key[1], float(t), None))
        elif kind == "remove" and open_.get(key):
            i = open_[key].pop(0)
            windows[i] = windows[i]._replace(end=float(t))
    return windows


# ------------------------------------------------------------------------------- ledgers

@dataclass(frozen=True)
class Audit:
    """What happened to every accepted order, counted against a service's ledger.

    accepted        orders the edge accepted (answered ok)
    processed       accepted orders processed at least once
    processed_once  ... exactly once
    duplicated      ... more than once
    duplicates      extra deliveries in all: sum of (times processed - 1) over them
    dead_lettered   accepted orders not processed but dead-lettered
    still_queued    messages still waiting in the queue at audit time (a count: queues
                    are not read, so which orders they hold is unknown)
    lost            accepted orders neither processed nor dead-lettered, less what is
                    still queued, floored at 0: |accepted - processed - dead_lettered|
                    - still_queued. Zero while the queue could still explain the gap.
    unexpected      orders processed that the edge never accepted (e.g. the client saw
                    an error, yet the message went through); not part of the balance
    """

    accepted: int
    processed: int
    processed_once: int
    duplicated: int
    duplicates: int
    dead_lettered: int
    still_queued: int
    lost: int
    unexpected: int
    missing_ids: frozenset[str] = field(default=frozenset(), repr=False)
    duplicated_ids: frozenset[str] = field(default=frozenset(), repr=False)

    @property
    def balanced(self) -> bool:
        """Every accepted order is accounted for: accepted == processed +
        dead_lettered + still_queued."""
        return self.accepted == self.processed + self.dead_lettered + self.still_queued

    def describe(self) -> str:
        """One line for a report."""
        return (f"{self.accepted} accepted: {self.processed} processed "
                f"({self.duplicated} more than once, {self.duplicates} extra deliveries), "
                f"{self.dead_lettered} dead-lettered, {self.still_queued} still queued, "
                f"{self.lost} lost, {self.unexpected} processed but never accepted"
                f"{'' if self.balanced else ' (does not balance)'}")


def ledger_audit(accepted: Iterable[str], processed: Mapping[str, int],
                 dead_lettered: Iterable[str] = (), still_queued: int = 0) -> Audit:
    """Count lost and duplicated orders: "nothing lost, nothing doubled" as numbers.

    ``processed`` is a ledger (order id -> times processed, as ``GET /ledger``
    returns); an id with count 0 counts as not processed. See ``Audit`` for each field.
    """
    if still_queued < 0:
        raise AnalysisError(f"ledger_audit: still_queued={still_queued} is negative")
    negative = sorted(k for k, n in processed.items() if n < 0)
    if negative:
        raise AnalysisError(f"ledger_audit: negative counts for {negative[:5]}")
    accepted_ids = set(accepted)
    done = {k for k, n in processed.items() if n > 0}
    counts = [processed[k] for k in accepted_ids & done]
    duplicated_ids = frozenset(k for k in accepted_ids & done if processed[k] > 1)
    dead = (set(dead_lettered) & accepted_ids) - done
    missing = frozenset(accepted_ids - done - dead)
    return Audit(
        accepted=len(accepted_ids),
        processed=len(counts),
        processed_once=sum(1 for n in counts if n == 1),
        duplicated=len(duplicated_ids),
        duplicates=sum(n - 1 for n in counts if n > 1),
        dead_lettered=len(dead),
        still_queued=still_queued,
        lost=max(0, len(missing) - still_queued),
        unexpected=len(done - accepted_ids),
        missing_ids=missing,
        duplicated_ids=duplicated_ids,
    )
