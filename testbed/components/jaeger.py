"""A private Jaeger per run: the v2 ``jaeger`` binary (an OpenTelemetry collector with
Jaeger's storage and query extensions) with in-memory storage.

Jaeger v2 takes a collector YAML config. Its built-in all-in-one config opens a dozen
fixed ports (OTLP, legacy Jaeger and Zipkin receivers, sampling, health, expvar, zpages,
Prometheus metrics), so the testbed writes its own into the run directory: the OTLP
receiver (gRPC and HTTP) and the query service (HTTP JSON API and its gRPC API) on
allocated 127.0.0.1 ports, the collector's own metrics off, nothing else. The process is
a ManagedProcess tagged with the run id, so the watchdog and ``testbed gc`` sweep a
leftover one like any other of the run's processes.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.components.binaries import JAEGER
from testbed.components.process import ManagedProcess
from testbed.components.readiness import http_ok, wait_until

HOST = "127.0.0.1"
MAX_TRACES = 50_000  # in-memory storage drops the oldest traces beyond this


@dataclass(frozen=True)
class JaegerPorts:
    """Every port the instance listens on (all on 127.0.0.1)."""

    otlp_grpc: int
    otlp_http: int
    query_http: int  # the HTTP JSON API (the UI there is a placeholder: see query_url)
    query_grpc: int

    def all(self) -> tuple[int, ...]:
        return (self.otlp_grpc, self.otlp_http, self.query_http, self.query_grpc)


def jaeger_config(ports: JaegerPorts, max_traces: int = MAX_TRACES) -> dict[str, Any]:
    """The collector config: OTLP in, memory storage, query out, nothing else open."""
    def at(port: int) -> dict[str, str]:
        return {"endpoint": f"{HOST}:{port}"}

    return {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query"],
            "pipelines": {"traces": {"receivers": ["otlp"], "processors": [],
                                     "exporters": ["jaeger_storage_exporter"]}},
            "telemetry": {
                "resource": {"service.name": "jaeger"},
                # "none" starts no metrics reader: the default one listens on :8888.
                "metrics": {"level": "none"},
                "logs": {"level": "info"},
            },
        },
        "extensions": {
            "jaeger_storage": {"backends": {"memstore": {"memory": {"max_traces": max_traces}}}},
            "jaeger_query": {
                "storage": {"traces": "memstore"},
                "http": at(ports.query_http),
                "grpc": at(ports.query_grpc),
                # It would otherwise trace its own API calls, into this very store.
                "enable_tracing": False,
                # Every process shares this machine's clock: never shift a span.
                "max_clock_skew_adjust": "0s",
            },
        },
        "receivers": {"otlp": {"protocols": {"grpc": at(ports.otlp_grpc),
                                             "http": at(ports.otlp_http)}}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": "memstore"}},
    }


def _accepts(port: int) -> bool:
    """True when something listens on 127.0.0.1:port."""
    with socket.create_connection((HOST, port), timeout=0.5):
        return True


class JaegerServer:
    """A private all-in-one Jaeger on 127.0.0.1, one per run."""

    def __init__(self, run_id: str, run_dir: Path, ports: JaegerPorts) -> None:
        binary = JAEGER.require()
        self.ports = ports
        # JSON is YAML: no YAML library needed to write the collector's config.
        self.config_path = run_dir / "jaeger.yaml"
        self.config_path.write_text(json.dumps(jaeger_config(ports), indent=2))
        self.process = ManagedProcess("jaeger", [binary, "--config", str(self.config_path)],
                                      run_id, run_dir / "logs" / "jaeger.log")

    @property
    def otlp_http_url(self) -> str:
        """Base URL of the OTLP/HTTP receiver (exporters post to /v1/traces)."""
        return f"http://{HOST}:{self.ports.otlp_http}"

    @property
    def otlp_grpc_endpoint(self) -> str:
        return f"{HOST}:{self.ports.otlp_grpc}"

    @property
    def query_url(self) -> str:
        """Base URL of the query service: the JSON API under /api. Its UI is a placeholder:
        the UI's assets are built by jaeger-ui's npm build, not part of the Go module."""
        return f"http://{HOST}:{self.ports.query_http}"

    def ready(self) -> bool:
        """The query API answers and the OTLP receiver listens (the collector starts its
        extensions before its pipelines, so the first alone is not enough)."""
        return (http_ok(f"{self.query_url}/api/services") and _accepts(self.ports.otlp_http)
                and _accepts(self.ports.otlp_grpc))

    def running(self) -> bool:
        return self.process.running()

    def start(self, timeout: float = 30.0) -> float:
        """Start and wait until ready; returns the seconds it took."""
        self.process.start()
        return wait_until(self.ready, "jaeger", timeout, self.process)

    def stop(self) -> None:
        """SIGTERM (the collector shuts its pipelines down in order), SIGKILL after 5 s."""
        self.process.stop(grace=5.0)
