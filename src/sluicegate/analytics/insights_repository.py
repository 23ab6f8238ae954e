"""The SQL of insights: spend per day and per member, key or model, read from the daily rollups
in the org's own timezone and summed in the database, for the usage the caller reads."""

from __future__ import annotations

from datetime import date

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from sluicegate.analytics.feed_repository import visible_usage
from sluicegate.metering.models import UsageDailyRollup
from sluicegate.orgs.authorize import UsageVisibility

DIMENSIONS = ("member", "key", "model")
_COLUMNS: dict[str, InstrumentedAttribute[str]] = {
    "member": UsageDailyRollup.user_id,
    "key": UsageDailyRollup.key_id,
    "model": UsageDailyRollup.model,
}


def _scope(
    org_id: str, timezone: str, visibility: UsageVisibility, first: date, last: date
) -> tuple[ColumnElement[bool], ...]:
    return (
        UsageDailyRollup.org_id == org_id,
        # Days in the org's current zone: rows of an older zone are rebuilt when it changes.
        UsageDailyRollup.zone == timezone,
        UsageDailyRollup.day >= first,
        UsageDailyRollup.day <= last,
        visible_usage(org_id, visibility, UsageDailyRollup.group_id, UsageDailyRollup.user_id),
    )


async def daily_spend(
    session: AsyncSession,
    org_id: str,
    timezone: str,
    visibility: UsageVisibility,
    dimension: str,
    *,
    first: date,
    last: date,
) -> list[tuple[str, date, int]]:
    """(id, day, nano-USD) of every id of the dimension and day from `first` to `last` (both
    inclusive) with any spend."""
    column = _COLUMNS[dimension]
    spend = func.sum(UsageDailyRollup.cost_nusd)
    statement = (
        select(column, UsageDailyRollup.day, spend)
        .where(*_scope(org_id, timezone, visibility, first, last))
        .group_by(column, UsageDailyRollup.day)
        .having(spend != 0)
    )
    rows = await session.execute(statement)
    return [(value, day, int(total)) for value, day, total in rows]


async def period_spend(
    session: AsyncSession,
    org_id: str,
    timezone: str,
    visibility: UsageVisibility,
    dimension: str,
    *,
    previous_first: date,
    first: date,
    last: date,
) -> list[tuple[str, int, int]]:
    """(id, spend from `first` to `last`, spend from `previous_first` to the day before `first`)
    of every id of the dimension with spend in either period, in nano-USD."""
    column = _COLUMNS[dimension]
    cost = UsageDailyRollup.cost_nusd
    current = func.sum(case((UsageDailyRollup.day >= first, cost), else_=0))
    previous = func.sum(case((UsageDailyRollup.day < first, cost), else_=0))
    statement = (
        select(column, current, previous)
        .where(*_scope(org_id, timezone, visibility, previous_first, last))
        .group_by(column)
        .having(func.sum(cost) != 0)
    )
    rows = await session.execute(statement)
    return [(value, int(now), int(before)) for value, now, before in rows]
