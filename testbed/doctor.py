"""`testbed doctor`: is every component the testbed needs here, which version, how to get it."""

from __future__ import annotations

from dataclasses import dataclass

from testbed.components.binaries import EPMD, RABBITMQ, TOXIPROXY, rabbitmq_version


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
    ]


def render(findings: list[Finding]) -> str:
    lines = []
    for item in findings:
        if item.ok:
            lines.append(f"ok       {item.component:18} {item.version or '?':28} {item.path}")
        else:
            lines.append(f"MISSING  {item.component:18} install: {item.install_hint}")
    return "\n".join(lines)
