"""E5 retry storm: independent retries at every hop multiply the load on the service that
is already struggling (seed 004).

Fault: the bottom service of a depth-3 topology fails every order (error_rate p = 1)
from t = 1 s until after the load ends (T = 6.5 s), under 5 orders/s for 7 s: no order
straddles the fault's end, so every order placed after t = 1 s meets it (M = 30).
Model, sync (gateway -> orders -> payments -> inventory): with naive retries (r = 2, no
backoff) at each of the 3 calling hops, an order that fails at the bottom is tried
(1 + r) times by payments, for each of the (1 + r) tries of orders, for each of the
(1 + r) tries of the gateway: inventory sees (1 + r)^3 = 27 calls per order.
With backoff + jitter + a breaker (opens after F = 5 failures, half-open after 2 s) at
every hop, the bottom sees F calls to open payments' breaker and then a probe per
half-open period: at most F + 2 x (T / 2 s + 1) = 13.5 calls over the whole fault, far
below one call per order (the model, which follows the breakers' timing: 7).
Model, async (payments -> inventory -> notification): a failing message is retried by the
consumer's policy. Naive (nack and requeue at once, 5 ms pause) it loops as fast as the
consumer can spin: 5 ms plus a delivery per attempt (the model: ~36 attempts per order
that met the fault). With a retry policy (r = 2 retries, d = 1 s apart, then the DLQ)
no order is tried more than 1 + r = 3 times; the orders whose last try still falls in
the fault, those that arrived in its first T - r x d = 4.5 s, about 22 (the model: 23),
are parked in notification.dlq; the rest succeed on a retry; accepted = processed +
dead-lettered. Every number is the model's (testbed.model, simulated before the run).
Negative controls: the bounded-amplification claims fail on the naive runs, measured
and on the model.
"""

from __future__ import annotations

import pytest

from testbed.analysis import Hypotheses
from testbed.load import constant
from testbed.observe import RunResult
from testbed.scenario import Experiment, Results, Trial, fault
from testbed.scenario import metrics as m
from testbed.scenario.predicted import predicted
from testbed.topology import Knobs, Topology, async_pipeline, sync_chain

pytestmark = pytest.mark.flagship

RATE, START, DURATION = 5, 1.0, 7.0
T = DURATION - START + 0.5
RETRIES, DEPTH, FAILURES, RESET_S, DELAY_S = 2, 3, 5, 2.0, 1.0
NAIVE = Knobs(retries=RETRIES, timeout_s=2.0)
SANE = Knobs(retries=RETRIES, retry_backoff_ms=50, retry_jitter=True, timeout_s=2.0,
             breaker_failures=FAILURES, breaker_reset_s=RESET_S)
NAIVE_CONSUMER = Knobs(error_backoff_ms=5)
POLICY_CONSUMER = Knobs(consumer_retries=RETRIES, consumer_retry_delay_ms=DELAY_S * 1000,
                        dead_letter=True)
MET = RATE * (DURATION - START)  # orders that reach the bottom while it fails
ATTEMPTS = "attempts per order that met the fault"
BOTTOM_CALLS = "calls at the bottom during the fault"


def storm(topology: Topology) -> Trial:
    """The bottom service (the chain's or the pipeline's last) fails every order."""
    failing = fault("error_rate", topology.services[-1].name, at=START, duration=T, p=1.0)
    return Trial(topology.name, topology, constant(RATE, DURATION), [failing],
                 {"drain_timeout_s": 10})


@pytest.fixture(scope="module")
def results(experiment: Experiment) -> Results:
    """The four storms at the same time, each on its own deployment."""
    return experiment.trials([
        storm(sync_chain(DEPTH, knobs=NAIVE, name="sync_naive")),
        storm(sync_chain(DEPTH, knobs=SANE, name="sync_sane")),
        storm(async_pipeline(DEPTH, knobs=NAIVE_CONSUMER, name="async_naive")),
        storm(async_pipeline(DEPTH, knobs=POLICY_CONSUMER, name="async_policy"))])


def bottom_calls(result: RunResult) -> float:
    """Calls that reached the failing service (sync: inventory) and failed there."""
    return m.counter(result, "inventory", "injected_errors")


def per_failed_order(result: RunResult) -> float:
    return bottom_calls(result) / max(m.edge_errors(result), 1)


def attempts(result: RunResult) -> float:
    """Tries per order at the failing consumer (async: notification)."""
    return m.counter(result, "notification", "handler_errors") / MET


def parked(result: RunResult) -> float:
    return m.counter(result, "notification", "dead_lettered")


def sync_bounded_hypotheses(result: RunResult, model: RunResult) -> Hypotheses:
    h = Hypotheses(f"E5 sync, backoff + jitter + breaker (F = {FAILURES}, reset {RESET_S:.0f} s)")
    h.check(predicted(BOTTOM_CALLS, bottom_calls, result, model, abs=2, unit="calls"))
    h.check(predicted("orders failed at the edge (fast, by the breakers)", m.edge_errors,
                      result, model, abs=2, unit="orders"))
    return h


def async_policy_hypotheses(result: RunResult, model: RunResult) -> Hypotheses:
    h = Hypotheses(f"E5 async, retry policy ({RETRIES} retries 1 s apart, then DLQ)")
    h.check(predicted(ATTEMPTS, attempts, result, model, unit="attempts"))
    h.check(predicted("orders parked in the DLQ", parked, result, model, abs=2, unit="orders"))
    h.check(predicted("DLQ depth = orders parked", m.dlq_peak, result, model,
                      "notification.dlq", abs=2, unit="messages"))
    h.check(predicted("dead-lettered orders in the audit", m.dead_lettered, result, model,
                      "notification", abs=2, unit="orders"))
    h.check(predicted("orders lost (accepted = processed + dead-lettered)", m.lost, result,
                      model, "notification", unit="orders"))
    return h


def test_sync_naive_retries_multiply_load_at_the_bottom(experiment: Experiment,
                                                        results: Results) -> None:
    result = results["sync_naive"]
    h = Hypotheses(f"E5 sync, naive retries (r = {RETRIES} at {DEPTH} hops)")
    h.check(predicted("calls at the bottom per failed order", per_failed_order, result,
                      results.predicted("sync_naive"), unit="calls"))
    experiment.check(h)


def test_sync_backoff_and_breakers_bound_the_load(experiment: Experiment,
                                                  results: Results) -> None:
    experiment.check(sync_bounded_hypotheses(results["sync_sane"],
                                             results.predicted("sync_sane")))


def test_async_naive_requeue_spins(experiment: Experiment, results: Results) -> None:
    result, model = results["async_naive"], results.predicted("async_naive")
    h = Hypotheses("E5 async, naive requeue (5 ms pause)")
    h.check(predicted(ATTEMPTS, attempts, result, model, unit="attempts"))
    h.check(predicted("orders lost (requeued, processed after the fault)", m.lost, result,
                      model, "notification", unit="orders"))
    experiment.check(h)


def test_async_retry_policy_bounds_redeliveries(experiment: Experiment,
                                                results: Results) -> None:
    experiment.check(async_policy_hypotheses(results["async_policy"],
                                             results.predicted("async_policy")))


def test_negative_controls_naive_runs_fail_the_bounded_claims(experiment: Experiment,
                                                              results: Results) -> None:
    sane, policy = results.predicted("sync_sane"), results.predicted("async_policy")
    experiment.negative_control(
        sync_bounded_hypotheses(results["sync_naive"], sane), BOTTOM_CALLS,
        model=sync_bounded_hypotheses(results.predicted("sync_naive"), sane))
    experiment.negative_control(
        async_policy_hypotheses(results["async_naive"], policy), ATTEMPTS,
        model=async_policy_hypotheses(results.predicted("async_naive"), policy))
