"""Entry point of every service process: ``python -m testbed.services CONFIG.json``."""

from __future__ import annotations

import sys
from pathlib import Path

from testbed.services import async_consumer, async_gateway, http_stage, kafka_consumer
from testbed.services.config import ServiceConfig

RUNNERS = {
    "http_stage": http_stage.run,
    "async_gateway": async_gateway.run,
    "async_consumer": async_consumer.run,
}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m testbed.services CONFIG.json", file=sys.stderr)
        return 2
    config = ServiceConfig.from_json(Path(argv[0]).read_text())
    if config.kafka is not None and config.role == "async_consumer":
        kafka_consumer.run(config)  # the gateway picks its publisher itself
    else:
        RUNNERS[config.role](config)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
