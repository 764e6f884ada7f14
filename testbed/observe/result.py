"""The result of one run: requests, samples and events as DataFrames, saved and reloaded.

Saved as CSV (pandas reads it everywhere, no extra engine) plus meta.json, so a report
can be rebuilt from a finished run without rerunning it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from testbed.analysis.frames import events_frame as analysis_events_frame
from testbed.faults.timeline import Timeline

LEDGER_COLUMNS = ["service", "order_id", "count"]
_FRAMES = ("requests", "samples", "events", "ledgers")
SPANS_CSV = "spans.csv"  # only a traced run has it


def events_frame(timeline: Timeline) -> pd.DataFrame:
    """A timeline's events with times relative to its origin."""
    return analysis_events_frame(timeline.events, timeline.origin)


@dataclass
class RunResult:
    """Everything measured in one run of one topology, on one timeline."""

    name: str
    requests: pd.DataFrame
    samples: pd.DataFrame
    events: pd.DataFrame
    ledgers: pd.DataFrame  # what each service processed, for the loss/duplicate audit
    meta: dict[str, Any] = field(default_factory=dict)
    # A traced run's spans (testbed.observe.spans.SPAN_COLUMNS); empty when not traced.
    spans: pd.DataFrame = field(default_factory=pd.DataFrame)

    def processed(self, service: str) -> dict[str, int]:
        rows = self.ledgers[self.ledgers["service"] == service]
        return dict(zip(rows["order_id"], rows["count"].astype(int), strict=True))

    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        for frame in _FRAMES:
            getattr(self, frame).to_csv(directory / f"{frame}.csv", index=False)
        if not self.spans.empty:
            self.spans.to_csv(directory / SPANS_CSV, index=False)
        (directory / "meta.json").write_text(json.dumps({"name": self.name, **self.meta},
                                                        indent=2, default=str))
        return directory

    @classmethod
    def load(cls, directory: Path) -> RunResult:
        meta = json.loads((directory / "meta.json").read_text())
        frames = {}
        for frame in _FRAMES:
            loaded = pd.read_csv(directory / f"{frame}.csv", keep_default_na=False,
                                 na_values={"latency_s": [""], "waited_s": [""], "t_sent": [""],
                                            "value": [""]})
            frames[frame] = loaded
        spans = (pd.read_csv(directory / SPANS_CSV, keep_default_na=False,
                             dtype={"parent_id": str, "trace_id": str, "span_id": str})
                 if (directory / SPANS_CSV).exists() else pd.DataFrame())
        return cls(meta.pop("name"), frames["requests"], frames["samples"], frames["events"],
                   frames["ledgers"], meta, spans)


def ledgers_frame(ledgers: dict[str, dict[str, int]]) -> pd.DataFrame:
    rows = [(service, order, count) for service, ledger in ledgers.items()
            for order, count in ledger.items()]
    return pd.DataFrame(rows, columns=LEDGER_COLUMNS)
