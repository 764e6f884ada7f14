"""The JSON request/reply types every service route uses (kept apart from the server so
the router, the chaos switch and the handlers can all import them)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Environ = dict[str, Any]
StartResponse = Callable[..., Any]


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any


Handler = Callable[[Environ], Reply]


def read_json(environ: Environ) -> Any:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    raw = environ["wsgi.input"].read(length) if length else b""
    return json.loads(raw or b"null")
