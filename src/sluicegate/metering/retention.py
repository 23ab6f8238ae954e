"""Retention of raw usage rows (`SLUICEGATE_USAGE_RETENTION_MONTHS`): whole monthly partitions
dropped on Postgres, old rows deleted on SQLite. Rollups are kept, so analytics, budgets and the
ledger never change when raw rows go."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sluicegate.core.clock import Clock
from sluicegate.core.logs import log_failure
from sluicegate.metering.models import UsageEvent
from sluicegate.metering.partitions import drop_expired, month_of, months_before

# Retention is checked this often; a month boundary passes at most this late.
RETENTION_CHECK_SECONDS = 3600.0

log = logging.getLogger("sluicegate.metering")


async def apply_retention(session: AsyncSession, now: datetime, months: int) -> int:
    """Remove raw usage rows of months entirely older than `months` full months before the
    current one (0: keep everything). Returns partitions dropped (Postgres) or rows deleted."""
    if months <= 0:
        return 0
    if session.get_bind().dialect.name == "postgresql":
        return len(await drop_expired(session, now, months))
    cutoff = datetime.combine(months_before(month_of(now), months), datetime.min.time(), now.tzinfo)
    result = await session.execute(delete(UsageEvent).where(UsageEvent.created_at < cutoff))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


class RetentionTask:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], clock: Clock, months: int
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._months = months
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        if self._months > 0 and self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="usage-retention")

    async def close(self) -> None:
        if self._task is not None:
            # A database driver cancelled mid-call may raise its own error, which the loop
            # survives by design: the flag stops it then.
            self._stopping = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while not self._stopping:
            try:
                async with self._sessions() as session, session.begin():
                    await apply_retention(session, self._clock.now(), self._months)
            except (SQLAlchemyError, OSError) as exc:
                log_failure(log, "applying the usage retention failed; will retry", exc)
            await asyncio.sleep(RETENTION_CHECK_SECONDS)
