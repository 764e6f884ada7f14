"""Reports from a real run: built, rebuilt identically, and rendered in headless Chromium
(every chart image must load, the verdict table must be there; a screenshot is kept)."""

from __future__ import annotations

import functools
import http.server
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.analysis import Hypotheses, at_least, equals
from testbed.faults import Planned, make_fault
from testbed.load import constant
from testbed.observe import run_trial
from testbed.report.suite_report import save_outcomes, write_reports
from testbed.report.verdicts import save_verdicts
from testbed.topology import Knobs, async_pipeline, sync_chain

from .conftest import Deploy

pytestmark = pytest.mark.local_only

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--hide-scrollbars"]
EXPERIMENT = "e99-report-check"
TEST = "experiments/test_e99_report_check.py::test_outage"
HARNESS = """<!doctype html><html><body><pre id="result">pending</pre>
<iframe id="report" src="{page}" width="1100" height="900"></iframe>
<script>
document.getElementById('report').addEventListener('load', function () {{
  var doc = this.contentDocument;
  var images = Array.from(doc.querySelectorAll('img.chart'));
  var loaded = images.filter(function (i) {{ return i.complete && i.naturalWidth > 0; }});
  var table = doc.querySelector('table#verdicts');
  var rows = table ? table.querySelectorAll('tr').length - 1 : 0;
  document.getElementById('result').textContent =
    'images=' + images.length + ' loaded=' + loaded.length + ' verdict_rows=' + rows;
}});
</script></body></html>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("no Chromium on PATH: install Debian's chromium (make test does it)")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """An HTTP server on 127.0.0.1 over a folder, for the browser to load pages from."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def make_results(deploy: Deploy, report_dir: Path) -> None:
    """A real outage on both shapes, saved as an experiment would save it."""
    for name, topology, link in (("sync", sync_chain(1, knobs=Knobs(timeout_s=0.5)),
                                  "gateway-orders"),
                                 ("async", async_pipeline(1), "payments-broker")):
        deployment = deploy(topology)
        plan = [Planned(make_fault(deployment, "link_down", link), at=1.0, duration=1.0)]
        result = run_trial(deployment, constant(10, 3), plan, tail_s=0.5)
        result.save(report_dir / "runs" / EXPERIMENT / name)
        hypotheses = Hypotheses(f"{name}: payments unreachable for 1 s")
        hypotheses.check(at_least("orders placed", 25, len(result.requests), unit="orders"))
        hypotheses.check(equals("async edge errors", 0,
                                int((~result.requests["ok"]).sum()) if name == "async" else 0))
        save_verdicts(report_dir, TEST, hypotheses)
    save_outcomes(report_dir, {TEST: "passed"})


def test_reports_render_in_chromium_and_rebuild_identically(
        deploy: Deploy, served: tuple[Path, str], request: pytest.FixtureRequest) -> None:
    report_dir, base_url = served
    make_results(deploy, report_dir)
    first = write_reports(report_dir, record_history=True)
    html = (report_dir / EXPERIMENT / "report.html").read_text()
    markdown = (report_dir / EXPERIMENT / "report.md").read_text()
    assert [r.name for r in first.experiments] == [EXPERIMENT]
    assert "gateway-orders" in markdown and "| sync |" in markdown
    again = write_reports(report_dir)  # a rebuild from the saved files
    assert (report_dir / EXPERIMENT / "report.html").read_text() == html
    assert (report_dir / EXPERIMENT / "report.md").read_text() == markdown
    assert again.index.read_text() == first.index.read_text()
    assert 'property name="sync: payments unreachable for 1 s | orders placed | measured"' \
        in first.junit.read_text()

    (report_dir / "harness.html").write_text(HARNESS.format(page=f"{EXPERIMENT}/report.html"))
    dom = subprocess.run([chromium(), *CHROMIUM_FLAGS, "--virtual-time-budget=10000",
                          "--dump-dom", f"{base_url}/harness.html"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert "images=2 loaded=2 verdict_rows=4" in dom, dom[:500]

    artifacts = Path(request.config.getoption("--report-dir")) / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    screenshot = artifacts / "report-screenshot.png"
    subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--screenshot={screenshot}",
                    "--window-size=1100,2600", f"{base_url}/{EXPERIMENT}/report.html"],
                   capture_output=True, timeout=120, check=True)
    assert screenshot.stat().st_size > 10_000
