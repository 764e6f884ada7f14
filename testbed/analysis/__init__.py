"""Layer 6: analysis and hypotheses. Pandas frames in, numbers out, verdicts after.

``frames``      the documented schemas of the requests, samples and events frames
``metrics``     windowed percentiles, error rate, peaks and rates, detection and
                recovery times, fault windows, ledger audits
``hypotheses``  predictions checked against measurements, carried into reports
"""

from testbed.analysis.frames import (
    EVENTS,
    REQUESTS,
    SAMPLES,
    AnalysisError,
    Column,
    FrameError,
    Schema,
    events_frame,
)
from testbed.analysis.hypotheses import (
    Hypotheses,
    HypothesisFailed,
    Verdict,
    at_least,
    at_most,
    close_to,
    equals,
    never,
)
from testbed.analysis.metrics import (
    Audit,
    FaultWindow,
    between,
    drain_rate,
    error_rate,
    fault_windows,
    growth_rate,
    ledger_audit,
    peak,
    percentile,
    series,
    time_to_detect,
    time_to_recover,
    windowed_latency,
)

__all__ = [
    "EVENTS",
    "REQUESTS",
    "SAMPLES",
    "AnalysisError",
    "Audit",
    "Column",
    "FaultWindow",
    "FrameError",
    "Hypotheses",
    "HypothesisFailed",
    "Schema",
    "Verdict",
    "at_least",
    "at_most",
    "between",
    "close_to",
    "drain_rate",
    "equals",
    "error_rate",
    "events_frame",
    "fault_windows",
    "growth_rate",
    "ledger_audit",
    "never",
    "peak",
    "percentile",
    "series",
    "time_to_detect",
    "time_to_recover",
    "windowed_latency",
]
