"""`testbed doctor`: is every component the testbed needs here, which version, how to get it."""

from __future__ import annotations

from dataclasses import dataclass

from testbed.components.binaries import (
    EPMD,
    JAEGER,
    JAVA,
    KAFKA_INSTALL_HINT,
    RABBITMQ,
    TOXIPROXY,
    find_kafka_libs,
    java_version,
    kafka_install_dir,
    kafka_version,
    rabbitmq_version,
)


@dataclass(frozen=True)
class Finding:
    component: str
    path: str | None
    version: str | None
    install_hint: str

    @property
    def ok(self) -> bool:
        return self.path is not None


def examine() -> list[Finding]:
    return [
        Finding("toxiproxy-server", TOXIPROXY.find(), TOXIPROXY.version(),
                TOXIPROXY.install_hint),
        Finding("rabbitmq-server", RABBITMQ.find(), rabbitmq_version(), RABBITMQ.install_hint),
        Finding("epmd", EPMD.find(), "erlang" if EPMD.find() else None, EPMD.install_hint),
        *kafka_findings(),
        Finding("jaeger", JAEGER.find(), JAEGER.version(), JAEGER.install_hint),
    ]


def kafka_findings() -> list[Finding]:
    """Java (which runs the Kafka broker) and the Kafka jars with their version."""
    libs = find_kafka_libs()
    version = kafka_version()
    return [
        Finding("java", JAVA.find(), java_version(), JAVA.install_hint),
        Finding("kafka jars", str(libs) if libs else None,
                f"kafka {version}" if version else None,
                KAFKA_INSTALL_HINT.format(libs=kafka_install_dir())),
    ]


def render(findings: list[Finding]) -> str:
    lines = []
    for item in findings:
        if item.ok:
            lines.append(f"ok       {item.component:18} {item.version or '?':28} {item.path}")
        else:
            lines.append(f"MISSING  {item.component:18} install: {item.install_hint}")
    return "\n".join(lines)
