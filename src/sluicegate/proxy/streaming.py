"""The streaming response that always closes its relay, so settlement runs exactly once."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class RelayResponse(StreamingResponse):
    def __init__(
        self, relay: AsyncGenerator[bytes, Any], headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(
            relay, media_type="text/event-stream", headers={**SSE_HEADERS, **(headers or {})}
        )
        self._relay = relay

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # A disconnect cancels the send loop and may leave the relay suspended at a yield;
            # closing it runs its `finally` (upstream closed, usage settled) now, not at GC.
            await self._relay.aclose()
