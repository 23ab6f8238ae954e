"""ASGI middleware around every HTTP request: request id, access log line, Prometheus samples.

Plain ASGI rather than BaseHTTPMiddleware, so streaming responses pass through untouched and
the per-request cost stays a few dictionary operations.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import MutableMapping
from typing import Any

import orjson

from sluicegate.core.ids import new_id
from sluicegate.core.logs import REQUEST_ID
from sluicegate.core.metrics import HTTP_LATENCY, HTTP_REQUESTS

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Any

# A caller-supplied id is kept when it is short and plain, so it can be traced end to end. At
# most 40 characters: it becomes the usage row's request id (40 wide); a
# longer one would make the usage row unstorable.
_ACCEPTABLE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,40}$")
# Probes and scrapes arrive every few seconds; their access lines would drown the real traffic.
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
# Headers beyond this many bytes (names and values) are refused with 431: no client of an API
# needs more, and each request's headers are held in memory whole.
MAX_HEADER_BYTES = 32 * 1024
# A path that matched no route is recorded under one label, so scanners cannot explode cardinality.
UNMATCHED_ROUTE = "unmatched"

# Path segments logged as "***": credentials (an invitation's token in its accept URL, a key or
# token pasted into a URL by mistake) and anything long and random enough to be one. Ids such as
# org_01jd4k... are shorter.
_SECRET_SEGMENT = re.compile(r"^(?:sg-|sk-|whsec_)|^[A-Za-z0-9_~.+/=-]{32,}$")

access_log = logging.getLogger("sluicegate.access")


def logged_path(path: str) -> str:
    """The request path as access lines show it: secret-looking segments replaced by ***."""
    if len(path) < 32 and "sg-" not in path and "sk-" not in path and "whsec_" not in path:
        return path  # the common case, short and plain: no split
    return "/".join("***" if _SECRET_SEGMENT.match(part) else part for part in path.split("/"))


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming, refusal = _read_headers(scope)
        request_id = incoming or new_id("req")
        scope.setdefault("state", {})["request_id"] = request_id
        token = REQUEST_ID.set(request_id)
        header = (b"x-request-id", request_id.encode())
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            if refusal is None:
                await self.app(scope, receive, send_with_id)
            else:
                await _refuse(send_with_id, *refusal)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED_ROUTE
            method = scope["method"]
            HTTP_REQUESTS.labels(method, template, str(status)).inc()
            HTTP_LATENCY.labels(method, template, str(status)).observe(elapsed)
            level = logging.DEBUG if scope["path"] in _QUIET_PATHS else logging.INFO
            if access_log.isEnabledFor(level):
                access_log.log(
                    level,
                    "%s %s %d",
                    method,
                    logged_path(scope["path"]),
                    status,
                    extra={
                        "route": template,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                    },
                )
            REQUEST_ID.reset(token)


def _read_headers(scope: Scope) -> tuple[str | None, tuple[int, str, str] | None]:
    """In one pass over the headers: the caller's request id when it is acceptable, and
    (status, code, message) when the headers are ones no endpoint takes: too many bytes of
    them, or a body in an encoding nothing here decodes (it would be read as if plain)."""
    request_id: str | None = None
    refusal: tuple[int, str, str] | None = None
    seen_id = False
    size = 0
    for name, value in scope["headers"]:
        size += len(name) + len(value)
        if name == b"x-request-id" and not seen_id:  # the first one counts
            seen_id = True
            text = value.decode("latin-1")
            request_id = text if _ACCEPTABLE_REQUEST_ID.match(text) else None
        elif name == b"content-encoding" and value.strip().lower() not in (b"", b"identity"):
            refusal = (
                415,
                "unsupported_content_encoding",
                (
                    "Request bodies are taken as sent: leave out Content-Encoding "
                    f"({value.decode('latin-1')[:40]!r} is not decoded here)."
                ),
            )
    if size > MAX_HEADER_BYTES:
        refusal = (
            431,
            "headers_too_large",
            (
                f"The request's headers are larger than this gateway accepts ({MAX_HEADER_BYTES} "
                "bytes)."
            ),
        )
    return request_id, refusal


async def _refuse(send: Any, status: int, code: str, message: str) -> None:
    body = orjson.dumps(
        {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    )
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
