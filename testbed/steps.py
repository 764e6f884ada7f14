"""Long steps, named: library code says what it is about to wait for, its caller shows it.

A :data:`Step` is called with what the step does and waits for (``"RabbitMQ: apt-get
install rabbitmq-server"``) and used as a context manager around the work. Library
functions take one and stay quiet without it (:func:`quiet`), so tests see no chatter;
the command line passes ``testbed.progress.step`` (a spinner, then a done line with the
seconds). Nothing here imports rich.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

Step = Callable[[str], AbstractContextManager[object]]


def quiet(what: str) -> AbstractContextManager[object]:
    """No output: what library code does when nobody asked to be told."""
    return contextlib.nullcontext()


def logged(say: Callable[[str], None]) -> Step:
    """A step as two plain lines through ``say``: what it waits for, then its seconds (for
    callers that pass a line logger and no step)."""
    @contextlib.contextmanager
    def step(what: str) -> Iterator[None]:
        started = time.monotonic()
        say(f"{what} ...")
        yield
        say(f"{what}: done in {time.monotonic() - started:.1f} s")

    return step
