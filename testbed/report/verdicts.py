"""Every experiment's verdicts, saved per test as CSV and gathered into a suite summary.

Each test writes its own file (pytest-xdist runs tests in several processes, so there is
no shared object to append to); the summary is built from the files afterwards, which
also means it can be rebuilt from a finished run without rerunning anything.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from testbed.analysis.hypotheses import MODEL, Hypotheses, format_number

VERDICTS_DIR = "verdicts"
SUMMARY_FILE = "summary.md"
COLUMNS = ["experiment", "test", "title", "name", "claim", "predicted", "measured",
           "tolerance_text", "passed", "finding", "source"]


def _safe(test: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", test).strip("_")


def experiment_of(test: str) -> str:
    """The experiment a test belongs to when it did not say: its file's stem, as the
    experiment API names it (``experiments/test_e02_outage.py::t`` -> ``e02-outage``)."""
    stem = Path(test.split("::", 1)[0]).stem.removeprefix("test_")
    return stem.replace("_", "-").lower()


def save_verdicts(report_dir: Path, test: str, hypotheses: Hypotheses,
                  experiment: str | None = None) -> Path:
    """Append one Hypotheses' verdicts to the test's file under report_dir/verdicts/,
    under ``experiment`` (the name its runs are saved under; default: from the test)."""
    frame = hypotheses.to_frame()
    frame.insert(0, "title", hypotheses.title)
    frame.insert(0, "test", test)
    frame.insert(0, "experiment", experiment or experiment_of(test))
    path = report_dir / VERDICTS_DIR / f"{_safe(test)}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame[COLUMNS].to_csv(path, mode="a", header=not path.exists(), index=False)
    return path


def load_verdicts(report_dir: Path) -> pd.DataFrame:
    """All saved verdicts, ordered by test (an empty frame if there are none)."""
    files = sorted((report_dir / VERDICTS_DIR).glob("*.csv"))
    if not files:
        return pd.DataFrame(columns=COLUMNS)
    frame = pd.concat([pd.read_csv(f, keep_default_na=False) for f in files],
                      ignore_index=True)
    frame["passed"] = frame["passed"].astype(str).str.lower() == "true"
    if "source" not in frame:  # saved before verdicts named where a prediction is from
        frame["source"] = ""
    if "experiment" not in frame:  # saved before verdicts named their experiment
        frame.insert(0, "experiment", frame["test"].map(experiment_of))
    return frame.sort_values("test", kind="stable").reset_index(drop=True)


def _number(value: object) -> str:
    """Numbers as the hypotheses print them (CSV gives them back as float or text)."""
    try:
        return format_number(float(str(value)))
    except ValueError:
        return str(value)


def suite_summary(verdicts: pd.DataFrame, outcomes: dict[str, str] | None = None,
                  links: dict[str, str] | None = None) -> str:
    """Markdown: one section per experiment module, each hypothesis with predicted vs
    measured and its verdict; ``outcomes`` (test id -> passed/failed) adds test results,
    ``links`` (experiment name -> its incident report) links each section to its report."""
    aborted = {t: o.removeprefix("aborted: ") for t, o in (outcomes or {}).items()
               if o.startswith("aborted")}
    lines = ["# Experiment suite", ""]
    if aborted:
        lines += [f"**{len(aborted)} test(s) ABORTED**: the testbed failed under them, so "
                  "they have no verdict.", ""]
        lines += [f"- `{test}`: {reason}" for test, reason in sorted(aborted.items())] + [""]
    if verdicts.empty:
        return "\n".join([*lines, "No verdicts were recorded.", ""])
    held = int(verdicts["passed"].sum())
    lines += [f"{held} of {len(verdicts)} hypotheses hold"
              f" across {verdicts['test'].nunique()} tests.", ""]
    for experiment, group in verdicts.groupby("experiment", sort=True):
        link = (links or {}).get(str(experiment))
        lines += [f"## [{experiment}]({link})" if link else f"## {experiment}", ""]
        for title, rows in group.groupby("title", sort=False):
            lines += [f"**{title}**", "", "| hypothesis | predicted | measured | verdict |",
                      "|---|---|---|---|"]
            for row in rows.itertuples():
                verdict = "holds" if row.passed else "**does NOT hold**"
                tolerance = f" ({row.tolerance_text})" if row.tolerance_text else ""
                source = "model: " if getattr(row, "source", "") == MODEL else ""
                lines.append(f"| {row.name} | {source}{_number(row.predicted)}{tolerance} | "
                             f"{_number(row.measured)} | {verdict} |")
            lines.append("")
    if outcomes:
        failed = sorted(t for t, outcome in outcomes.items()
                        if outcome != "passed" and t not in aborted)
        lines += ["## Tests", "", f"{len(outcomes) - len(failed) - len(aborted)} of "
                  f"{len(outcomes)} passed." + ("" if not failed else " Failed: "
                                                + ", ".join(failed))
                  + ("" if not aborted else " Aborted: " + ", ".join(sorted(aborted))), ""]
    return "\n".join(lines)
