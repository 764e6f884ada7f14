"""A link as Toxiproxy makes it: latency on a stream, or cut.

Toxiproxy's latency toxic holds each chunk of a stream for latency +- jitter (uniform,
drawn per chunk) from when it arrived; a request or a response, a delivery or a
confirm, is one chunk here. "downstream" is what the server sends the client (an HTTP
response; a broker's deliveries and confirms), "upstream" what the client sends (a
request; publishes and acks). When a latency toxic is removed, whatever it holds goes
through at once ("Don't drop any data on the floor": a held chunk is forwarded on the
interrupt), so a wait across the link ends then. A cut (link_down) refuses new
connections and drops open ones: the owner of the link decides what that does to its
calls and consumers.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Generator
from typing import Any

import simpy

from testbed.model.flow import Call

STREAMS = ("upstream", "downstream", "both")


class Link:
    """One proxied (or, for the user's hop to the entry, unproxied) link."""

    def __init__(self, env: simpy.Environment, name: str, rng: random.Random) -> None:
        self.env = env
        self.name = name
        self.rng = rng
        self.in_flight: set[Call] = set()  # calls across it, failed by a cut...
        self.tracked = False  # ...kept only where a fault of the plan can cut them
        self.down = False
        self.cuts = 0  # how many times it was cut: a wait that spans a cut sees it change
        self.restored = env.event()  # succeeds when a cut ends (replaced at each cut)
        self.on_cut: list[Callable[[Link], None]] = []
        self.on_restore: list[Callable[[Link], None]] = []
        self.on_eased: list[Callable[[Link, str], None]] = []  # a latency removed
        self._eased = {"upstream": env.event(), "downstream": env.event()}
        self._toxics: dict[str, list[tuple[float, float]]] = {"upstream": [],
                                                               "downstream": []}
        self.upstream = False  # any latency on the stream: the hot path checks these
        self.downstream = False

    # -- latency --------------------------------------------------------------------

    def add_latency(self, stream: str, latency_ms: float, jitter_ms: float) -> None:
        for s in _streams(stream):
            self._toxics[s].append((latency_ms / 1000.0, jitter_ms / 1000.0))
        self._flags()

    def remove_latency(self, stream: str, latency_ms: float, jitter_ms: float) -> None:
        for s in _streams(stream):
            self._toxics[s].remove((latency_ms / 1000.0, jitter_ms / 1000.0))
        self._flags()
        for s in _streams(stream):
            eased, self._eased[s] = self._eased[s], self.env.event()
            eased.succeed()
            for hook in self.on_eased:
                hook(self, s)

    def eased(self, stream: str) -> simpy.Event:
        """Succeeds when a latency toxic on ``stream`` is next removed."""
        return self._eased[stream]

    def cross(self, stream: str, base_s: float) -> Generator[simpy.Event, Any, None]:
        """Wait ``base_s`` plus the stream's latency for one chunk; a latency removed
        meanwhile lets the chunk through at once (the base still applies)."""
        env = self.env
        started = env.now
        delay = self._delay(self._toxics[stream])
        if not delay:
            if base_s:
                yield env.timeout(base_s)
            return
        yield env.any_of([env.timeout(base_s + delay), self._eased[stream]])
        left = started + base_s - env.now
        if left > 1e-12:
            yield env.timeout(left)

    def _flags(self) -> None:
        self.upstream = bool(self._toxics["upstream"])
        self.downstream = bool(self._toxics["downstream"])

    def _delay(self, toxics: list[tuple[float, float]]) -> float:
        total = 0.0
        for latency, jitter in toxics:
            total += max(0.0, latency + self.rng.uniform(-jitter, jitter) if jitter
                         else latency)
        return total

    def upstream_s(self) -> float:
        """Seconds one chunk from the client to the server is held now."""
        return self._delay(self._toxics["upstream"]) if self.upstream else 0.0

    def downstream_s(self) -> float:
        """Seconds one chunk from the server to the client is held now."""
        return self._delay(self._toxics["downstream"]) if self.downstream else 0.0

    # -- cut ------------------------------------------------------------------------

    def cut(self) -> None:
        if self.down:
            return
        self.down = True
        self.cuts += 1
        self.restored = self.env.event()
        for hook in self.on_cut:
            hook(self)

    def restore(self) -> None:
        if not self.down:
            return
        self.down = False
        self.restored.succeed()
        for hook in self.on_restore:
            hook(self)


def _streams(stream: str) -> tuple[str, ...]:
    return ("upstream", "downstream") if stream == "both" else (stream,)
