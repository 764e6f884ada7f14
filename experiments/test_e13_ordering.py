"""E13 ordering: competing consumers process a key's orders out of order, and so does
redelivery; one consumer taking one message at a time keeps them in order (seed 004).
Async only: a sync chain handles each order in its caller's thread, so nothing can
overtake it.

Keys: the load generator numbers its orders n = 0, 1, 2, ... (id "<prefix>-<n>"); order
n belongs to customer key n mod K (K = 2) as that key's (n div K)-th order. An order is
out of order when it is processed (its first entry in the consumer's ledger, which keeps
processing order) after a later order of the same key.
Competing consumers (no fault injected): C = 4 replicas, prefetch 1, on payments' queue,
each order taking W = 40 ms plus a seeded exponential tail of mean J = 200 ms. Load:
10 orders/s for 24 s (240 orders), utilization r (W + J) / C = 0.6. (The time scale is
twice E13's first one: the same seeded draws, scaled, give the same order of events, so
the same rate; a busy machine's scheduling delays weigh half as much.)
Model: orders arrive 1/r apart and go to the first free consumer (one FIFO queue, C
servers); each is recorded when its service time is over, plus ~2 ms per delivery. A
key's next order arrives K / r = 200 ms later and overtakes it when it finishes first.
Simulated before the run (testbed.model) with the very service times the consumer will
draw (its seeded generator, replayed): out-of-order rate 16.7%; with 100 other seeds
18.5% (sd 2.2%), so the particular draws matter more than the model's details.
Scheduling delays act as extra jitter (20 ms of it at the first time scale, simulated,
moved the rate to 17% ± 1%; a machine busy with a compile beside the catalog measured
20%, hence the doubled scale), inside the 15% allowed. Every key sees it (each key's
rate > 0); no order is lost.
Redelivery: one consumer, prefetch 10, no work, its handler failing 5% of deliveries
(seeded, in place 0.5 s before the first order), 40 orders/s for 6 s; a failed message
is nacked and requeued after 100 ms.
Meanwhile r x 100 ms = 4 later orders (2 of each key) arrive in the consumer's prefetch
buffer, ahead of the requeued one: every failed order is overtaken. The model replays
the fault's seeded draws (one per delivery until all 240 orders passed): 21 handler
failures (± 2, for an order handled before the fault is in place), and orders out of
order = distinct orders that failed ~ 21 x (1 - p) = 20 (a redelivery fails again with
p).
Negative control: one consumer, prefetch 1, no failures, at the same utilization
(2.5 orders/s for 12 s): first in, first out, the rate is exactly 0 and the out-of-order
claims fail, measured and on the model.
On Kafka, keyed partitions: the same 4 competing consumers (members of payments' group)
and the same service times, on a topic of 4 partitions, the orders keyed by customer
(8 keys, order n is key n mod 8; CRC-32 puts exactly 2 keys in each partition). A key's
orders share a partition, which one member reads in order: none is processed out of
order (the model: 0), at the cost of parallelism per key (each partition 2.5 orders/s,
utilization 0.6). Control: the same topic keyed by order id, so a customer's orders
spread over the partitions: the model predicts how many are out of order (few: a key's
next order comes 0.8 s later; ± 5), and the "none out of order" claim fails on it,
measured and on the model.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from testbed.analysis import Hypotheses
from testbed.load import LoadProfile, constant, stepped
from testbed.observe import RunResult
from testbed.scenario import Experiment, Results, ServiceFault, Trial, fault
from testbed.scenario import metrics as m
from testbed.scenario.predicted import predicted
from testbed.topology import Knobs, async_pipeline

KEYS, RATE, DURATION = 2, 10, 24.0
ORDERS = int(RATE * DURATION)
CONSUMERS, W_MS, J_MS, DELIVERY_MS = 4, 40.0, 200.0, 2.0
SINGLE_S = 12.0  # the single consumer's run: 30 orders
SHORT_S = 6.0  # the redelivery run
LEAD_IN_S = 0.5  # before its first order
REDELIVERY_RATE, FAILURE_P, FAILURE_SEED, BACKOFF_MS, PREFETCH = 40, 0.05, 1, 100.0, 10
RATE_CLAIM, EVERY_KEY_CLAIM = "out-of-order rate", "keys with orders out of order"
KAFKA_KEYS = 8  # CRC-32 of key-0..key-7 puts exactly 2 in each of 4 partitions
IN_ORDER_CLAIM = "orders out of order (8 customer keys)"


def late(result: RunResult) -> int:
    """Orders payments processed after a later order of their key (key: n mod KEYS)."""
    return sum(m.out_of_order(result, "payments", KEYS))


@pytest.fixture(scope="module")
def results(experiment: Experiment) -> Results:
    jittery = Knobs(prefetch=1, work_ms=W_MS, work_jitter_ms=J_MS)
    redelivering = Knobs(prefetch=PREFETCH, error_backoff_ms=BACKOFF_MS)
    failing = fault("error_rate", "payments", at=0.0, p=FAILURE_P, seed=FAILURE_SEED)

    def trial(key: str, knobs: Knobs, profile: LoadProfile, *faults: ServiceFault) -> Trial:
        # payments' knobs only: the model is payments' service time (the gateway's work
        # would reorder the orders before they reach the queue)
        return Trial(key, async_pipeline(1, overrides={"payments": knobs}), profile, faults,
                     {"drain_timeout_s": 10})

    # the fault's draws must start with the first order's delivery, in the run and in
    # the model: a quiet lead-in has the fault in place before any order
    lead_in = stepped((LEAD_IN_S, 0), (SHORT_S, REDELIVERY_RATE))
    rabbitmq = experiment.trials([
        trial("competing", replace(jittery, replicas=CONSUMERS), constant(RATE, DURATION)),
        trial("single", jittery, constant(RATE / CONSUMERS, SINGLE_S)),
        trial("redelivery", redelivering, lead_in, failing)])
    on_kafka = async_pipeline(1, overrides={"payments": replace(jittery, replicas=CONSUMERS)},
                              broker="kafka", partitions=CONSUMERS)
    kafka = experiment.trials([
        Trial("kafka_keyed", on_kafka, constant(RATE, DURATION, keys=KAFKA_KEYS),
              options={"drain_timeout_s": 10}),
        Trial("kafka_by_order", on_kafka, constant(RATE, DURATION),
              options={"drain_timeout_s": 10})])
    return rabbitmq | kafka


def rate(result: RunResult) -> float:
    return m.out_of_order_rate(result, "payments", KEYS)


def keys_hit(result: RunResult) -> int:
    return m.keys_out_of_order(result, "payments", KEYS)


def handler_errors(result: RunResult) -> float:
    return m.counter(result, "payments", "handler_errors")


def out_of_order_hypotheses(result: RunResult, model: RunResult) -> Hypotheses:
    """The claim: a measurable share of each key's orders is processed out of order, as
    the model predicts for this seed."""
    hypotheses = Hypotheses(f"E13 {result.name}: {KEYS} keys, {RATE_CLAIM}")
    hypotheses.check(predicted(RATE_CLAIM, rate, result, model))
    hypotheses.check(predicted(EVERY_KEY_CLAIM, keys_hit, result, model))
    hypotheses.check(predicted("orders lost", m.lost, result, model, unit="orders"))
    return hypotheses


def test_competing_consumers_reorder_every_key(experiment: Experiment,
                                               results: Results) -> None:
    experiment.check(out_of_order_hypotheses(results["competing"],
                                             results.predicted("competing")))


def test_one_consumer_keeps_order(experiment: Experiment, results: Results) -> None:
    result, model = results["single"], results.predicted("single")
    hypotheses = Hypotheses("E13 single: one consumer, prefetch 1")
    hypotheses.check(predicted("orders out of order", late, result, model))
    hypotheses.check(predicted("orders lost", m.lost, result, model, unit="orders"))
    experiment.check(hypotheses)


def test_negative_control_one_consumer_fails_the_claim(experiment: Experiment,
                                                       results: Results) -> None:
    """Switch the mechanism off (one consumer): the out-of-order claims must fail."""
    model = results.predicted("competing")
    experiment.negative_control(out_of_order_hypotheses(results["single"], model),
                                RATE_CLAIM, EVERY_KEY_CLAIM,
                                model=out_of_order_hypotheses(results.predicted("single"),
                                                              model))


def test_redelivery_reorders_even_one_consumer(experiment: Experiment,
                                               results: Results) -> None:
    result, model = results["redelivery"], results.predicted("redelivery")
    hypotheses = Hypotheses(f"E13 redelivery: one consumer, prefetch {PREFETCH}, "
                            f"{FAILURE_P:.0%} handler failures")
    hypotheses.check(predicted("handler failures", handler_errors, result, model, abs=2))
    hypotheses.check(predicted("orders out of order", late, result, model, unit="orders"))
    hypotheses.check(predicted("orders lost", m.lost, result, model, unit="orders"))
    experiment.check(hypotheses)


def keyed_hypotheses(result: RunResult, model: RunResult) -> Hypotheses:
    hypotheses = Hypotheses(f"E13 {result.name}: 4 competing consumers on 4 partitions")
    hypotheses.check(predicted(IN_ORDER_CLAIM, lambda r: sum(m.out_of_order(
        r, "payments", KAFKA_KEYS)), result, model, unit="orders"))
    hypotheses.check(predicted("orders lost", m.lost, result, model, unit="orders"))
    return hypotheses


def test_on_kafka_keyed_partitions_keep_each_key_in_order(experiment: Experiment,
                                                          results: Results) -> None:
    experiment.check(keyed_hypotheses(results["kafka_keyed"],
                                      results.predicted("kafka_keyed")))


def test_on_kafka_keyed_by_order_id_the_keys_reorder(experiment: Experiment,
                                                     results: Results) -> None:
    """The control: keyed by order id, a customer's orders spread over the partitions;
    the model's out-of-order share holds, and the in-order claim fails."""
    result, model = results["kafka_by_order"], results.predicted("kafka_by_order")
    hypotheses = Hypotheses("E13 kafka_by_order: the same topic keyed by order id")
    # few (a key's next order comes 8 orders = 0.8 s later), so a count, give or take 5
    # (6-11 measured with another experiment beside it; never 0, the keyed claim)
    hypotheses.check(predicted("orders out of order by customer key", lambda r: sum(
        m.out_of_order(r, "payments", KAFKA_KEYS)), result, model, abs=5, unit="orders"))
    experiment.check(hypotheses)
    keyed_model = results.predicted("kafka_keyed")
    experiment.negative_control(keyed_hypotheses(result, keyed_model), IN_ORDER_CLAIM,
                                model=keyed_hypotheses(model, keyed_model))
