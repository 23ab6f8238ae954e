"""The streaming response that always closes its relay, so settlement runs exactly once: by the
relay's own `finally` once it ran, by `never_relayed` when it never did (proxy/settlement.py)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class RelayResponse(StreamingResponse):
    def __init__(
        self,
        relay: AsyncGenerator[bytes, Any],
        headers: dict[str, str] | None,
        never_relayed: Callable[[], Awaitable[None]],
    ) -> None:
        super().__init__(
            relay, media_type="text/event-stream", headers={**SSE_HEADERS, **(headers or {})}
        )
        self._relay = relay
        self._never_relayed = never_relayed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # A disconnect cancels the send loop and may leave the relay suspended at a yield;
            # closing it runs its `finally` (upstream closed, usage settled) now, not at GC. A
            # relay that never started has no `finally` to run: the call is settled here.
            await self._relay.aclose()
            await self._never_relayed()
