"""Small pure pieces: service config round trip, ledger, stats, ports, CLI parsing."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from testbed.cli import main
from testbed.errors import PortInUseError
from testbed.ports import allocate_port, claim_fixed_port, release_ports, reservations
from testbed.services.config import AmqpTarget, ServiceConfig
from testbed.services.ledger import Ledger
from testbed.services.stats import Stats
from testbed.topology import Knobs


def test_service_config_round_trips_through_json() -> None:
    config = ServiceConfig("payments", "async_consumer", "127.0.0.1", 20001,
                           Knobs(prefetch=3), "/tmp/x.ledger",
                           amqp=AmqpTarget("127.0.0.1", 20002, "v", "u", "p", "orders"),
                           consumes="order.placed", queue="payments")
    assert ServiceConfig.from_json(config.to_json()) == config


def test_ledger_counts_and_survives_a_restart(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l")
    assert ledger.record("a") == 1
    assert ledger.record("a") == 2
    ledger.record("b")
    ledger.close()
    reopened = Ledger(tmp_path / "l")
    assert reopened.snapshot() == {"a": 2, "b": 1}
    reopened.close()


def test_stats_track_in_flight_and_saturation() -> None:
    stats = Stats("s", "http_stage", pool_size=4)
    with stats.busy(), stats.busy():
        snapshot = stats.snapshot()
    assert snapshot["in_flight"] == 2
    assert snapshot["saturation"] == 0.5
    assert stats.snapshot()["in_flight"] == 0
    assert stats.snapshot()["max_in_flight"] == 2


def test_ports_are_unique_reserved_and_released(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    monkeypatch.setenv("TESTBED_HOME", str(tmp_path))
    ports = {allocate_port("tbunit") for _ in range(50)}
    assert len(ports) == 50
    assert set(reservations()) == ports
    release_ports("tbunit")
    assert reservations() == {}


def test_claiming_a_port_in_use_says_so(monkeypatch: pytest.MonkeyPatch,
                                        tmp_path: Path) -> None:
    monkeypatch.setenv("TESTBED_HOME", str(tmp_path))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"port {port} .*sync.gateway.*Fix"):
            claim_fixed_port(port, "tbunit", "sync.gateway")
    assert reservations() == {}


def test_cli_unknown_shape_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["up", "--shape", "ring"])
    assert info.value.code == 2
    assert "invalid choice: 'ring'" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["up", "--depth", "-1"], "'depth': -1 is not allowed"),
    (["up", "--port", "nonsense"], "TOPOLOGY.SERVICE=PORT"),
    (["up", "--port", "sync.ghost=20000"], "no service sync.ghost"),
])
def test_cli_bad_input_fails_before_starting_anything(
        argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 1
    assert message in capsys.readouterr().err


def test_load_profiles_are_bounded_and_exact() -> None:
    from testbed.load import LoadGenerator, LoadSpecError, bursty, constant, stepped

    assert constant(20, 2).count == 40
    assert list(stepped((1, 4), (0.5, 2)).offsets()) == [0.0, 0.25, 0.5, 0.75, 1.0]
    profile = bursty(2, 10, period_s=2, burst_s=0.5, duration_s=4)
    assert profile.duration_s == pytest.approx(4)
    assert profile.count == 2 * 1.5 * 2 + 10 * 0.5 * 2
    with pytest.raises(LoadSpecError, match="limit"):
        constant(10_000, 1000)
    with pytest.raises(LoadSpecError, match="impossible step"):
        constant(-1, 5)
    with pytest.raises(LoadSpecError, match="http://host:port"):
        LoadGenerator("gateway:80", constant(1, 1))
