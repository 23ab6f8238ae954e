"""The buffered usage writer: the proxy hands over an event and moves on; batches are inserted
in the background, idempotently on request id. No database round trip on the response path.

Durability here is "in memory until the next flush" (a fraction of a second); the durable
pipeline (Redis stream, drain worker) replaces this buffer's role in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import insert
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.expression import Executable

from sluicegate.metering.models import UsageEvent

UsageRecord = dict[str, Any]
# Runs after a batch is committed, in a transaction of its own (e.g. to stamp keys' last use);
# its failure is logged and never holds back or repeats the usage rows themselves.
AfterInsert = Callable[[AsyncSession, list[UsageRecord]], Awaitable[None]]

# A batch this large is written at once; smaller ones wait at most FLUSH_INTERVAL_SECONDS.
BATCH_SIZE = 500
FLUSH_INTERVAL_SECONDS = 0.2
# After a failed write the batch is kept and retried after this pause.
RETRY_DELAY_SECONDS = 1.0
# Above this many unwritten events the oldest are dropped (and counted): memory must stay bounded
# even when the database is down for long.
MAX_BUFFERED = 200_000

log = logging.getLogger("sluicegate.metering")


class UsageWriter:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], after_insert: AfterInsert | None = None
    ) -> None:
        self._sessions = sessions
        self._after_insert = after_insert
        self._buffer: list[UsageRecord] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.dropped = 0
        self.written = 0

    def record(self, event: UsageRecord) -> None:
        """Queue one usage event (a dict of UsageEvent columns). Never blocks, never raises."""
        self._buffer.append(event)
        if len(self._buffer) > MAX_BUFFERED:
            overflow = len(self._buffer) - MAX_BUFFERED
            del self._buffer[:overflow]
            self.dropped += overflow
            log.error("usage buffer full; dropped oldest events", extra={"dropped": overflow})
        if len(self._buffer) >= BATCH_SIZE:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    async def start(self) -> None:
        if self._task is None:
            self._closing = False
            self._task = asyncio.create_task(self._run(), name="usage-writer")

    async def close(self) -> None:
        """Write what is buffered (one last attempt), then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._buffer:
            await self.flush()

    async def flush(self) -> bool:
        """Write everything buffered now; False (events kept) when the database refused."""
        while self._buffer:
            batch = self._buffer[:BATCH_SIZE]
            try:
                await self._insert(batch)
            except (SQLAlchemyError, OSError):
                log.exception(
                    "writing usage events failed; will retry", extra={"batch": len(batch)}
                )
                return False
            del self._buffer[: len(batch)]
            self.written += len(batch)
        return True

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_INTERVAL_SECONDS):
                    await self._wake.wait()
            self._wake.clear()
            if not await self.flush():
                await asyncio.sleep(RETRY_DELAY_SECONDS)

    async def _insert(self, batch: list[UsageRecord]) -> None:
        async with self._sessions() as session, session.begin():
            dialect = session.get_bind().dialect.name
            await session.execute(_idempotent_insert(dialect), batch)
        if self._after_insert is not None:
            try:
                async with self._sessions() as session, session.begin():
                    await self._after_insert(session, batch)
            except (SQLAlchemyError, OSError):
                log.warning("post-insert step of a usage batch failed", exc_info=True)


def _idempotent_insert(dialect: str) -> Executable:
    """INSERT that skips rows whose request id is already stored (a retried batch)."""
    if dialect == "postgresql":
        return postgres_insert(UsageEvent).on_conflict_do_nothing(index_elements=["request_id"])
    if dialect == "sqlite":
        return sqlite_insert(UsageEvent).on_conflict_do_nothing(index_elements=["request_id"])
    return insert(UsageEvent)
