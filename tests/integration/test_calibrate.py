"""`testbed calibrate` on real components: every constant measured, in a plausible
range for a loopback machine (not a value: the machine is busy with the other tests),
saved where the model finds it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed.model.calibration import load_calibration
from testbed.runtime import Runtime
from testbed.scenario.calibrate import measure, save_calibration

pytestmark = [pytest.mark.local_only, pytest.mark.heavy]  # heavy: it boots Kafka nodes


def test_calibration_measures_every_constant(testbed_runtime: Runtime, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TESTBED_CALIBRATION_DIR", str(tmp_path / "cache"))
    calibration, raw = measure(testbed_runtime, tmp_path / "reports")
    # Ranges, not values: the tests beside this one load the machine. Three more hops
    # always cost something; the rest may measure as 0 under load, never negative.
    assert 0.0 < calibration.http_hop_ms <= 30, raw
    assert 0.0 <= calibration.publish_confirm_ms <= 50, raw
    assert 0.0 < calibration.handler_ms <= 30, raw
    assert 0.0 <= calibration.delivery_ms <= 30, raw
    assert 0.0 <= calibration.connect_ms <= 500, raw
    assert 0.0 < calibration.restart_s <= 10, raw
    assert 0.0 < calibration.kafka_commit_ms <= 50, raw
    assert 0.0 <= calibration.kafka_produce_ms <= 50, raw
    assert 0.0 <= calibration.kafka_forward_ms <= 50, raw
    assert 1.0 < calibration.kafka_restart_s <= 30, raw
    assert 0.0 < calibration.kafka_rejoin_s <= 10, raw
    path = save_calibration(calibration, raw, "local")
    assert json.loads(path.read_text())["constants"]["http_hop_ms"] == calibration.http_hop_ms
    loaded, source = load_calibration("local")
    assert loaded == calibration
    assert source.startswith("measured by testbed calibrate on local")
