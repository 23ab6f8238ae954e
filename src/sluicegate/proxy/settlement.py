"""Reserve and settle paired by construction: once a call got past authentication, it is settled
exactly once, whichever way it ends.

`Pipeline.handle` runs stages 2 to 5 inside `Settlement`. A refusal (ProxyError) is settled with
its status and answered in OpenAI's shape; any other error is settled as a 500 (and re-raised
for the routes to answer); a cancelled request is settled in the background as 499. A whole
answer is settled by `Pipeline.forward` before it is returned. A stream is handed over to its
relay (`hand_over`): the relay settles it when it ends, and the relay's response settles it
when the relay never ran (proxy/streaming.py `RelayResponse`). Should a path ever return
without doing either, the settlement settles it on the way out and logs the slip.

Settling twice is impossible rather than avoided: a call's settlement is claimed once
(`ProxyCall.claim_settlement`, by `Pipeline.settle` and its variants before any await).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType

from starlette.responses import Response

from sluicegate.proxy import refusals
from sluicegate.proxy.errors import ProxyError
from sluicegate.proxy.requests import ProxyCall

log = logging.getLogger("sluicegate.proxy")

# What a call the client left is recorded as: nginx's "client closed request"; no answer is sent.
CLIENT_GONE_STATUS = 499
CLIENT_GONE = "client_disconnected"

SettleNow = Callable[..., Awaitable[None]]
SettleLater = Callable[..., None]


class Settlement:
    __slots__ = ("_call", "_handed_over", "_later", "_now", "answer")

    def __init__(self, call: ProxyCall, now: SettleNow, later: SettleLater) -> None:
        self._call = call
        self._now = now
        self._later = later
        self._handed_over = False
        self.answer: Response | None = None

    def hand_over(self, response: Response) -> None:
        """`response` relays a stream and settles it itself (proxy/streaming.py)."""
        self.answer = response
        self._handed_over = True

    async def __aenter__(self) -> Settlement:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> bool:
        call = self._call
        if isinstance(error, ProxyError):
            await self._now(call, status=error.status, error_type=error.error_type)
            self.answer = error.response()
            return True
        if isinstance(error, asyncio.CancelledError):
            self._later(call, status=CLIENT_GONE_STATUS, error_type=CLIENT_GONE)
            return False
        if error is not None:
            failed = refusals.INTERNAL_ERROR  # what routes.py answers
            await self._now(call, status=failed.status, error_type=failed.error_type)
            return False
        if not self._handed_over and not call.settled:
            status = self.answer.status_code if self.answer is not None else 500
            log.error(
                "a proxied call ended without settling; settled on the way out",
                extra={"request_id": call.request_id},
            )
            await self._now(call, status=status)
        return False
