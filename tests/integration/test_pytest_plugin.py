"""The pytest plugin, exercised the way a user's suite would use it."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.local_only

pytest_plugins = ["pytester"]


def test_deploy_fixture_brings_up_and_tears_down(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        from testbed.runs import tagged_processes
        from testbed.topology import sync_chain

        RUN = {}

        def test_uses_a_deployment(deploy, testbed_runtime):
            deployment = deploy(sync_chain(1))
            RUN["id"] = testbed_runtime.run_id
            assert deployment.place_order("p-1").status_code == 200
            assert deployment.ledger("orders") == {"p-1": 1}

        def test_deployment_of_previous_test_is_gone():
            names = [p.name() for p in tagged_processes(RUN["id"])]
            assert names == ["toxiproxy-server"]  # the session's server stays, services go
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_plugin_registers_options_and_marker(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(["*--runtime*", "*--report-dir*"])
    result = pytester.runpytest_subprocess("--markers")
    result.stdout.fnmatch_lines(["*experiment*"])


@pytest.mark.heavy  # a Jaeger beside the timing tests
def test_tracing_option_traces_every_trial(pytester: pytest.Pytester) -> None:
    """--tracing: the session's deployments trace to the run's Jaeger, an experiment's
    trials keep their spans, and the report draws one order's trace."""
    pytester.makepyfile(test_traced_experiment="""
        from testbed.analysis import Hypotheses
        from testbed.load import constant
        from testbed.scenario import metrics as m
        from testbed.scenario.predicted import predicted
        from testbed.topology import sync_chain

        def test_a_traced_trial(experiment):
            results = experiment.paired([sync_chain(2)], constant(10, 1))
            h = Hypotheses("traced")
            h.check(predicted("one trace an order", m.whole_path_share, results["sync"],
                              results.predicted("sync")))
            experiment.check(h)
            assert m.whole_path_share(results["sync"]) == 1.0
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--tracing",
                                           "--report-dir", "out")
    result.assert_outcomes(passed=1)
    assert (pytester.path / "out" / "runs" / "traced-experiment" / "sync" /
            "spans.csv").exists()
    assert (pytester.path / "out" / "traced-experiment" / "sync-waterfall.png").exists()
