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
