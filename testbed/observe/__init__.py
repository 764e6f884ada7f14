"""Layer 5b: sampling what operators would watch, and the result of a run."""

from testbed.observe.result import RunResult, events_frame, ledgers_frame
from testbed.observe.sampler import Sampler
from testbed.observe.trial import run_trial

__all__ = ["RunResult", "Sampler", "events_frame", "ledgers_frame", "run_trial"]
