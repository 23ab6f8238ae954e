"""Rollups of usage events: 15-minute UTC buckets and days in the org's timezone, both keyed by
every dimension analytics filters or pivots on (the deployment that served included, from the
event's routing), and the org-wide days, keyed by one dimension at a time. Built from the rows a
batch actually stored (a retried batch adds nothing twice) and upserted in the same transaction
as those rows, so sum(rollups) == sum(usage events) at every commit (for the org-wide days: per
dimension).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import Date, String, Table, cast, delete, func, insert, literal, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.expression import Executable

from sluicegate.core.db import dialect_insert
from sluicegate.metering.event import deployment_of
from sluicegate.metering.models import (
    ORG_DIMENSIONS,
    ROLLUP_DIMENSIONS,
    UsageDailyRollup,
    UsageOrgDailyRollup,
    UsageRollup,
)

BUCKET_SECONDS = 15 * 60
BUCKET = timedelta(seconds=BUCKET_SECONDS)
# What the proxy records as the error type of a request a guardrail stopped before it reached a
# provider: these count as `blocked`, every other failure as an error.
BLOCKED_ERROR_TYPES = frozenset(
    {
        "budget_exceeded",
        "credit_exhausted",
        "rate_limited",
        "model_not_allowed",
        "ip_not_allowed",
        "max_tokens_not_allowed",
    }
)
MEASURES = (
    "requests",
    "errors",
    "blocked",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cost_nusd",
    "latency_ms_sum",
    "ttft_ms_sum",
    "ttft_count",
)
# The usage event columns a rollup is built from.
EVENT_COLUMNS = (
    "org_id",
    "created_at",
    "group_id",
    "key_id",
    "user_id",
    "requested_model",
    "provider",
    "app",
    "status_code",
    "error_type",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cost_nusd",
    "latency_ms",
    "ttft_ms",
    "routing",
)

Event = Mapping[str, Any]
Row = dict[str, Any]


def bucket_start(instant: datetime) -> datetime:
    """The start of the 15-minute UTC bucket holding `instant`."""
    utc = instant.astimezone(UTC)
    return utc.replace(minute=utc.minute - utc.minute % 15, second=0, microsecond=0)


def local_day(instant: datetime, zone: str) -> date:
    return instant.astimezone(ZoneInfo(zone)).date()


def outcome(status_code: int, error_type: str | None) -> tuple[int, int]:
    """(errors, blocked) of one request: a guardrail block is not an error of the request."""
    if error_type in BLOCKED_ERROR_TYPES:
        return 0, 1
    return (1 if status_code >= 400 else 0), 0


def _dimensions(event: Event) -> tuple[str, ...]:
    return (
        event["group_id"],
        event["key_id"],
        event["user_id"],
        (event["requested_model"] or "")[:200],
        event["provider"] or "",
        event["app"] or "",
        deployment_of(event["routing"]),
    )


def _add(sums: list[int], event: Event) -> None:
    errors, blocked = outcome(event["status_code"], event["error_type"])
    ttft = event["ttft_ms"]
    sums[0] += 1
    sums[1] += errors
    sums[2] += blocked
    sums[3] += event["prompt_tokens"] or 0
    sums[4] += event["completion_tokens"] or 0
    sums[5] += event["cached_tokens"] or 0
    sums[6] += event["cost_nusd"] or 0
    sums[7] += event["latency_ms"] or 0
    if ttft is not None:
        sums[8] += ttft
        sums[9] += 1


class RollupRows(NamedTuple):
    """The rollup rows of a batch, each list sorted by its key so that concurrent writers lock
    rows in the same order and never deadlock."""

    quarters: list[Row]
    days: list[Row]
    org_days: list[Row]


QUARTER_NAMES = ("org_id", "bucket_start", *ROLLUP_DIMENSIONS, *MEASURES)
DAY_NAMES = ("org_id", "zone", "day", *ROLLUP_DIMENSIONS, *MEASURES)
ORG_DAY_NAMES = ("org_id", "zone", "dimension", "day", "value", *MEASURES)
# Where each org-wide dimension sits in a daily row's key (org_id, zone, day, *dimensions).
_ORG_DIMENSION_AT = tuple((name, 3 + ROLLUP_DIMENSIONS.index(name)) for name in ORG_DIMENSIONS)


def rollup_rows(events: Iterable[Event], zones: Mapping[str, str]) -> RollupRows:
    """The 15-minute, daily and org-wide daily rows summing `events`. `zones` maps each org to
    its timezone (an org missing there is summed by UTC day)."""
    quarters: dict[tuple[Any, ...], list[int]] = {}
    days: dict[tuple[Any, ...], list[int]] = {}
    for event in events:
        org_id, created_at = event["org_id"], event["created_at"]
        dimensions = _dimensions(event)
        zone = zones.get(org_id, "UTC")
        quarter_key = (org_id, bucket_start(created_at), *dimensions)
        day_key = (org_id, zone, local_day(created_at, zone), *dimensions)
        _add(quarters.setdefault(quarter_key, [0] * len(MEASURES)), event)
        _add(days.setdefault(day_key, [0] * len(MEASURES)), event)
    org_days: dict[tuple[Any, ...], list[int]] = {}
    for key, sums in days.items():
        for name, at in _ORG_DIMENSION_AT:
            total = org_days.setdefault((key[0], key[1], name, key[2], key[at]), [0] * len(sums))
            for index, value in enumerate(sums):
                total[index] += value
    return RollupRows(
        _rows(QUARTER_NAMES, quarters), _rows(DAY_NAMES, days), _rows(ORG_DAY_NAMES, org_days)
    )


def _rows(names: tuple[str, ...], sums: dict[tuple[Any, ...], list[int]]) -> list[Row]:
    return [dict(zip(names, (*key, *total), strict=True)) for key, total in sorted(sums.items())]


Rollup = type[UsageRollup] | type[UsageDailyRollup] | type[UsageOrgDailyRollup]


def rollup_upsert(dialect: str, model: Rollup) -> Executable:
    """INSERT ... ON CONFLICT (the row's key) DO UPDATE SET each measure += the new sum."""
    table: Table = model.__table__  # type: ignore[assignment]
    statement = dialect_insert(dialect)(table)
    keys = [column.name for column in table.primary_key.columns]
    upsert: Executable = statement.on_conflict_do_update(
        index_elements=keys,
        set_={name: table.c[name] + statement.excluded[name] for name in MEASURES},
    )
    return upsert


async def rebuild_daily_rollups(session: AsyncSession, org_id: str, zone: str) -> None:
    """Sum the org's 15-minute rollups again into days in `zone` (its new timezone), replacing
    its daily and org-wide daily rollups, in the caller's transaction: the one that changes the
    org's timezone and so holds its row locked against the usage writers (store_usage reads it
    FOR SHARE). A 15-minute bucket lies within one local day wherever the offset is a multiple
    of 15 minutes, as every offset in use since 1979 is."""
    await session.execute(delete(UsageDailyRollup).where(UsageDailyRollup.org_id == org_id))
    daily: Table = UsageDailyRollup.__table__  # type: ignore[assignment]
    quarters: Table = UsageRollup.__table__  # type: ignore[assignment]
    if session.get_bind().dialect.name == "postgresql":
        # One statement in the database: a year of a large org's buckets is millions of rows.
        # Postgres's timezone database names the same zones as the writers' zoneinfo.
        day = cast(func.timezone(zone, quarters.c.bucket_start), Date)
        dimensions = [quarters.c[name] for name in ROLLUP_DIMENSIONS]
        summed = (
            select(
                quarters.c.org_id,
                literal(zone, String),
                day,
                *dimensions,
                *(func.sum(quarters.c[name]) for name in MEASURES),
            )
            .where(quarters.c.org_id == org_id)
            .group_by(quarters.c.org_id, day, *dimensions)
        )
        await session.execute(insert(daily).from_select(list(DAY_NAMES), summed))
        await _rebuild_org_days(session, org_id)
        return
    sums: dict[tuple[Any, ...], list[int]] = {}
    rows = await session.stream(select(quarters).where(quarters.c.org_id == org_id))
    async for row in rows.mappings():
        key = (local_day(row["bucket_start"], zone), *(row[name] for name in ROLLUP_DIMENSIONS))
        total = sums.setdefault(key, [0] * len(MEASURES))
        for index, name in enumerate(MEASURES):
            total[index] += row[name]
    values = [
        dict(zip(DAY_NAMES, (org_id, zone, *key, *total), strict=True))
        for key, total in sorted(sums.items())
    ]
    if values:
        await session.execute(insert(daily), values)
    await _rebuild_org_days(session, org_id)


async def _rebuild_org_days(session: AsyncSession, org_id: str) -> None:
    """The org's org-wide daily rollups, summed again from its daily rollups (one INSERT ...
    SELECT per dimension)."""
    await session.execute(delete(UsageOrgDailyRollup).where(UsageOrgDailyRollup.org_id == org_id))
    daily: Table = UsageDailyRollup.__table__  # type: ignore[assignment]
    org_daily: Table = UsageOrgDailyRollup.__table__  # type: ignore[assignment]
    for name in ORG_DIMENSIONS:
        summed = (
            select(
                daily.c.org_id,
                daily.c.zone,
                literal(name, String),
                daily.c.day,
                daily.c[name],
                *(func.sum(daily.c[measure]) for measure in MEASURES),
            )
            .where(daily.c.org_id == org_id)
            .group_by(daily.c.org_id, daily.c.zone, daily.c.day, daily.c[name])
        )
        await session.execute(insert(org_daily).from_select(list(ORG_DAY_NAMES), summed))
