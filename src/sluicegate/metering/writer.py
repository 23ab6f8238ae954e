"""The buffered usage writer: the proxy hands over an event and moves on; batches are inserted
in the background, idempotently on request id. No database round trip on the response path.

In the same transaction as the usage rows, the credit ledger's hourly usage debits grow by the
cost of the rows that batch actually stored (a retried batch stores, and debits, nothing twice),
so sum(usage debits) == sum(usage cost) at every commit; and the budget thresholds those rows'
requests crossed are announced (metering/events.py), which the alerts outbox turns into alerts
in that same transaction, once each.

Durability here is "in memory until the next flush" (a fraction of a second); the durable
pipeline (Redis stream, drain worker) replaces this buffer's role in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.expression import Executable

from sluicegate.core.db import dialect_insert
from sluicegate.core.events import announce
from sluicegate.core.logs import log_failure
from sluicegate.metering.event import UsageRecord
from sluicegate.metering.events import BudgetThresholdsCrossed
from sluicegate.metering.ledger import debit_upsert, hourly_debits
from sluicegate.metering.models import (
    UsageDailyRollup,
    UsageEvent,
    UsageOrgDailyRollup,
    UsageRollup,
)
from sluicegate.metering.partitions import Partitions
from sluicegate.metering.rollups import EVENT_COLUMNS, rollup_rows, rollup_upsert
from sluicegate.orgs.models import Organization

# The usage event's field naming the budget thresholds its request crossed (encoded crossings).
CROSSED = "crossed"
# Runs after a batch is committed, in a transaction of its own (e.g. to stamp keys' last use);
# its failure is logged and never holds back or repeats the usage rows themselves.
AfterInsert = Callable[[AsyncSession, Sequence[UsageRecord]], Awaitable[None]]

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
        self._partitions = Partitions()
        self._buffer: list[UsageRecord] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.dropped = 0
        self.written = 0
        # Events recorded so far, and how many of them have left the buffer (stored or dropped):
        # `until_stored(ticket)` waits for the second to reach an event's ticket.
        self._recorded = 0
        self._gone = 0
        self._progress = asyncio.Event()

    def record(self, event: UsageRecord) -> int:
        """Queue one usage event (a dict of UsageEvent columns). Never blocks, never raises.
        Returns the event's ticket, for `until_stored`."""
        self._buffer.append(event)
        self._recorded += 1
        if len(self._buffer) > MAX_BUFFERED:
            overflow = len(self._buffer) - MAX_BUFFERED
            del self._buffer[:overflow]
            self.dropped += overflow
            self._advance(overflow)
            log.error("usage buffer full; dropped oldest events", extra={"dropped": overflow})
        if len(self._buffer) >= BATCH_SIZE:
            self._wake.set()
        return self._recorded

    async def until_stored(self, ticket: int) -> None:
        """Return once the event `record` gave this ticket has left the buffer: stored in the
        database (or, the buffer being full for long, dropped and logged)."""
        while self._gone < ticket:
            self._wake.set()
            await self._progress.wait()

    async def caught_up(self) -> None:
        """Return once every event recorded so far has left the buffer (see `until_stored`)."""
        await self.until_stored(self._recorded)

    def _advance(self, count: int) -> None:
        self._gone += count
        progress, self._progress = self._progress, asyncio.Event()
        progress.set()

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
            except (SQLAlchemyError, OSError) as exc:
                log_failure(log, "writing usage events failed; will retry", exc, batch=len(batch))
                return False
            del self._buffer[: len(batch)]
            self.written += len(batch)
            self._advance(len(batch))
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
            await store_usage(session, batch, self._partitions)
        if self._after_insert is not None:
            try:
                async with self._sessions() as session, session.begin():
                    await self._after_insert(session, batch)
            except (SQLAlchemyError, OSError) as exc:
                log_failure(log, "post-insert step of a usage batch failed", exc)


async def store_usage(
    session: AsyncSession, batch: Sequence[UsageRecord], partitions: Partitions | None = None
) -> int:
    """Insert a batch of usage events in the caller's transaction, skipping those already stored
    (by request id), and add exactly the stored ones to the rollups and the ledger's hourly
    debits. Returns how many were stored.

    The orgs' timezones are read first, locked FOR SHARE on Postgres: a timezone change (which
    rebuilds the daily rollups in its own transaction) waits for this batch or this batch waits
    for it, so no day is ever summed in a zone the org no longer has.
    """
    if not batch:
        return 0
    dialect = session.get_bind().dialect.name
    zones = await org_timezones(session, {event["org_id"] for event in batch})
    if dialect == "postgresql":
        await (partitions or Partitions()).ensure(session, (e["created_at"] for e in batch))
    # Budget thresholds the request crossed (see guard/counters.py `Crossing`) are not a
    # column: they are announced below, in this transaction, for the rows stored now only.
    crossed = {e["request_id"]: e for e in batch if e.get(CROSSED)}
    rows = [_without_crossings(e) for e in batch] if crossed else list(batch)
    # RETURNING with a list of parameters: SQLAlchemy's "insertmanyvalues" sends it as
    # multi-row INSERTs (asyncpg and aiosqlite alike) and returns only the rows stored.
    result = await session.execute(_idempotent_insert(dialect), rows)
    stored: list[Mapping[str, Any]] = [dict(row) for row in result.mappings()]
    if not stored:
        return 0
    if crossed:
        now_stored = tuple(
            crossed[row["request_id"]] for row in stored if row["request_id"] in crossed
        )
        if now_stored:
            await announce(session, BudgetThresholdsCrossed(now_stored))
    rollups = rollup_rows(stored, zones)
    await session.execute(rollup_upsert(dialect, UsageRollup), rollups.quarters)
    await session.execute(rollup_upsert(dialect, UsageDailyRollup), rollups.days)
    await session.execute(rollup_upsert(dialect, UsageOrgDailyRollup), rollups.org_days)
    debits = hourly_debits(stored)
    if debits:
        await session.execute(debit_upsert(dialect), debits)
    return len(stored)


def _without_crossings(event: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in event.items() if name != CROSSED}


async def org_timezones(session: AsyncSession, org_ids: set[str]) -> dict[str, str]:
    statement = select(Organization.id, Organization.timezone).where(
        Organization.id.in_(sorted(org_ids))
    )
    if session.get_bind().dialect.name == "postgresql":
        statement = statement.order_by(Organization.id).with_for_update(read=True)
    return {org_id: zone for org_id, zone in (await session.execute(statement)).all()}


def _idempotent_insert(dialect: str) -> Executable:
    """INSERT that skips rows whose request id is already stored (a retried batch), returning
    what the rows it did store cost."""
    statement = dialect_insert(dialect)(UsageEvent).on_conflict_do_nothing(
        index_elements=["request_id", "created_at"]
    )
    returning: Executable = statement.returning(
        *(getattr(UsageEvent, name) for name in ("request_id", *EVENT_COLUMNS))
    )
    return returning
