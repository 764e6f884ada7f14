"""Read-after-write on the model: the sync chain answers after its write is visible; the
async gateway answers before the consumer records it, W later."""

from __future__ import annotations

import pytest

from testbed.model import Calibration, ModelError
from testbed.model.readback import simulate_readback
from testbed.scenario import metrics as m
from testbed.topology import Knobs, async_pipeline, sync_chain

SLOW = Knobs(work_ms=200)
READ = Calibration(http_hop_ms=2.0)


def test_sync_reads_its_writes() -> None:
    result = simulate_readback(sync_chain(1, overrides={"orders": SLOW}), "orders", 10,
                               calibration=READ)
    assert m.stale_first_reads(result) == 0 and m.staleness(result, 95) == 0
    assert m.edge_latency(result, 50) >= 0.2  # the W is paid in the write
    assert m.lost(result) == 0 and m.never_visible(result) == 0


def test_async_reads_are_stale_for_the_consumers_work() -> None:
    """Visible W after the answer, seen by the first read after it: W + (poll + read) / 2
    on average over where the update lands in a poll cycle."""
    result = simulate_readback(async_pipeline(1, overrides={"payments": SLOW}), "payments",
                               10, calibration=READ, poll_s=0.005)
    assert m.stale_first_read_rate(result) == 1.0
    assert m.staleness(result, 50) == pytest.approx(0.2 + (0.005 + 0.002) / 2, abs=0.004)
    assert list(result.requests.columns[-5:]) == ["reads", "read_errors",
                                                  "first_read_visible", "visible",
                                                  "staleness_s"]


def test_a_write_never_visible_within_the_wait() -> None:
    """A read side slower than the reads' patience: every write is reported unseen."""
    result = simulate_readback(async_pipeline(1, overrides={"payments": Knobs(work_ms=500)}),
                               "payments", 3, max_wait_s=0.2)
    assert m.never_visible(result) == 3


def test_bad_input_is_named() -> None:
    with pytest.raises(ModelError, match="no service 'billing'"):
        simulate_readback(sync_chain(1), "billing", 3)
    with pytest.raises(ModelError, match="count=0"):
        simulate_readback(sync_chain(1), "orders", 0)
