"""The report layer: verdicts kept per test, and the suite summary built from them."""

from testbed.report.verdicts import load_verdicts, save_verdicts, suite_summary

__all__ = ["load_verdicts", "save_verdicts", "suite_summary"]
