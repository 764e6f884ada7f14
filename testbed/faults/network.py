"""Network faults on a deployment's links, through the link's Toxiproxy proxy.

Every link (HTTP hops and each service's AMQP link) has its own proxy, so a fault hits
exactly one dependency. Toxics: latency (+jitter), timeout (black hole), bandwidth,
slow_close, reset_peer, limit_data; each upstream, downstream or both, with toxicity.
LinkDown disables the proxy: open connections drop and new ones are refused.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from testbed.components.toxiproxy import TESTBED_TOXIC_PREFIX
from testbed.faults.base import Fault, FaultSpecError, Verification
from testbed.faults.probes import ProbeResult, probe
from testbed.runtime.base import Deployment, ProxyEndpoint

STREAMS = ("upstream", "downstream", "both")


@dataclass(frozen=True)
class ToxicType:
    """A Toxiproxy toxic: its attributes (all whole numbers) and their defaults."""

    name: str
    attributes: dict[str, int | None]  # None: required


TOXICS = {t.name: t for t in (
    ToxicType("latency", {"latency": None, "jitter": 0}),
    ToxicType("timeout", {"timeout": 0}),
    ToxicType("bandwidth", {"rate": None}),
    ToxicType("slow_close", {"delay": None}),
    ToxicType("reset_peer", {"timeout": 0}),
    ToxicType("limit_data", {"bytes": None}),
)}


def find_proxy(deployment: Deployment, link: str) -> ProxyEndpoint:
    """The proxy in front of a link, or a clear error listing the links there are."""
    if deployment.toxiproxy is None or link not in deployment.proxies:
        raise FaultSpecError(f"unknown link {link!r} in deployment {deployment.id}; proxied "
                             f"links: {sorted(deployment.proxies) or 'none'}")
    return deployment.proxies[link]


MISS_CHANCE = 1e-6  # how unlikely a toxic with toxicity < 1 may go unseen by every probe


def _probe_until(endpoint: ProxyEndpoint, affected: Callable[[ProbeResult], bool], tries: int,
                 timeout: float, read_all: bool = False) -> tuple[bool, ProbeResult]:
    """Probe over fresh connections until one shows the effect (toxicity < 1 needs several)."""
    result = probe(endpoint.listen_port, endpoint.link.protocol, timeout, read_all)
    for _ in range(tries - 1):
        if affected(result):
            break
        result = probe(endpoint.listen_port, endpoint.link.protocol, timeout, read_all)
    return affected(result), result


class ToxicFault(Fault):
    """One Toxiproxy toxic on one link (two toxics when stream is 'both')."""

    def __init__(self, deployment: Deployment, link: str, toxic: str,
                 attributes: dict[str, int] | None = None, stream: str = "downstream",
                 toxicity: float = 1.0) -> None:
        super().__init__(f"{deployment.id}/{link}")
        self.endpoint = find_proxy(deployment, link)
        assert deployment.toxiproxy is not None
        self.client = deployment.toxiproxy
        if toxic not in TOXICS:
            raise FaultSpecError(f"unknown toxic {toxic!r}; known: {', '.join(TOXICS)}")
        self.kind = toxic
        self.attributes = self._check_attributes(TOXICS[toxic], attributes or {})
        if stream not in STREAMS:
            raise FaultSpecError(f"stream {stream!r} for {toxic}; use one of {STREAMS}")
        self.streams = ("upstream", "downstream") if stream == "both" else (stream,)
        if isinstance(toxicity, bool) or not isinstance(toxicity, int | float) or not (
                0.0 < toxicity <= 1.0):
            raise FaultSpecError(f"toxicity {toxicity!r} for {toxic}; give a number in (0, 1]")
        self.toxicity = float(toxicity)
        self._names = [f"{TESTBED_TOXIC_PREFIX}{toxic}-{s}" for s in self.streams]

    @staticmethod
    def _check_attributes(spec: ToxicType, given: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(given) - set(spec.attributes))
        if unknown:
            raise FaultSpecError(f"{spec.name} has no attribute {unknown[0]!r}; its "
                                 f"attributes: {sorted(spec.attributes)}")
        values = {}
        for key, default in spec.attributes.items():
            value = given.get(key, default)
            if value is None:
                raise FaultSpecError(f"{spec.name} needs {key}= (a whole number)")
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise FaultSpecError(f"{spec.name} {key}={value!r} is impossible; give a "
                                     "whole number of 0 or more")
            values[key] = value
        return values

    def describe(self) -> str:
        attrs = ", ".join(f"{k}={v}" for k, v in self.attributes.items())
        return (f"{self.kind}({attrs}) on {self.target} {'+'.join(self.streams)}"
                + (f" toxicity {self.toxicity}" if self.toxicity < 1 else ""))

    def inject(self) -> None:
        for name, stream in zip(self._names, self.streams, strict=True):
            self.client.add_toxic(self.endpoint.proxy_name, name, self.kind, stream,
                                  self.toxicity, self.attributes)

    def remove(self) -> None:
        present = set(self.client.toxics(self.endpoint.proxy_name))
        for name in self._names:
            if name in present:
                self.client.remove_toxic(self.endpoint.proxy_name, name)

    def verify(self) -> Verification:
        # each fresh connection meets the toxic with p = toxicity: enough probes that all
        # missing it has a chance under one in a million (a miss costs a ms; 20 at 0.5)
        tries = 1 if self.toxicity >= 1 else max(5, math.ceil(
            math.log(MISS_CHANCE) / math.log(1.0 - self.toxicity)))
        http = self.endpoint.link.protocol == "http"
        if self.kind == "latency":
            floor = max(0, self.attributes["latency"] - self.attributes["jitter"]) / 1000
            if floor < 0.02:
                return self._present("latency under 20 ms is below what a probe can tell")
            ok, seen = _probe_until(self.endpoint, lambda r: r.outcome == "ok"
                                    and r.seconds >= 0.9 * floor, tries, 3 * floor + 2)
            return Verification(ok, f"first byte after {seen.seconds * 1000:.0f} ms "
                                    f"({seen.outcome}); expected >= {floor * 1000:.0f} ms")
        if self.kind in ("timeout", "reset_peer"):
            wait = self.attributes["timeout"] / 1000 + 1.0
            ok, seen = _probe_until(self.endpoint, lambda r: r.outcome != "ok", tries, wait)
            return Verification(ok, f"probe {seen.outcome} after {seen.seconds:.2f} s; "
                                    "expected no answer")
        if self.kind == "limit_data" and http and self.attributes["bytes"] < 100:
            limit = self.attributes["bytes"]  # every /health answer is longer than this
            ok, seen = _probe_until(self.endpoint, lambda r: r.received <= limit, tries, 2,
                                    read_all=True)
            return Verification(ok, f"connection ended after {seen.received} bytes; "
                                    f"expected <= {limit}")
        return self._present("no caller-side probe for this toxic")

    def _present(self, why: str) -> Verification:
        present = set(self.client.toxics(self.endpoint.proxy_name))
        ok = set(self._names) <= present
        return Verification(ok, f"{why}; toxic {'present' if ok else 'MISSING'} on the proxy")


class LinkDown(Fault):
    """The link is cut: the proxy stops listening and drops open connections."""

    kind = "link_down"

    def __init__(self, deployment: Deployment, link: str) -> None:
        super().__init__(f"{deployment.id}/{link}")
        self.endpoint = find_proxy(deployment, link)
        assert deployment.toxiproxy is not None
        self.client = deployment.toxiproxy
        # Seen from the host, a published container port is docker's port proxy (or, on
        # k8s, kubectl's port-forward): it accepts, finds nothing listening behind it, and
        # closes or resets without a byte.
        self.cut_looks = (("refused", "closed", "reset") if deployment.runtime in ("docker", "k8s")
                          else ("refused",))

    def inject(self) -> None:
        self.client.set_enabled(self.endpoint.proxy_name, False)

    def remove(self) -> None:
        self.client.set_enabled(self.endpoint.proxy_name, True)

    def verify(self) -> Verification:
        seen = probe(self.endpoint.listen_port, self.endpoint.link.protocol, 2.0)
        return Verification(seen.outcome in self.cut_looks,
                            f"connect {seen.outcome}; expected {' or '.join(self.cut_looks)}")
