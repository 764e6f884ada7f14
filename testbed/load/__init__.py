"""Layer 5a: open-loop load without coordinated omission."""

from testbed.load.generator import LoadGenerator, LoadSummary
from testbed.load.profile import LoadProfile, LoadSpecError, Step, bursty, constant, stepped

__all__ = ["LoadGenerator", "LoadProfile", "LoadSpecError", "LoadSummary", "Step", "bursty",
           "constant", "stepped"]
