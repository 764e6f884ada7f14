"""The async resilience knobs, each on a real pipeline: consumer retries through a delay
queue, idempotent vs naive consumers across a crash before the ack, the outbox across a
crash after the write, request-reply, competing consumers and the read side."""

from __future__ import annotations

import contextlib
import threading

import requests

from testbed.faults import CrashAt, ErrorRate, injected
from testbed.faults.broker import ready_count
from testbed.runtime import Deployment
from testbed.topology import Knobs, async_pipeline

from .conftest import Deploy, eventually


def counters(deployment: Deployment, service: str) -> dict[str, int]:
    return dict(deployment.stats(service)["counters"])


def test_consumer_retries_wait_in_the_retry_queue_then_dead_letter(deploy: Deploy) -> None:
    knobs = Knobs(consumer_retries=2, consumer_retry_delay_ms=300, dead_letter=True)
    pipeline = deploy(async_pipeline(1, knobs=knobs))
    with injected(ErrorRate(pipeline, "payments", p=1.0)):
        assert pipeline.place_order("doomed").status_code == 202
        assert eventually(lambda: counters(pipeline, "payments").get("dead_lettered") == 1)
    seen = counters(pipeline, "payments")
    assert seen["handler_errors"] == 3 and seen["retries_scheduled"] == 2
    assert pipeline.broker is not None
    broker = pipeline.broker
    assert eventually(lambda: ready_count(broker, "payments.dlq") == 1)  # routed async
    assert pipeline.ledger("payments") == {}
    assert pipeline.place_order("fine").status_code == 202
    assert eventually(lambda: pipeline.ledger("payments") == {"fine": 1})


def place_soon(deployment: Deployment, order_id: str, delay_s: float = 0.3) -> None:
    """Place an order from another thread, so a fault waiting for one can be armed first."""

    def place() -> None:
        with contextlib.suppress(requests.RequestException):  # the entry may die of it
            deployment.place_order(order_id)

    threading.Timer(delay_s, place).start()


def test_crash_before_the_ack_charges_a_naive_consumer_twice(deploy: Deploy) -> None:
    charges = {}
    for idempotent in (False, True):
        deployment = deploy(async_pipeline(1, knobs=Knobs(prefetch=1, idempotent=idempotent)))
        crash = CrashAt(deployment, "payments", "after_process")
        place_soon(deployment, "twice")
        with injected(crash):
            assert crash.crashes == 1
        assert eventually(lambda d=deployment: counters(d, "payments").get("ok") == 1)
        charges[idempotent] = deployment.ledger("payments")["twice"]
        if idempotent:
            assert counters(deployment, "payments")["duplicates_skipped"] == 1
    assert charges == {False: 2, True: 1}


def test_outbox_delivers_what_a_crash_after_the_write_would_lose(deploy: Deploy) -> None:
    processed = {}
    for outbox in (False, True):
        deployment = deploy(async_pipeline(1, overrides={"gateway": Knobs(outbox=outbox)}))
        crash = CrashAt(deployment, "gateway", "after_write")
        place_soon(deployment, "stored")
        with injected(crash):
            pass
        assert deployment.ledger("gateway") == {"stored": 1}  # the order is in the database
        assert deployment.place_order("later").status_code == 202
        assert eventually(lambda d=deployment: "later" in d.ledger("payments"))
        eventually(lambda d=deployment: "stored" in d.ledger("payments"), timeout=2)
        processed[outbox] = "stored" in deployment.ledger("payments")
    assert processed == {False: False, True: True}


def test_request_reply_answers_with_the_last_stage_reply(deploy: Deploy) -> None:
    deployment = deploy(async_pipeline(2, overrides={"gateway": Knobs(request_reply=True,
                                                                      timeout_s=5)}))
    answer = deployment.place_order("asked")
    assert answer.status_code == 200
    assert answer.json()["reply"] == {"order_id": "asked"}
    # counted just after the reply is sent: the caller may have it first
    assert eventually(lambda: counters(deployment, "inventory").get("replies") == 1)
    deployment.services["inventory"].kill()
    slow = deploy(async_pipeline(1, overrides={"gateway": Knobs(request_reply=True,
                                                                timeout_s=0.5)}))
    slow.services["payments"].kill()
    late = slow.place_order("unanswered")
    assert late.status_code == 504 and "no reply within 0.5 s" in late.json()["error"]


def test_replicas_compete_and_the_read_side_sees_processed_orders(deploy: Deploy) -> None:
    deployment = deploy(async_pipeline(1, knobs=Knobs(replicas=3, work_ms=20)))
    for n in range(30):
        deployment.place_order(f"r{n}")
    assert eventually(lambda: len(deployment.ledger("payments")) == 30)
    assert eventually(lambda: deployment.broker is not None
                      and deployment.broker.queue_state("payments").consumers == 3)
    read = requests.get(deployment.url("payments") + "/read", params={"order_id": "r7"},
                        timeout=5).json()
    assert read == {"order_id": "r7", "visible": True, "count": 1}
    unseen = requests.get(deployment.url("payments") + "/read",
                          params={"order_id": "nope"}, timeout=5).json()
    assert unseen["visible"] is False
