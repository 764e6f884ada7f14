"""The ecosystem's own tools pointed at the testbed: Toxiproxy's CLI and vegeta.

Not needed to run experiments; `testbed setup` installs them (pinned, from the Go module
proxy) so the README's "Using it with other tools" works as written, and the tests run
them against `testbed up`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from testbed.components.binaries import TOXIPROXY_VERSION, Program
from testbed.components.install import go_install
from testbed.steps import Step, quiet

TOXIPROXY_CLI_MODULE = f"github.com/Shopify/toxiproxy/v2/cmd/cli@{TOXIPROXY_VERSION}"
VEGETA_MODULE = "github.com/tsenart/vegeta/v12@v12.13.0"

TOXIPROXY_CLI = Program(
    name="toxiproxy-cli",
    env_var="TESTBED_TOXIPROXY_CLI",
    candidates=("toxiproxy-cli",),
    install_hint=f"`testbed setup` (go install {TOXIPROXY_CLI_MODULE}, named toxiproxy-cli)",
    version_args=("--version",),
)

VEGETA = Program(
    name="vegeta",
    env_var="TESTBED_VEGETA",
    candidates=("vegeta",),
    install_hint=f"`testbed setup` (go install {VEGETA_MODULE})",
    version_args=("-version",),
)


def install_tools(step: Step = quiet) -> list[str]:
    """Install whichever of the tools is missing; returns what was installed."""
    done = []
    bin_dir = Path(sys.prefix) / "bin"
    for program, module, built in ((TOXIPROXY_CLI, TOXIPROXY_CLI_MODULE, "cli"),
                                   (VEGETA, VEGETA_MODULE, "vegeta")):
        if program.find() is None:
            with step(f"{program.name}: go install {module} (Go module proxy)"):
                path = go_install(module, built, bin_dir / program.name, program.name)
            done.append(f"{program.name} -> {path}")
    return done
