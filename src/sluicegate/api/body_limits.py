"""Bounded request bodies on the admin API (/api/...): at most SLUICEGATE_MAX_ADMIN_BODY_BYTES
(1 MiB), and at most ANONYMOUS_BODY_BYTES for a request without credentials (signing in,
accepting an invitation), refused with 413 before anything is parsed: from Content-Length when
it is given, else as soon as the bytes read pass the limit. A body must be JSON (415 otherwise).

The proxy (/v1) bounds its own bodies (SLUICEGATE_MAX_BODY_BYTES) and never passes here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from sluicegate.api.errors import error_response

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# A request that presents no credentials gets this much: a sign-in or an invitation's answer.
ANONYMOUS_BODY_BYTES = 8 * 1024
_WITH_BODY = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class BodyLimits:
    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in _WITH_BODY
            or not scope["path"].startswith("/api/")
        ):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        limit = self.limit if b"authorization" in headers else ANONYMOUS_BODY_BYTES
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _too_large(scope, receive, send, limit)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([message], receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _too_large(scope, receive, send, limit)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        media_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if body and not (media_type == b"application/json" or media_type.endswith(b"+json")):
            response = error_response(
                415,
                "unsupported_media_type",
                "The admin API takes JSON bodies: send Content-Type: application/json.",
            )
            await response(scope, receive, send)
            return
        await self.app(scope, _replay([{"type": "http.request", "body": body}], receive), send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive that gives what was read already, then what the client sends next (its
    disconnect)."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


async def _too_large(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    response = error_response(
        413,
        "request_too_large",
        f"The request body is larger than this endpoint accepts ({limit} bytes).",
        {"limit_bytes": limit},
    )
    await response(scope, receive, send)
