"""How the command line shows long work: what it waits for, as it goes, and how long it took.

The one module that imports rich; library code takes a ``testbed.steps.Step`` and stays
quiet without one. On a terminal a step is a spinner line with its elapsed time, replaced
by a done line; anywhere else (a CI log, a pipe) it is plain lines, one per event, with
no control codes: rich's Console detects which, and the plain path never starts a Live.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TextIO

from rich import box
from rich.console import Console, RenderableType
from rich.live import Live
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

_CONSOLES: dict[bool, Console] = {}
_LIVE = threading.Lock()  # rich allows one live display at a time: others print plain


def console(stderr: bool = False) -> Console:
    """The console of stdout (or stderr): one per stream, so lines printed while a spinner
    runs go above it. It follows sys.stdout as it is at each write (pytest swaps it)."""
    if stderr not in _CONSOLES:
        _CONSOLES[stderr] = Console(stderr=stderr, highlight=False, soft_wrap=True)
    return _CONSOLES[stderr]


def say(line: str, stderr: bool = False) -> None:
    """A plain line (no markup: brackets and paths print as they are)."""
    console(stderr).print(Text(line))


def _done_line(what: str, seconds: float, failed: bool) -> Text:
    if failed:
        return Text.assemble((f"{what}: failed", "bold red"), f" after {seconds:.1f} s")
    return Text.assemble(f"{what}: ", ("done", "green"), f" in {seconds:.1f} s")


@contextlib.contextmanager
def step(what: str, stderr: bool = False) -> Iterator[None]:
    """Show ``what`` (what the step does and waits for) while the block runs, then a line
    with its seconds; a testbed.steps.Step. On stderr for commands whose stdout is parsed
    (``up --detach --json``)."""
    out = console(stderr)
    started = time.monotonic()
    spinner: Progress | None = None
    if out.is_terminal and _LIVE.acquire(blocking=False):
        spinner = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                           TimeElapsedColumn(), console=out, transient=True)
        spinner.add_task(what, total=None)
        spinner.start()
    else:
        out.print(Text(f"{what} ..."))
    failed = True
    try:
        yield
        failed = False
    finally:
        if spinner is not None:
            spinner.stop()
            _LIVE.release()
        out.print(_done_line(what, time.monotonic() - started, failed))


# -- the suite (`testbed run`) ---------------------------------------------------------------

VERDICT_STYLES = {"running": "cyan", "passed": "green", "failed": "bold red",
                  "aborted": "bold yellow", "skipped": "dim"}


@dataclass(frozen=True)
class Row:
    """One experiment as the suite display shows it."""

    name: str
    verdict: str  # running | passed | failed | aborted | skipped
    seconds: float
    tests: str  # "2 of 3 done", "3 passed", "2 passed, 1 failed"


def _verdict(verdict: str) -> Text:
    return Text(verdict, style=VERDICT_STYLES.get(verdict, ""))


class SuiteDisplay:
    """The experiments of a suite as they run: on a terminal a live table (a spinner and
    the elapsed seconds per running experiment); elsewhere one plain line per event. Ends
    with a table of every experiment, its verdict and its seconds."""

    def __init__(self, file: TextIO, rows: Callable[[], list[Row]]) -> None:
        self.console = Console(file=file, highlight=False, soft_wrap=True)
        self._rows = rows
        self._live: Live | None = None

    @property
    def live(self) -> bool:
        return self.console.is_terminal

    def start(self) -> None:
        if self.live and self._live is None:
            self._live = Live(console=self.console, get_renderable=self._render,
                              refresh_per_second=4, redirect_stdout=False,
                              redirect_stderr=False, transient=True)
            self._live.start()

    def event(self, line: str, always: bool = False) -> None:
        """A line for logs (on a terminal the live table says it, unless ``always``)."""
        if not self.live or always:
            self.console.print(Text(line))

    def _render(self) -> RenderableType:
        table = Table(box=None, show_header=False, pad_edge=False)
        for row in self._rows():
            mark: RenderableType = (Spinner("dots", style="cyan") if row.verdict == "running"
                                    else _verdict("*" if row.verdict == "passed" else "!"))
            table.add_row(mark, row.name, _verdict(row.verdict), row.tests,
                          f"{row.seconds:.0f} s")
        return table

    def close(self) -> None:
        """Stop the live table and print the closing one."""
        if self._live is not None:
            self._live.stop()
            self._live = None
        rows = self._rows()
        if not rows:
            return
        table = Table(title="experiments", box=box.SIMPLE_HEAD, show_edge=False,
                      title_justify="left")
        table.add_column("experiment")
        table.add_column("verdict")
        table.add_column("tests")
        table.add_column("seconds", justify="right")
        for row in rows:
            table.add_row(row.name, _verdict(row.verdict), row.tests, f"{row.seconds:.1f}")
        self.console.print(table)
