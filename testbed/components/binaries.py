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


# -- Kafka: jars from Maven Central, run on a Java the machine has --------------------------

KAFKA_VERSION = "4.1.1"
KAFKA_ARTIFACT = f"org.apache.kafka:kafka_2.13:{KAFKA_VERSION}"
KAFKA_POM = Path(__file__).with_name("kafka.pom.xml")  # kafka_2.13 and a log4j2 binding
KAFKA_LIBS_ENV = "TESTBED_KAFKA_LIBS"  # a directory of jars (e.g. a Kafka tarball's libs/)
KAFKA_COMPLETE = ".complete"  # written last by `testbed setup`: the copy is whole

JAVA = Program(
    name="java",
    env_var="TESTBED_JAVA",
    candidates=("java",),
    install_hint="as root: apt-get install -y openjdk-17-jre-headless (Kafka 4.x needs "
                 "Java 17 or later), or set $TESTBED_JAVA to a java binary",
    version_args=("-version",),
)

MAVEN = Program(
    name="mvn",
    env_var="TESTBED_MVN",
    candidates=("mvn",),
    install_hint="as root: apt-get install -y maven (only `testbed setup` needs it, to fetch "
                 "the Kafka jars), or set $TESTBED_MVN",
    version_args=("-v",),
)

KAFKA_INSTALL_HINT = (f"`testbed setup` (fetches {KAFKA_ARTIFACT} and its runtime dependencies "
                      f"with Maven into {{libs}}), or set ${KAFKA_LIBS_ENV} to a directory "
                      "holding Kafka's jars (a Kafka 4.x tarball's libs/)")


def kafka_install_dir() -> Path:
    """Where `testbed setup` puts the jars: in the active environment, beside
    toxiproxy-server, one directory per pinned version (a new pin never mixes jars)."""
    return Path(sys.prefix) / "share" / "testbed" / f"kafka-{KAFKA_VERSION}" / "libs"


def _kafka_core_jar(libs: Path) -> Path | None:
    jars = sorted(libs.glob("kafka_2.13-*.jar"))
    jars = [j for j in jars if not j.name.endswith(("-test.jar", "-sources.jar"))]
    return jars[0] if jars else None


def find_kafka_libs() -> Path | None:
    """The directory of Kafka's jars, or None: ${KAFKA_LIBS_ENV} when set, else the setup's
    copy when it is complete (a half-finished copy does not count)."""
    explicit = os.environ.get(KAFKA_LIBS_ENV)
    if explicit:
        libs = Path(explicit)
        return libs if libs.is_dir() and _kafka_core_jar(libs) else None
    libs = kafka_install_dir()
    if (libs / KAFKA_COMPLETE).is_file() and _kafka_core_jar(libs):
        return libs
    return None


def require_kafka_libs() -> Path:
    """Kafka's jar directory, or a MissingBinaryError saying how to get it."""
    found = find_kafka_libs()
    if found is None:
        explicit = os.environ.get(KAFKA_LIBS_ENV)
        looked = (f"${KAFKA_LIBS_ENV}={explicit} (no kafka_2.13-*.jar there)" if explicit
                  else f"${KAFKA_LIBS_ENV}, {kafka_install_dir()}")
        raise MissingBinaryError("Kafka jars", looked,
                                 KAFKA_INSTALL_HINT.format(libs=kafka_install_dir()))
    return found


def kafka_version() -> str | None:
    """The version of the Kafka jars found (from kafka_2.13-<version>.jar), or None."""
    libs = find_kafka_libs()
    core = _kafka_core_jar(libs) if libs else None
    return core.name.removeprefix("kafka_2.13-").removesuffix(".jar") if core else None


def java_version() -> str | None:
    """From `java -version`'s first line ('openjdk version "17.0.15" 2025-04-15'):
    'openjdk 17.0.15' (Kafka 4.x needs 17 or later)."""
    line = JAVA.version()
    if line is None:
        return None
    parts = line.split('"')
    return f"{line.split()[0]} {parts[1]}" if len(parts) >= 3 else line


# -- Jaeger: the v2 all-in-one (an OpenTelemetry-collector build), from the Go proxy -------

JAEGER_VERSION = "v1.76.0"  # the module's tag; the binary itself is Jaeger v2.13.0
JAEGER_MODULE = "github.com/jaegertracing/jaeger"
JAEGER_PACKAGE = f"{JAEGER_MODULE}/cmd/jaeger"

JAEGER = Program(
    name="jaeger",
    env_var="TESTBED_JAEGER",
    candidates=("jaeger",),
    install_hint=(f"`testbed setup` (builds {JAEGER_PACKAGE}@{JAEGER_VERSION} with Go, "
                  "through a throwaway module's `go get -tool`, into .venv/bin/jaeger; "
                  "a few minutes), or set $TESTBED_JAEGER to a Jaeger v2 binary"),
    version_args=("--version",),
)
