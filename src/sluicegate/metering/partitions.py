"""Monthly partitions of the usage table on Postgres: created on demand before a batch needs
them, dropped whole past the retention setting (SQLite keeps one plain table).

A partition is named `usage_events_pYYYY_MM` and covers [first of the month, first of the next)
in UTC. Rollups are separate tables and are never dropped with the raw rows, so analytics over a
period older than the retention stays exact.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, date, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

PARTITION_PREFIX = "usage_events_p"
# One advisory lock id for partition DDL, so concurrent writers never race CREATE or DROP.
PARTITION_LOCK = 0x5347_5553  # "SGUS"

log = logging.getLogger("sluicegate.metering")


def month_of(instant: datetime) -> date:
    utc = instant.astimezone(UTC)
    return date(utc.year, utc.month, 1)


def next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def months_before(month: date, count: int) -> date:
    index = month.year * 12 + month.month - 1 - count
    return date(index // 12, index % 12 + 1, 1)


def partition_name(month: date) -> str:
    return f"{PARTITION_PREFIX}{month.year:04d}_{month.month:02d}"


def create_statement(month: date) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {partition_name(month)} PARTITION OF usage_events "
        f"FOR VALUES FROM ('{month.isoformat()} 00:00:00+00') "
        f"TO ('{next_month(month).isoformat()} 00:00:00+00')"
    )


class Partitions:
    """Remembers which months exist in this process, so a batch costs no DDL round trip once its
    month's partition has been made."""

    def __init__(self) -> None:
        self._known: set[date] = set()

    async def ensure(self, session: AsyncSession, instants: Iterable[datetime]) -> None:
        missing = {month_of(instant) for instant in instants} - self._known
        if not missing:
            return
        await session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": PARTITION_LOCK})
        for month in sorted(missing):
            await session.execute(text(create_statement(month)))
        self._known |= missing

    def forget(self) -> None:
        self._known.clear()


async def existing_months(connection: AsyncConnection | AsyncSession) -> list[date]:
    rows = await connection.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'usage_events'"
        )
    )
    months = []
    for (name,) in rows.all():
        suffix = name.removeprefix(PARTITION_PREFIX)
        year, _, month = suffix.partition("_")
        if year.isdigit() and month.isdigit():
            months.append(date(int(year), int(month), 1))
    return sorted(months)


async def drop_expired(session: AsyncSession, now: datetime, retention_months: int) -> list[str]:
    """Drop the partitions of months entirely older than `retention_months` full months before
    the current one; returns their names. 0 keeps everything."""
    if retention_months <= 0:
        return []
    oldest_kept = months_before(month_of(now), retention_months)
    await session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": PARTITION_LOCK})
    dropped = []
    for month in await existing_months(session):
        if month < oldest_kept:
            name = partition_name(month)
            await session.execute(text(f"DROP TABLE IF EXISTS {name}"))
            dropped.append(name)
    if dropped:
        log.info("dropped usage partitions past retention", extra={"partitions": dropped})
    return dropped
