"""Write compose/{sync,async,paired}/ from the docker runtime's own plan functions.

Run: ``.venv/bin/python compose/generate.py`` (tests/integration/test_docker_runtime.py
fails when the committed files differ from what this writes).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from testbed.runtime.docker import write_compose
from testbed.topology import async_pipeline, paired, sync_chain

HERE = Path(__file__).resolve().parent
SHAPES = {
    "sync": lambda: [sync_chain()],
    "async": lambda: [async_pipeline()],
    "paired": lambda: list(paired()),
}


def main() -> int:
    for shape, build in SHAPES.items():
        directory = HERE / shape
        shutil.rmtree(directory, ignore_errors=True)
        for path in write_compose(directory, build()):
            print(path.relative_to(HERE))
    return 0


if __name__ == "__main__":
    sys.exit(main())
