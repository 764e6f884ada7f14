"""The exception tree of the testbed.

TestbedError                 root: everything the testbed raises on purpose
+-- TopologyError            a topology description is invalid (names the field and the fix)
+-- RuntimeNotFoundError     an unknown runtime name was asked for
+-- ComponentError           an external component misbehaved
|   +-- MissingBinaryError   a required program is not installed (says how to install it)
|   +-- StartupError         a component or service did not become ready in time (log tail)
|   +-- ToxiproxyError       the Toxiproxy API refused or did not answer
|   +-- BrokerError          the RabbitMQ node or its management API failed
+-- PortInUseError           a fixed port asked for is taken
+-- StateError               an object was used in the wrong lifecycle state

Errors from third-party libraries are converted at the adapter boundary with
``raise ... from`` so callers only ever need to catch TestbedError.
"""

from __future__ import annotations


class TestbedError(Exception):
    """Root of every error the testbed raises on purpose."""

    __test__ = False  # not a pytest test class, despite the name


class TopologyError(TestbedError, ValueError):
    """A topology is invalid: the message names the field, the problem and the fix."""

    def __init__(self, field: str, problem: str, fix: str) -> None:
        self.field = field
        self.problem = problem
        self.fix = fix
        super().__init__(f"topology field {field!r}: {problem}. Fix: {fix}")


class RuntimeNotFoundError(TestbedError):
    """An unknown runtime backend was requested."""


class ComponentError(TestbedError):
    """An external component (binary, server, service process) misbehaved."""


class MissingBinaryError(ComponentError):
    """A required program is not installed."""

    def __init__(self, program: str, looked_in: str, install_hint: str) -> None:
        self.program = program
        self.install_hint = install_hint
        super().__init__(
            f"{program} not found (looked in {looked_in}). Install it: {install_hint}"
        )


class StartupError(ComponentError):
    """Something did not become ready in time; carries the tail of its log."""

    def __init__(self, what: str, detail: str, log_tail: str = "") -> None:
        self.what = what
        self.log_tail = log_tail
        message = f"{what} did not become ready: {detail}"
        if log_tail:
            message += f"\n--- last log lines of {what} ---\n{log_tail}"
        super().__init__(message)


class ToxiproxyError(ComponentError):
    """The Toxiproxy server refused a request or did not answer."""


class BrokerError(ComponentError):
    """The RabbitMQ node or its management API failed."""


class PortInUseError(TestbedError):
    """A fixed port requested by a topology or option is already taken."""

    def __init__(self, port: int, owner: str) -> None:
        self.port = port
        super().__init__(
            f"port {port} on 127.0.0.1 (asked for by {owner}) is already in use. "
            "Fix: choose a free port, or leave the port out so the testbed allocates one"
        )


class StateError(TestbedError):
    """An object was used in a lifecycle state that does not allow the call."""


class ExperimentAborted(TestbedError):
    """The testbed itself failed mid-experiment (its broker or Toxiproxy died): what was
    measured says nothing about the system under test, so the run has no verdict."""

    def __init__(self, problem: str, when: str) -> None:
        self.problem = problem
        self.when = when
        super().__init__(f"experiment ABORTED {when}: {problem}. The testbed failed, not the "
                         "system under test: no verdict. Fix: read why it died in its log "
                         "(local runtime: logs/ in the run directory under $TMPDIR/testbed-"
                         "state; docker: `docker logs`), then run again")
