"""The metric vocabulary: one definition per quantity, read off one trial's RunResult.

Hypotheses, scenario files, the incident summary, the timeline and the charts all read
these functions, so a number has the same meaning everywhere it is printed:

- edge latency is what the user WAITED for an outcome (an answer, an error, or giving
  up), from the scheduled send time; an order never sent has none;
- the fault's window runs from its first injection to its last removal;
- backlog is the messages ready in the consumer queues (DLQs and retry queues apart),
  summed per sample time, or one queue's when ``queue`` is given;
- drain time is the seconds from the fault's removal until the backlog is back within
  ``tolerance`` messages of its level before the fault and stays there for 1 s;
- recovery time is the same for the edge error rate (0.5 s windows, within 5 points);
- lost, duplicated and dead-lettered count only THIS trial's orders (its order-id
  prefix), so two trials on one deployment do not mix.

Each function names its window arguments ``start`` / ``end`` (scheduled send time, in
seconds on the trial's timeline; None: open). A value that cannot be measured is NaN
(levels, rates) or None (a duration of something that never happened).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd

from testbed.analysis import (
    Audit,
    between,
    error_rate,
    fault_windows,
    growth_rate,
    ledger_audit,
    peak,
    series,
    time_to_recover,
)
from testbed.analysis import time_to_detect as detect
from testbed.errors import TestbedError
from testbed.observe import RunResult

DLQ_SUFFIX, RETRY_SUFFIX = ".dlq", ".retry"
RECOVERY_WINDOW_S = 0.5
RECOVERY_TOLERANCE = 0.05  # edge error rate within 5 points of its baseline
DRAIN_TOLERANCE = 2.0  # messages
HOLD_S = 1.0


class MetricError(TestbedError, ValueError):
    """A metric asked of a run that cannot answer it (no such service or queue)."""


# ----------------------------------------------------------------------------- windows

def fault_span(result: RunResult) -> tuple[float | None, float | None]:
    """(first injection, last removal) on the trial's timeline; None where none."""
    windows = fault_windows(result.events) if not result.events.empty else []
    if not windows:
        return None, None
    ends = [w.end for w in windows]
    return min(w.start for w in windows), (None if None in ends
                                           else max(e for e in ends if e is not None))


def fault_window(result: RunResult) -> tuple[float, float]:
    """The fault's span, for a claim that needs it to have happened and ended."""
    start, end = fault_span(result)
    if start is None or end is None:
        raise MetricError(f"run {result.name!r}: the fault was "
                          f"{'never injected' if start is None else 'never removed'}")
    return start, end


def load_end(result: RunResult) -> float:
    """When the last order was due: the load profile's length."""
    return float(sum(step["duration_s"] for step in result.meta.get("profile", [])))


def trigger_span(result: RunResult) -> tuple[float | None, float | None]:
    """What durations count from: the fault's span, or for a run with no fault (an
    overload that is the load itself) the load, from 0 to its end."""
    start, end = fault_span(result)
    return (start, end) if start is not None else (0.0, load_end(result))


def load_under_fault(result: RunResult) -> float:
    """Seconds of the load that met the fault: from its first injection to its last
    removal, cut at the load's end (a broker still restarting after the last order was
    due meets no more orders)."""
    start, end = fault_window(result)
    return min(end, load_end(result)) - start


def _requests(result: RunResult, start: float | None, end: float | None) -> pd.DataFrame:
    return between(result.requests, start, end)


# -------------------------------------------------------------------------------- edge

def waited(requests: pd.DataFrame) -> pd.Series:
    """Seconds each user waited for an outcome (answer, error or giving up)."""
    if "waited_s" in requests:
        return requests["waited_s"].astype(float).fillna(requests["latency_s"])
    return requests["latency_s"].astype(float)  # a run saved before waited_s existed


def edge_errors(result: RunResult, start: float | None = None,
                end: float | None = None) -> int:
    """Orders the user saw fail (optionally only those scheduled in [start, end))."""
    return int((~_requests(result, start, end)["ok"].astype(bool)).sum())


def edge_error_rate(result: RunResult, start: float | None = None,
                    end: float | None = None) -> float:
    """Fraction of the orders scheduled in [start, end) that failed; NaN if none."""
    ok = _requests(result, start, end)["ok"].astype(bool)
    return float((~ok).mean()) if len(ok) else math.nan


def edge_latency(result: RunResult, q: float, start: float | None = None,
                 end: float | None = None) -> float:
    """The q-th percentile (0-100) of what users waited, over orders in [start, end)."""
    values = waited(_requests(result, start, end)).to_numpy(dtype=float)
    values = values[~np.isnan(values)]
    return float(np.percentile(values, q)) if values.size else math.nan


def edge_latency_added(result: RunResult, q: float = 50) -> float:
    """What the fault added to the q-th percentile of what users waited: during the
    fault minus the second before it (0 for an edge the fault does not reach; not the
    first second, when every sender opens its connections)."""
    start, end = fault_span(result)
    if start is None:
        return math.nan
    before = edge_latency(result, q, max(0.0, start - 1.0), start)
    return edge_latency(result, q, start, end) - before


def windowed_waits(requests: pd.DataFrame, window_s: float,
                   percentiles: tuple[float, ...] = (50, 95, 99)) -> pd.DataFrame:
    """Percentiles of what users waited per window of scheduled time (for charts)."""
    if requests.empty:
        return pd.DataFrame(columns=[f"p{p:g}" for p in percentiles])
    keys = np.floor(np.round(requests["t_scheduled"].to_numpy(dtype=float) / window_s, 9))
    grouped = waited(requests).groupby(keys)
    table = grouped.quantile([p / 100 for p in percentiles]).unstack()
    table.columns = [f"p{p:g}" for p in percentiles]
    table.index = table.index * window_s
    return table


def outcome_times(result: RunResult, start: float | None = None,
                  end: float | None = None) -> pd.Series:
    """When each user SAW the outcome (answer, error or giving up) of an order scheduled
    in [start, end), on the trial's timeline: its scheduled time plus what it waited."""
    requests = _requests(result, start, end)
    return (requests["t_scheduled"].astype(float) + waited(requests)).rename("seen_t")


def outcome_from_removal(result: RunResult, start: float | None = None,
                         end: float | None = None) -> float:
    """The farthest (seconds, either way) from the fault's last removal that a user saw
    the outcome of an order scheduled in [start, end): near 0 when every one of them was
    answered as the service came back (a request-reply waiting out a restart); NaN if
    none was scheduled there."""
    _, removed = fault_window(result)
    return float((outcome_times(result, start, end) - removed).abs().max())


def edge_alert_time_to_detect(result: RunResult, threshold: float = 0.2,
                              window_s: float = 0.25) -> float | None:
    """Seconds from the injection until an alert on the edge error rate fires, over
    windows of the time outcomes are SEEN (``outcome_times``): at the END of the first
    window whose share of failed outcomes reaches ``threshold``. Unlike
    ``edge_time_to_detect`` (scheduled time), a timeout counts only once the user gives
    up, as a real alert would see it."""
    start, _ = fault_span(result)
    seen = outcome_times(result)
    failed = (~result.requests.loc[seen.index, "ok"].astype(bool)).astype(float)
    rate = failed.groupby(np.floor(seen / window_s)).mean()
    rate = pd.Series(rate.to_numpy(), index=(rate.index + 1) * window_s)
    return None if start is None else detect(rate, threshold, start)


def throughput(result: RunResult, start: float | None = None,
               end: float | None = None) -> float:
    """Orders per second that succeeded, of those scheduled in [start, end) (default:
    the whole load): the goodput users got."""
    lo = 0.0 if start is None else start
    hi = load_end(result) if end is None else end
    if not hi > lo:
        raise MetricError(f"throughput: the window [{lo}, {hi}) is empty; give end > start")
    return float(_requests(result, lo, hi)["ok"].astype(bool).sum()) / (hi - lo)


def failed_but_processed(result: RunResult, service: str) -> int:
    """Orders the user saw fail that ``service`` still processed (a payment taken for
    an order the user was told failed)."""
    failed = set(result.requests.loc[~result.requests["ok"].astype(bool), "order_id"])
    return len(failed & set(processed(result, service)))


def accepted(result: RunResult) -> set[str]:
    """Orders the edge accepted (the user got a success)."""
    return set(result.requests.loc[result.requests["ok"].astype(bool), "order_id"])


def edge_successes(result: RunResult, start: float | None = None,
                   end: float | None = None) -> int:
    """Orders the user saw succeed, of those scheduled in [start, end): the goodput."""
    return int(_requests(result, start, end)["ok"].astype(bool).sum())


def edge_errors_of(result: RunResult, error: str, start: float | None = None,
                   end: float | None = None) -> int:
    """Orders scheduled in [start, end) that failed with one error: ``"timeout"`` (the
    user gave up waiting), ``"http_429"`` (turned away), ``"http_504"``, ..."""
    return int((_requests(result, start, end)["error"] == error).sum())


def first_edge_error(result: RunResult) -> float | None:
    """When the first order the user saw fail was scheduled; None if none failed."""
    requests = result.requests
    failed = requests.loc[~requests["ok"].astype(bool), "t_scheduled"]
    return float(failed.min()) if len(failed) else None


def slowest_edge_error(result: RunResult) -> float | None:
    """The longest a user waited for an order that failed; None if none failed."""
    requests = result.requests
    waits = waited(requests[~requests["ok"].astype(bool)]).dropna()
    return float(waits.max()) if len(waits) else None


def typical_edge_latency(result: RunResult, q: float, window_s: float = 0.5) -> float:
    """The median, over windows of scheduled time, of each window's q-th percentile of
    what users waited, the first window (warm-up) left out, so that one burst of noise
    does not decide it; NaN with fewer than two windows."""
    per_window = windowed_waits(result.requests, window_s, (q,))[f"p{q:g}"]
    return float(per_window.iloc[1:].median())


def time_to_recover_edge(result: RunResult,
                         window_s: float = RECOVERY_WINDOW_S) -> float | None:
    """Seconds from the fault's removal until the edge error rate is back to its
    baseline (within 5 points, 0.5 s windows unless finer ones are asked for claims of
    half a second, holding 1 s)."""
    start, end = fault_span(result)
    if start is None:
        return None
    rate = error_rate(result.requests, window_s=window_s)
    return time_to_recover(rate, start, end, tolerance=RECOVERY_TOLERANCE, hold_s=HOLD_S)


# ------------------------------------------------------------------------------ queues

def backlog(result: RunResult, queue: str | None = None) -> pd.Series:
    """Messages ready: one queue's, or summed over every consumer queue (not DLQs nor
    retry queues) per sample time. Empty for a run without queues."""
    if queue is not None:
        return series(result.samples, f"queue:{queue}", "ready")
    return _queues(result.samples, lambda name: not name.endswith((DLQ_SUFFIX, RETRY_SUFFIX)))


def dead_letter_depth(result: RunResult, queue: str | None = None) -> pd.Series:
    """Messages ready in one DLQ (``payments.dlq``) or in every DLQ summed."""
    if queue is not None:
        return series(result.samples, f"queue:{queue}", "ready")
    return _queues(result.samples, lambda name: name.endswith(DLQ_SUFFIX))


def _queues(samples: pd.DataFrame, keep: Callable[[str], bool]) -> pd.Series:
    rows = samples[samples["source"].str.startswith("queue:") & (samples["metric"] == "ready")]
    rows = rows[rows["source"].str.removeprefix("queue:").map(keep).astype(bool)]
    if rows.empty:
        return pd.Series([], dtype=float, name="backlog")
    return rows.groupby(rows["t"].round(2))["value"].sum().rename("backlog")


def backlog_peak(result: RunResult, queue: str | None = None) -> float:
    """The most messages ready at once (0 for a run without queues)."""
    values = backlog(result, queue)
    return peak(values)[0] if len(values) else 0.0


def dlq_peak(result: RunResult, queue: str | None = None) -> float:
    values = dead_letter_depth(result, queue)
    return peak(values)[0] if len(values) else 0.0


def backlog_growth(result: RunResult, start: float, end: float,
                   queue: str | None = None) -> float:
    """Least-squares slope of the backlog (messages/s) over [start, end]."""
    return growth_rate(backlog(result, queue), start, end)


def drain_time(result: RunResult, queue: str | None = None,
               tolerance: float = DRAIN_TOLERANCE,
               baseline_s: float | None = None) -> float | None:
    """Seconds from the fault's removal (with no fault: the load's end) until the
    backlog is back within ``tolerance`` messages of its level before the fault (with
    no fault: at the start), holding 1 s. The level before: the median from the first
    sample, or over the last ``baseline_s`` seconds before the fault (for a fault that
    comes after a backlog of its own, e.g. a replay after a flood). None: never
    drained (or the fault was never removed); 0.0 for a run without queues."""
    values = backlog(result, queue)
    start, end = trigger_span(result)
    if values.empty:
        return 0.0
    assert start is not None
    # With no fault the level before is the first sample's (the sampler starts a few
    # ms after the load).
    before = max(start, float(values.index.min()))
    return time_to_recover(values, before, end, tolerance=tolerance, hold_s=HOLD_S,
                           baseline_start=None if baseline_s is None else before - baseline_s)


def queue_time_to_detect(result: RunResult, threshold: float,
                         queue: str | None = None) -> float | None:
    """Seconds from the injection (with no fault: the load's start) until the backlog
    first reaches ``threshold``: when a queue-depth alert would fire."""
    start, _ = trigger_span(result)
    assert start is not None
    return detect(backlog(result, queue), threshold, start)


def edge_time_to_detect(result: RunResult, threshold: float = 0.05,
                        window_s: float = 1.0) -> float | None:
    """Seconds from the injection until a window's edge error rate reaches ``threshold``
    (the window's start counts, as an alert over scheduled time would see it); with
    no fault, from the load's start."""
    start, _ = trigger_span(result)
    assert start is not None
    return detect(error_rate(result.requests, window_s=window_s), threshold, start)


# ------------------------------------------------------------------------------ ledgers

def mine(result: RunResult, ledger: dict[str, int]) -> dict[str, int]:
    """The ledger's entries for THIS trial's orders (its order-id prefix)."""
    prefix = result.meta.get("order_prefix")
    return ledger if not prefix else {k: v for k, v in ledger.items()
                                      if str(k).startswith(f"{prefix}-")}


def processed(result: RunResult, service: str) -> dict[str, int]:
    """This trial's orders in a service's ledger -> times processed."""
    if service in result.meta.get("ledger_reset", ()):
        raise MetricError(f"{service} was killed or stopped and came back as a new pod (k8s "
                          "runtime: a new pod has a new filesystem), so its ledger started "
                          "over: only edge metrics are available for it in this trial")
    if service in result.meta.get("unaudited", ()):
        raise MetricError(f"{service} is your own service and offers no GET /ledger: only "
                          "edge metrics are available for it (edge_errors, latencies, "
                          "backlogs); serve /ledger for the per-order audit")
    if service not in set(result.ledgers["service"]):
        known = sorted(set(result.ledgers["service"]))
        if not known or service.endswith(DLQ_SUFFIX) or service in result.meta.get(
                "services", ()):
            return {}  # a DLQ that parked nothing, a service that processed nothing
        raise MetricError(f"no ledger of {service!r} in run {result.name!r}; ledgers: "
                          f"{', '.join(map(str, known))}")
    return mine(result, result.processed(service))


def last_stage(result: RunResult) -> str | None:
    """The service whose ledger says an order is done: the topology's last service (a
    run saved before trials named their services: the last ledger listed)."""
    services = result.meta.get("services") or [
        str(s) for s in result.ledgers["service"].unique() if not str(s).endswith(DLQ_SUFFIX)]
    return str(services[-1]) if services else None


def audit(result: RunResult, stage: str | None = None) -> Audit:
    """Accepted orders against the stage's ledger (default: the last stage) and every
    DLQ: lost, duplicated, dead-lettered, of this trial only."""
    stage = stage or last_stage(result)
    if stage is None:
        raise MetricError(f"run {result.name!r} has no ledger to audit")
    dead = {k for s in set(result.ledgers["service"]) if str(s).endswith(DLQ_SUFFIX)
            for k in processed(result, str(s))}
    return ledger_audit(accepted(result), processed(result, stage), dead_lettered=dead)


def lost(result: RunResult, stage: str | None = None) -> int:
    return audit(result, stage).lost


def duplicated(result: RunResult, stage: str | None = None) -> int:
    return audit(result, stage).duplicated


def dead_lettered(result: RunResult, stage: str | None = None) -> int:
    return audit(result, stage).dead_lettered


def lost_events(result: RunResult, source: str = "gateway", stage: str | None = None) -> int:
    """This trial's orders in ``source``'s own ledger (its database: what the business
    thinks it took, accepted or not) that the stage (default: the last) never processed
    and no DLQ holds: events lost between the write and the publish."""
    stage = stage or last_stage(result)
    if stage is None:
        raise MetricError(f"run {result.name!r} has no ledger to audit")
    dead = {k for s in set(result.ledgers["service"]) if str(s).endswith(DLQ_SUFFIX)
            for k in processed(result, str(s))}
    return ledger_audit(processed(result, source), processed(result, stage),
                        dead_lettered=dead).lost


def late_per_key(numbers: Iterable[int], keys: int) -> list[int]:
    """Per key (order number mod ``keys``): orders that came after a later order of
    their key, from the order numbers in processing order."""
    latest, late = [-1] * keys, [0] * keys
    for n in numbers:
        key, rank = n % keys, n // keys
        late[key] += rank < latest[key]
        latest[key] = max(latest[key], rank)
    return late


def out_of_order(result: RunResult, service: str, keys: int) -> list[int]:
    """Per key, this trial's orders the service processed after a later order of the
    same key (its ledger keeps processing order; order n's key is n mod ``keys``, the
    number from the order id "<prefix>-<n>")."""
    return late_per_key((int(order.rsplit("-", 1)[1]) for order in processed(result, service)),
                        keys)


def out_of_order_rate(result: RunResult, service: str, keys: int) -> float:
    """Fraction of the service's orders processed out of order within their key."""
    return sum(out_of_order(result, service, keys)) / max(1, len(processed(result, service)))


def keys_out_of_order(result: RunResult, service: str, keys: int) -> int:
    """How many keys saw at least one order out of order."""
    return sum(1 for late in out_of_order(result, service, keys) if late)


def calls(result: RunResult, service: str) -> int:
    """Side effects the service performed for this trial (duplicates included)."""
    return sum(processed(result, service).values())


def extra_calls(result: RunResult, service: str) -> int:
    """Side effects the service performed beyond one per order of its ledger (``calls``
    minus the orders it processed): the second charges, whether or not the user saw
    the order accepted."""
    return calls(result, service) - len(processed(result, service))


def processed_between(result: RunResult, service: str, start: float | None = None,
                      end: float | None = None) -> int:
    """Accepted orders scheduled in [start, end) that the service processed (at least
    once), e.g. what got through behind a poison message."""
    scheduled = set(_requests(result, start, end)["order_id"]) & accepted(result)
    return sum(1 for order, n in processed(result, service).items()
               if n > 0 and order in scheduled)


def counter(result: RunResult, service: str, name: str) -> float:
    """The last sampled value of a service counter (0 if it never counted)."""
    samples = result.samples
    rows = samples[(samples["source"] == f"service:{service}") & (samples["metric"] == name)]
    return float(rows["value"].iloc[-1]) if len(rows) else 0.0


def _sampled(result: RunResult, service: str, name: str, start: float = -math.inf,
             end: float = math.inf) -> pd.Series:
    """A service's sampled counter or gauge, its samples in [start, end]."""
    values = series(result.samples, f"service:{service}", name)
    return values[(values.index >= start) & (values.index <= end)]


def gauge_peak(result: RunResult, service: str, name: str) -> float:
    """The highest sampled value of a service gauge (saturation, in_flight); NaN if
    never sampled."""
    values = _sampled(result, service, name)
    return peak(values)[0] if len(values) else math.nan


def counter_rate(result: RunResult, service: str, name: str, start: float,
                 end: float) -> float:
    """Least-squares slope (per second) of a service counter over [start, end], e.g.
    ``counter_rate(r, "payments", "ok", 1, 6)``: payments' throughput."""
    return growth_rate(_sampled(result, service, name), start, end)


def counter_increase(result: RunResult, service: str, name: str, start: float,
                     end: float) -> float:
    """How much a service counter grew from its first to its last sample in [start,
    end] (so over ``counter_span`` seconds, not end - start); NaN with fewer than two."""
    inside = _sampled(result, service, name, start, end)
    return float(inside.iloc[-1] - inside.iloc[0]) if len(inside) > 1 else math.nan


def counter_span(result: RunResult, service: str, name: str, start: float,
                 end: float) -> float:
    """Seconds from the first to the last sample of a service counter in [start, end]:
    the time ``counter_increase`` counts over; NaN with fewer than two samples."""
    inside = _sampled(result, service, name, start, end)
    return float(inside.index[-1] - inside.index[0]) if len(inside) > 1 else math.nan


def counter_time_to_detect(result: RunResult, service: str, name: str,
                           threshold: float = 1.0) -> float | None:
    """Seconds from the injection until a service counter first reaches ``threshold``,
    e.g. the first ``breaker_rejections``: when the breaker opened. None: never."""
    start, _ = fault_span(result)
    return None if start is None else detect(_sampled(result, service, name), threshold,
                                             start)


def staleness(result: RunResult, q: float) -> float:
    """The q-th percentile (0-100) of the read-after-write stale window (seconds from a
    write's answer until a read showed it; 0 when the first read did) over the writes
    that became visible, in a read-back run (testbed.observe.readback); NaN if none."""
    writes = result.requests
    window = writes.loc[writes["visible"].astype(bool), "staleness_s"].to_numpy(dtype=float)
    return float(np.percentile(window, q)) if window.size else math.nan


def stale_first_reads(result: RunResult) -> int:
    """Writes of a read-back run whose very first read did not show them."""
    return int((~result.requests["first_read_visible"].astype(bool)).sum())


def stale_first_read_rate(result: RunResult) -> float:
    """Fraction of a read-back run's writes whose very first read did not show them;
    NaN with no writes."""
    writes = len(result.requests)
    return stale_first_reads(result) / writes if writes else math.nan


def never_visible(result: RunResult) -> int:
    """Writes of a read-back run that no read showed within its wait."""
    return int((~result.requests["visible"].astype(bool)).sum())


def drained(result: RunResult) -> bool:
    return bool(result.meta.get("drained", True))


# ------------------------------------------------------------------------ traces

def _spans_of_accepted(result: RunResult, start: float | None = None,
                       end: float | None = None) -> pd.DataFrame:
    """The spans of the accepted orders placed in [start, end) (a traced run's)."""
    if result.spans.empty:
        raise MetricError(f"{result.name} was not traced: run it with tracing on "
                          "(Trial option traced=True, or pytest --tracing)")
    requests = _requests(result, start, end)
    orders = set(requests.loc[requests["ok"], "order_id"])
    return result.spans[result.spans["order_id"].isin(orders)]


def whole_path_share(result: RunResult) -> float:
    """Share of the accepted orders whose whole path is one trace: every span of the
    order in one trace, and that trace reaching every service of the topology."""
    spans = _spans_of_accepted(result)
    services = set(result.meta.get("services", []))
    by_order = spans.groupby("order_id")
    whole = sum(1 for _, held in by_order
                if held["trace_id"].nunique() == 1 and services <= set(held["service"]))
    count = len(accepted(result))  # an accepted order with no spans is not whole
    return whole / count if count else math.nan


def traces_per_order(result: RunResult) -> float:
    """How many traces an accepted order's spans are spread over, on average."""
    spans = _spans_of_accepted(result)
    counts = spans.groupby("order_id")["trace_id"].nunique()
    return float(counts.mean()) if len(counts) else math.nan


def slowest_hop_share(result: RunResult, hop: str, start: float | None = None,
                      end: float | None = None) -> float:
    """Share of the accepted orders placed in [start, end) whose slowest span (by self
    time, over all the order's traces) was spent on ``hop`` (a link like
    ``orders-payments``, or a service): how often the traces name the slow hop."""
    spans = _spans_of_accepted(result, start, end)
    if spans.empty:
        return math.nan
    slowest = spans.loc[spans.groupby("order_id")["self_s"].idxmax()]
    return float((slowest["hop"] == hop).mean())


# ------------------------------------------------------------------------- by name

METRICS: dict[str, Callable[..., Any]] = {
    "edge_errors": edge_errors,
    "edge_error_rate": edge_error_rate,
    "edge_latency": edge_latency,
    "edge_latency_added": edge_latency_added,
    "throughput": throughput,
    "failed_but_processed": failed_but_processed,
    "time_to_recover": time_to_recover_edge,
    "edge_time_to_detect": edge_time_to_detect,
    "backlog_peak": backlog_peak,
    "backlog_growth": backlog_growth,
    "dlq_peak": dlq_peak,
    "drain_time": drain_time,
    "queue_time_to_detect": queue_time_to_detect,
    "lost": lost,
    "duplicated": duplicated,
    "dead_lettered": dead_lettered,
    "calls": calls,
    "out_of_order_rate": out_of_order_rate,
    "keys_out_of_order": keys_out_of_order,
    "counter": counter,
    "edge_successes": edge_successes,
    "edge_errors_of": edge_errors_of,
    "first_edge_error": first_edge_error,
    "slowest_edge_error": slowest_edge_error,
    "typical_edge_latency": typical_edge_latency,
    "gauge_peak": gauge_peak,
    "counter_rate": counter_rate,
    "counter_increase": counter_increase,
    "counter_span": counter_span,
    "counter_time_to_detect": counter_time_to_detect,
    "processed_between": processed_between,
    "drained": drained,
    "edge_alert_time_to_detect": edge_alert_time_to_detect,
    "lost_events": lost_events,
    "staleness": staleness,
    "stale_first_reads": stale_first_reads,
    "load_under_fault": load_under_fault,
    "outcome_from_removal": outcome_from_removal,
    "extra_calls": extra_calls,
    "stale_first_read_rate": stale_first_read_rate,
    "never_visible": never_visible,
    "whole_path_share": whole_path_share,
    "traces_per_order": traces_per_order,
    "slowest_hop_share": slowest_hop_share,
}
