"""examples/whatif/: the seeds' incidents at their own scale, for `testbed predict` only.

Each file loads and simulates here at a short scale (the same WhatIf API the command
uses), and a few of its stated predictions hold there, or scale as its description
says: the full-scale runs (tens of seconds each) are for the command line.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.load import Step
from testbed.load.profile import MAX_DURATION_S
from testbed.scenario import metrics as m
from testbed.scenario.predict import WhatIf, load_for_model, predict
from testbed.scenario.spec import ScenarioError, load_scenario

ROOT = Path(__file__).resolve().parents[2]
WHATIF = ROOT / "examples" / "whatif"
FLOOD = WHATIF / "seed004-flood-full-scale.toml"
FRAUD = WHATIF / "seed000-fraud-outage-sale.toml"
PIPELINE = WHATIF / "seed000-pipeline-100-stages.toml"


@pytest.fixture(autouse=True)
def default_calibration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The files' numbers are derived from the model's stated defaults."""
    monkeypatch.setenv("TESTBED_CALIBRATION_DIR", str(tmp_path / "no-calibration"))


def test_every_whatif_file_is_listed_here() -> None:
    assert sorted(WHATIF.glob("*.toml")) == sorted([FLOOD, FRAUD, PIPELINE])


def test_the_full_scale_flood_is_for_the_model_only() -> None:
    """`testbed run` reads files with load_scenario: 13.9 h of load is refused there;
    `testbed predict` keeps the file's own load and simulates that."""
    with pytest.raises(ScenarioError, match="limit"):
        load_scenario(FLOOD)
    scenario, own = load_for_model(FLOOD)
    assert own.load == (Step(50000.0, 20.0),)
    assert scenario.profile.duration_s <= MAX_DURATION_S  # the stand-in the checks need
    assert [t.name for t in scenario.topologies] == ["async"]


def test_a_file_within_the_limits_is_read_as_a_scenario() -> None:
    scenario, own = load_for_model(FRAUD)
    assert own == WhatIf()
    assert scenario.profile.count == 600_000


def test_the_flood_scales_as_stated(tmp_path: Path) -> None:
    """200 s of the flood instead of 50,000: mu = 1000 / (handler 1.7 + work 98 + delivery
    0) = 10.03/s, backlog (R - mu) x 200 = 9.97 x 200 = 1,994, drained in 1,994 / mu =
    198.8 s; the alert at 1,000 still fires at 100.3 s."""
    scenario, own = load_for_model(FLOOD)
    results, judged, _ = predict(scenario, tmp_path, WhatIf(duration_s=200, load=own.load))
    run = results["async"]
    assert len(run.requests) == 4000
    assert m.edge_errors(run) == 0
    mu = 1000 / (1.7 + 98 + 0.0)
    backlog = (20 - mu) * 200
    assert m.backlog_peak(run, "payments") == pytest.approx(backlog, rel=0.02)
    assert m.drain_time(run, "payments") == pytest.approx((backlog - 2) / mu, rel=0.02)
    verdicts = {v.name: v for v in judged["async"].verdicts}
    assert verdicts["queue-depth alert at 1,000 messages"].passed
    assert verdicts["async orders lost"].passed
    assert not verdicts["async backlog peak (the seed's 500,000)"].passed


def test_the_fraud_outage_scales_with_the_rate(tmp_path: Path) -> None:
    """At 10 orders/s instead of 200 the same 30-minute outage: R x 1,800.26 failed sync
    checkouts and queued async messages, drained in backlog / (mu - R), fraud's mu =
    6 replicas x 1000 / (handler 1.7 + work 9) = 560.7/s: 18,000.6 / 550.7 = 32.7 s."""
    scenario, _ = load_for_model(FRAUD)
    results, _, written = predict(scenario, tmp_path, WhatIf(rate=10))
    outage = 10 * 1800.26
    assert m.edge_errors(results["sync"]) == pytest.approx(outage, rel=0.01)
    assert m.edge_errors(results["async"]) == 0
    assert m.backlog_peak(results["async"], "fraud") == pytest.approx(outage, rel=0.01)
    mu = 6 * 1000 / (1.7 + 9)
    assert m.drain_time(results["async"], "fraud") == pytest.approx(
        (outage - 2) / (mu - 10), rel=0.05)
    assert m.lost(results["async"], "fraud") == m.lost(results["async"], "notification") == 0
    assert (tmp_path / scenario.name / "report.md").read_text().startswith("# SIMULATED: ")
    assert written.index.exists()


def test_the_100_stage_pipeline_at_a_short_scale(tmp_path: Path) -> None:
    """60 s at 50/s (the file's first step, with its outage of stage080): the outage's
    numbers are the file's; sync waits the sum of the stages, async the edge alone."""
    scenario, _ = load_for_model(PIPELINE)
    assert len(scenario.topology("async").services) == 101
    results, judged, _ = predict(scenario, tmp_path, WhatIf(rate=50, duration_s=60))
    verdicts = {v.name: v for h in judged.values() for v in h.verdicts}
    for name in ("async backlog at the stage that was down",
                 "async drain of the stage that was down", "async edge errors",
                 "async orders lost", "sync edge errors",
                 "sync edge p50 = the sum of the per-stage costs"):
        assert verdicts[name].passed, verdicts[name]
    assert m.edge_latency(results["async"], 50) < 0.01


def test_a_model_prediction_reads_the_simulated_run(tmp_path: Path) -> None:
    """predicted = "model" in a what-if: the number only the simulation gives, shown
    beside the others (it was an error under `testbed predict` before)."""
    text = (ROOT / "scenarios" / "outage.toml").read_text() + '''
[[hypotheses]]
name = "sync edge p99, the model's"
topology = "sync"
metric = "edge_latency"
q = 99
predicted = "model"
check = "within"
rel = 0.01
unit = "s"
'''
    path = tmp_path / "outage-model.toml"
    path.write_text(text)
    scenario, own = load_for_model(path)
    _, judged, _ = predict(scenario, tmp_path / "reports", own)
    verdict = next(v for v in judged["sync"].verdicts if v.name == "sync edge p99, the model's")
    assert verdict.passed and verdict.predicted == verdict.measured
