"""The controller's HTTP API on 127.0.0.1, served by `testbed up` beside its deployments.

    GET    /state                       the run's addresses (UpState)
    GET    /faults                      the faults injected through the API, still active
    POST   /faults                      {"topology", "fault", "target", "params", "verify"}
    DELETE /faults/<id>                 remove one
    DELETE /faults?topology=&fault=&target=   remove those (a rollback's way)
    POST   /probes/edge                 {"topology", "rate", "duration_s", "timeout_s"}
    GET    /probes/queues?topology=     each queue's ready count
    POST   /probes/lost                 {"topology", "wait_s"}

Errors are JSON {"error": "..."}: 400 for a request that names something wrong, 409 when
a fault was injected and showed no effect, 500 for anything else.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict
from typing import Any
from urllib.parse import parse_qs

from waitress.server import create_server

from testbed.control.controller import ControlError, Controller
from testbed.control.state import UpState
from testbed.faults.base import FaultNotEffective, FaultSpecError
from testbed.services.reply import Environ, StartResponse, read_json

_REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 404: "Not Found",
            409: "Conflict", 500: "Internal Server Error"}


def _query(environ: Environ) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _body(environ: Environ) -> dict[str, Any]:
    data = read_json(environ)
    if not isinstance(data, dict):
        raise ControlError("the request body must be a JSON object")
    return data


def _need(data: dict[str, Any], key: str) -> Any:
    if key not in data:
        raise ControlError(f"{key!r} is missing from the request")
    return data[key]


def make_app(controller: Controller, state: Callable[[], UpState]) -> Callable[..., Any]:
    """The WSGI app: routes over the controller, JSON in and out."""

    def route(method: str, path: str, environ: Environ) -> tuple[int, Any]:
        if (method, path) == ("GET", "/state"):
            return 200, asdict(state())
        if (method, path) == ("GET", "/faults"):
            return 200, [asdict(a) for a in controller.active()]
        if (method, path) == ("POST", "/faults"):
            data = _body(environ)
            params = data.get("params") or {}
            if not isinstance(params, dict):
                raise ControlError("'params' must be a JSON object")
            active = controller.inject(_need(data, "topology"), _need(data, "fault"),
                                       data.get("target", ""), dict(params),
                                       bool(data.get("verify", True)))
            return 201, asdict(active)
        if method == "DELETE" and path.startswith("/faults/"):
            return 200, asdict(controller.remove(path.removeprefix("/faults/")))
        if (method, path) == ("DELETE", "/faults"):
            query = _query(environ)
            removed = controller.remove_matching(_need(query, "topology"),
                                                 _need(query, "fault"), query.get("target", ""))
            return 200, [asdict(a) for a in removed]
        if (method, path) == ("POST", "/probes/edge"):
            data = _body(environ)
            probe = controller.edge(_need(data, "topology"), data.get("rate", 20.0),
                                    data.get("duration_s", 2.0), data.get("timeout_s", 5.0))
            return 200, asdict(probe)
        if (method, path) == ("GET", "/probes/queues"):
            return 200, controller.queues(_need(_query(environ), "topology"))
        if (method, path) == ("POST", "/probes/lost"):
            data = _body(environ)
            return 200, asdict(controller.lost(_need(data, "topology"),
                                               data.get("wait_s", 30.0)))
        return 404, {"error": f"no route {method} {path}; see testbed/control/api.py"}

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        try:
            status, body = route(method, path, environ)
        except (ControlError, FaultSpecError, ValueError) as exc:
            status, body = 400, {"error": str(exc)}
        except FaultNotEffective as exc:
            status, body = 409, {"error": str(exc)}
        except Exception as exc:
            status, body = 500, {"error": f"{type(exc).__name__}: {exc}"}
        payload = json.dumps(_finite(body), default=str).encode()
        start_response(f"{status} {_REASONS.get(status, 'Error')}",
                       [("Content-Type", "application/json"),
                        ("Content-Length", str(len(payload)))])
        return [payload]

    return app


def _finite(body: Any) -> Any:
    """NaN (a percentile of no answers) as null: JSON has no NaN."""
    if isinstance(body, float):
        return None if math.isnan(body) else body
    if isinstance(body, dict):
        return {k: _finite(v) for k, v in body.items()}
    if isinstance(body, list | tuple):
        return [_finite(v) for v in body]
    return body


class ControlServer:
    """The API served by waitress on 127.0.0.1:``port`` in a thread of the `up` process."""

    def __init__(self, app: Callable[..., Any], port: int) -> None:
        self._server = create_server(app, host="127.0.0.1", port=port, threads=4)
        self.port = port
        self._thread = threading.Thread(target=self._server.run, name="control-api",
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ControlServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.close()
