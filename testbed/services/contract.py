"""What a user's own service is told: its ServiceConfig as TESTBED_* environment variables.

The testbed's own services read the same ServiceConfig from a JSON file; a program in
another language reads these instead. One function, so both runtimes tell the same thing
(the contract page, examples/own-services.md, lists every variable).
"""

from __future__ import annotations

from urllib.parse import quote

from testbed.services.config import ServiceConfig


def amqp_uri(user: str, password: str, host: str, port: int, vhost: str) -> str:
    """amqp://user:pass@host:port/vhost (each part percent-encoded, as the URI spec says)."""
    return (f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/"
            f"{quote(vhost, safe='')}")


def amqp_url(config: ServiceConfig) -> str | None:
    target = config.amqp
    return None if target is None else amqp_uri(target.user, target.password, target.host,
                                                target.port, target.vhost)


def contract_environment(config: ServiceConfig) -> dict[str, str]:
    """The variables an own service starts with (absent ones do not apply to it)."""
    knobs = config.knobs
    env = {
        "TESTBED_SERVICE": config.name,
        "TESTBED_ROLE": config.role,
        "TESTBED_HOST": config.host,
        "TESTBED_PORT": str(config.port),
        "TESTBED_LEDGER_PATH": config.ledger_path,
        "TESTBED_WORK_MS": f"{knobs.work_ms:g}",
        "TESTBED_TIMEOUT_S": f"{knobs.timeout_s:g}",
    }
    if config.downstream_url:
        env["TESTBED_DOWNSTREAM_URL"] = config.downstream_url
    url = amqp_url(config)
    if url is not None and config.amqp is not None:
        env["TESTBED_AMQP_URL"] = url
        env["TESTBED_EXCHANGE"] = config.amqp.exchange
        env["TESTBED_PREFETCH"] = str(knobs.prefetch)
    if config.queue:
        env["TESTBED_QUEUE"] = config.queue
    if config.publishes:
        env["TESTBED_PUBLISHES"] = config.publishes
    return env
