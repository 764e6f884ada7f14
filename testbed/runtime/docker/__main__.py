"""``python -m testbed.runtime.docker watch RUN_ID`` (the watchdog) or ``gc``."""

from __future__ import annotations

import sys

from testbed.runtime.docker.cleanup import collect_docker_garbage, watch


def main(argv: list[str]) -> int:
    """``python -m testbed.runtime.docker watch RUN_ID`` (the watchdog) or ``gc``."""
    if len(argv) == 2 and argv[0] == "watch":
        return watch(argv[1])
    if argv == ["gc"]:
        for line in collect_docker_garbage():
            print(f"removed {line}")
        return 0
    print("usage: python -m testbed.runtime.docker watch RUN_ID | gc", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
