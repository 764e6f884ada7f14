"""The load generator and samplers against real services."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from testbed.analysis import series
from testbed.faults import Planned, make_fault
from testbed.load import constant
from testbed.observe import RunResult, run_trial
from testbed.topology import async_pipeline, sync_chain

from .conftest import Deploy


@pytest.mark.timing
def test_no_coordinated_omission_while_the_gateway_is_frozen(deploy: Deploy) -> None:
    """Freeze the gateway for 1 s at 20/s: every request due in that second waits, and
    its latency (from its scheduled time) says so, not just the first one's."""
    deployment = deploy(sync_chain(1))
    plan = [Planned(make_fault(deployment, "pause", "gateway"), at=1.0, duration=1.0)]
    result = run_trial(deployment, constant(20, 3), plan, tail_s=0)
    requests = result.requests
    assert requests["ok"].all()
    due_in_pause = requests[(requests["t_scheduled"] >= 1.2) & (requests["t_scheduled"] < 1.5)]
    assert len(due_in_pause) >= 5
    assert (due_in_pause["latency_s"] > 0.4).all()  # each waited until the thaw at ~2.0 s
    finished = (due_in_pause["latency_s"] + due_in_pause["t_scheduled"]).to_numpy()
    assert np.ptp(finished) < 0.5  # ...and they all finished together, right after it
    # the generator itself kept time: each request due in the freeze went out when due
    # (not after an earlier one came back), so the wait above is the server's
    send_lag = due_in_pause["t_sent"] - due_in_pause["t_scheduled"]
    assert (send_lag < 0.1).all(), send_lag.tolist()


@pytest.mark.timing
def test_samplers_cover_queues_and_services_at_their_period(deploy: Deploy,
                                                             tmp_path: Path) -> None:
    deployment = deploy(async_pipeline(1))
    result = run_trial(deployment, constant(10, 2), [], period_s=0.1, tail_s=0.5)
    ready = series(result.samples, "queue:payments", "ready")
    assert len(ready) >= 20  # 2.5 s at 10 Hz, give or take
    assert np.median(np.diff(ready.index.to_numpy())) < 0.15
    assert not series(result.samples, "service:gateway", "in_flight").empty
    result.save(tmp_path / "run")
    reloaded = RunResult.load(tmp_path / "run")
    assert reloaded.requests.shape == result.requests.shape
    assert reloaded.processed("payments") == result.processed("payments")
    assert len(reloaded.processed("payments")) == 20
