"""``python -m testbed.runtime.k8s watch RUN_ID KUBECONFIG`` (the watchdog) or ``gc``."""

from __future__ import annotations

import sys
from pathlib import Path

from testbed.runtime.k8s.cleanup import collect_k8s_garbage, watch


def main(argv: list[str]) -> int:
    """``watch RUN_ID KUBECONFIG`` (the run's watchdog) or ``gc``."""
    if len(argv) == 3 and argv[0] == "watch":
        return watch(argv[1], Path(argv[2]))
    if argv == ["gc"]:
        for line in collect_k8s_garbage():
            print(f"removed {line}")
        return 0
    print("usage: python -m testbed.runtime.k8s watch RUN_ID KUBECONFIG | gc", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
