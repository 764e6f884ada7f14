"""``python -m testbed.load``: the load engine's child process (see engine.py)."""

import sys

from testbed.load.engine import main

sys.exit(main())
