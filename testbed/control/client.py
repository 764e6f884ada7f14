"""Finding a running `testbed up` and calling its controller, from another process."""

from __future__ import annotations

import os
from typing import Any

import requests

from testbed.control.state import UP_STATE, UpState
from testbed.errors import TestbedError
from testbed.runs import known_runs

RUN_ID_VARIABLE = "TESTBED_RUN_ID"


def running_ups() -> dict[str, UpState]:
    """Every `testbed up` whose controller is alive, by run id."""
    found = {}
    for directory, record in known_runs():
        state = directory / UP_STATE
        if record is not None and record.controller_alive() and state.exists():
            found[record.run_id] = UpState.read(state)
    return found


def find_up(run_id: str | None = None) -> UpState:
    """The run named (or named by $TESTBED_RUN_ID), else the only one that is up."""
    run_id = run_id or os.environ.get(RUN_ID_VARIABLE) or None
    ups = running_ups()
    if run_id is not None:
        if run_id not in ups:
            raise TestbedError(f"no running `testbed up` with run id {run_id}; running: "
                               f"{', '.join(sorted(ups)) or 'none'}")
        return ups[run_id]
    if not ups:
        raise TestbedError("nothing is up: start it with `testbed up --detach`")
    if len(ups) > 1:
        raise TestbedError(f"several runs are up ({', '.join(sorted(ups))}): name one "
                           f"(run_id=..., or ${RUN_ID_VARIABLE})")
    return next(iter(ups.values()))


def call(state: UpState, method: str, path: str, timeout_s: float = 120.0,
         **kwargs: Any) -> Any:
    """One API call; the controller's error text when it refuses."""
    try:
        response = requests.request(method, state.control_url + path, timeout=timeout_s,
                                    **kwargs)
    except requests.RequestException as exc:
        raise TestbedError(f"the controller of run {state.run_id} at {state.control_url} "
                           f"does not answer: {exc}") from exc
    body = response.json()
    if response.status_code >= 400:
        raise TestbedError(f"testbed run {state.run_id}: {body.get('error', body)}")
    return body
