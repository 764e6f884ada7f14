"""JUnit XML for CI: one test case per experiment test, every hypothesis as properties
(predicted, measured, verdict), so a CI dashboard keeps the numbers, not just pass/fail."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd

JUNIT_FILE = "junit.xml"


def junit_xml(verdicts: pd.DataFrame, outcomes: dict[str, str]) -> str:
    tests = sorted(set(outcomes) | set(verdicts["test"]))
    failures = sum(1 for t in tests if outcomes.get(t, "passed") == "failed")
    errors = sum(1 for t in tests if outcomes.get(t, "").startswith("aborted"))
    suite = ET.Element("testsuite", name="testbed experiments", tests=str(len(tests)),
                       failures=str(failures), errors=str(errors), skipped=str(
                           sum(1 for t in tests if outcomes.get(t) == "skipped")))
    for test in tests:
        module, _, name = test.partition("::")
        case = ET.SubElement(suite, "testcase", classname=module.removesuffix(".py")
                             .replace("/", "."), name=name or module)
        rows = verdicts[verdicts["test"] == test]
        if len(rows):
            properties = ET.SubElement(case, "properties")
            for row in rows.itertuples():
                key = f"{row.title} | {row.name}"
                for suffix, value in (("predicted", row.predicted),
                                      ("measured", row.measured),
                                      ("verdict", "holds" if row.passed else "fails")):
                    ET.SubElement(properties, "property", name=f"{key} | {suffix}",
                                  value=str(value))
        outcome = outcomes.get(test, "passed")
        if outcome == "failed":
            failed = rows[~rows["passed"]] if len(rows) else rows
            message = "; ".join(failed["finding"]) if len(failed) else "test failed"
            ET.SubElement(case, "failure", message=message[:2000])
        elif outcome == "skipped":
            ET.SubElement(case, "skipped")
        elif outcome.startswith("aborted"):  # the testbed failed: an error, not a verdict
            ET.SubElement(case, "error", type="ExperimentAborted",
                          message=outcome.removeprefix("aborted: ")[:2000])
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True)


def write_junit(report_dir: Path, verdicts: pd.DataFrame, outcomes: dict[str, str]) -> Path:
    path = report_dir / JUNIT_FILE
    path.write_text(junit_xml(verdicts, outcomes))
    return path
