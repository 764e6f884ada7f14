"""`testbed predict`: a scenario simulated by the model, what-if changes, the report
marked SIMULATED."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.cli import main
from testbed.scenario.predict import WhatIf, parse_settings, predict
from testbed.scenario.spec import ScenarioError, load_scenario

OUTAGE = Path(__file__).resolve().parents[2] / "scenarios" / "outage.toml"


@pytest.fixture(autouse=True)
def default_calibration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The model's defaults, not whatever `testbed calibrate` measured on this machine."""
    monkeypatch.setenv("TESTBED_CALIBRATION_DIR", str(tmp_path / "no-calibration"))


def test_the_model_agrees_with_the_outage_scenarios_predictions(tmp_path: Path) -> None:
    """No runtime is given to the experiment (None): anything that tried to deploy would
    fail here."""
    results, judged, written = predict(load_scenario(OUTAGE), tmp_path)
    assert set(results) == {"sync", "async"}
    assert all(h.passed for h in judged.values()), [h.report() for h in judged.values()]
    report = (tmp_path / "outage" / "report.md").read_text()
    assert report.startswith("# SIMULATED: ")
    assert "not measured: no trial ran" in report
    assert written.index.exists()


def test_what_if_a_bigger_load_and_a_slower_service(tmp_path: Path) -> None:
    scenario = load_scenario(OUTAGE)
    what_if = WhatIf(rate=40, duration_s=20, knobs=parse_settings(["payments.work_ms=5"],
                                                                  scenario))
    results, judged, _ = predict(scenario, tmp_path, what_if)
    assert len(results["sync"].requests) == 800
    errors = next(v for v in judged["sync"].verdicts if v.name == "sync edge errors")
    assert errors.measured == pytest.approx(40 * 3, rel=0.1)  # rate x outage, not 60
    assert not errors.passed


@pytest.mark.parametrize("setting, needle", [
    ("payments.work_ms", "not SERVICE.KNOB=VALUE"),
    ("emails.work_ms=3", "no service 'emails'"),
])
def test_a_bad_setting_is_refused(setting: str, needle: str) -> None:
    with pytest.raises(ScenarioError, match=needle):
        parse_settings([setting], load_scenario(OUTAGE))


def test_the_command_line_prints_model_beside_the_file(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(OUTAGE), "--report-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("SIMULATED by the model (no trial was run)")
    assert "sync edge errors: model 60; the file predicts 60 (± 20%): agrees" in out
    assert main(["predict", str(OUTAGE), "--set", "payments.pool=2",
                 "--report-dir", str(tmp_path)]) == 1
    assert "unknown knob" in capsys.readouterr().err


def test_a_trial_kept_with_its_model_run_is_charted_with_it(tmp_path: Path) -> None:
    """`<key>_model` beside `<key>`: one chart with the model drawn over, one incident."""
    from testbed.analysis import Hypotheses, equals
    from testbed.report.suite_report import write_reports
    from testbed.scenario import Experiment

    scenario = load_scenario(OUTAGE)
    simulated = scenario.simulate()
    experiment = Experiment("overlay", None, tmp_path)  # type: ignore[arg-type]
    experiment.keep("sync", simulated["sync"])
    experiment.keep("sync_model", simulated["sync"])
    claims = Hypotheses("sync")
    claims.check(equals("orders", 160, len(simulated["sync"].requests)))
    experiment.record(claims, echo=False)
    written = write_reports(tmp_path)
    (report,) = written.experiments
    assert list(report.charts) == ["sync"]
    assert [i.topology for i in report.incidents] == ["sync"]
