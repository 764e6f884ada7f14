"""``python -m testbed.images build``: the same as ``testbed images build``."""

import sys

from testbed.images import images_main

sys.exit(images_main(sys.argv[1:]))
