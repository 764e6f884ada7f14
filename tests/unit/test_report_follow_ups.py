"""Follow-up actions are drawn from the incident's numbers: each appears when its symptom
does, and only then."""

from __future__ import annotations

from typing import Any

from testbed.report.incident import Incident
from testbed.report.render import follow_ups


def incident(**changes: Any) -> Incident:
    quiet: dict[str, Any] = dict(
        topology="sync", faults=[], fault_start=None, fault_end=None, orders=120,
        edge_errors=0, gave_up=0, error_peak=0.0, p99_baseline=0.01, p99_peak=0.01,
        backlog_peak=0.0, dlq_peak=0.0, drained=True, lost=0, duplicated=0,
        first_symptom=None, detected=None, detected_by="", drain_time=None,
        recovered=None)
    return Incident(**{**quiet, **changes})


NOTHING = ["None: every hypothesis held and nothing was lost."]


def test_a_quiet_run_asks_for_nothing() -> None:
    assert follow_ups([incident()], []) == NOTHING


def test_users_giving_up_on_a_sync_chain_asks_for_deadlines() -> None:
    (action,) = follow_ups([incident(edge_errors=83, gave_up=83)], [])
    assert action.startswith("sync: on 83 orders the user gave up waiting")
    assert "deadline_reserve_ms" in action


def test_fast_refusals_or_a_queue_do_not_ask_for_deadlines() -> None:
    assert follow_ups([incident(edge_errors=44)], []) == NOTHING  # answered, not timeouts
    queued = follow_ups([incident(topology="async", gave_up=5, backlog_peak=60)], [])
    assert not any("deadline" in action for action in queued)
