"""Finding the external programs the testbed runs, and saying how to install them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from testbed.errors import MissingBinaryError

TOXIPROXY_VERSION = "v2.12.0"
TOXIPROXY_MODULE = f"github.com/Shopify/toxiproxy/v2/cmd/server@{TOXIPROXY_VERSION}"


@dataclass(frozen=True)
class Program:
    """An external program: where to look for it and how to get it."""

    name: str
    env_var: str  # an explicit path wins over every other place
    candidates: tuple[str, ...]  # names on PATH or absolute paths, in order
    install_hint: str
    version_args: tuple[str, ...] = ("--version",)

    def _places(self) -> list[str]:
        venv_bin = str(Path(sys.prefix) / "bin")
        places = []
        for candidate in self.candidates:
            if os.path.isabs(candidate):
                places.append(candidate)
            else:
                places.append(shutil.which(candidate) or "")
                places.append(shutil.which(candidate, path=venv_bin) or "")
        return [p for p in places if p]

    def find(self) -> str | None:
        explicit = os.environ.get(self.env_var)
        if explicit:
            return explicit if os.access(explicit, os.X_OK) else None
        for place in self._places():
            if os.access(place, os.X_OK):
                return place
        return None

    def require(self) -> str:
        """The program's path, or a MissingBinaryError naming how to install it."""
        found = self.find()
        if found is None:
            explicit = os.environ.get(self.env_var)
            looked = (f"${self.env_var}={explicit}" if explicit
                      else f"${self.env_var}, PATH, {Path(sys.prefix) / 'bin'}, "
                           + ", ".join(c for c in self.candidates if os.path.isabs(c)))
            raise MissingBinaryError(self.name, looked, self.install_hint)
        return found

    def version(self) -> str | None:
        found = self.find()
        if found is None:
            return None
        try:
            done = subprocess.run([found, *self.version_args], capture_output=True,
                                  text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        text = (done.stdout or done.stderr).strip().splitlines()
        return text[0] if text else None


TOXIPROXY = Program(
    name="toxiproxy-server",
    env_var="TESTBED_TOXIPROXY_SERVER",
    candidates=("toxiproxy-server",),
    install_hint=(f"`testbed setup` (runs GOBIN=.venv/bin go install {TOXIPROXY_MODULE} and "
                  "names it toxiproxy-server), or put any toxiproxy-server on PATH"),
    version_args=("-version",),
)

RABBITMQ = Program(
    name="rabbitmq-server",
    env_var="TESTBED_RABBITMQ_SERVER",
    # The script under /usr/lib/rabbitmq/bin runs as the caller; Debian's /usr/sbin
    # wrapper would switch to the rabbitmq user, who cannot write our private data dir.
    candidates=("/usr/lib/rabbitmq/bin/rabbitmq-server", "rabbitmq-server"),
    install_hint="`testbed setup` (as root: apt-get install rabbitmq-server)",
    version_args=("--version",),
)

EPMD = Program(
    name="epmd",
    env_var="TESTBED_EPMD",
    candidates=("epmd", "/usr/lib/erlang/bin/epmd"),
    install_hint="`testbed setup` (epmd comes with Debian's erlang-base, a rabbitmq-server "
                 "dependency)",
    version_args=("-help",),
)

PROGRAMS = (TOXIPROXY, RABBITMQ, EPMD)


def rabbitmq_version() -> str | None:
    """RabbitMQ's version as Debian packaged it (its server script has no --version)."""
    if RABBITMQ.find() is None:
        return None
    try:
        done = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "rabbitmq-server"],
                              capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown version"
    return done.stdout.strip() or "unknown version"
