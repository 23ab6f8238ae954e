"""The SQL of analytics: sums over the usage rollups (never the usage rows) of one org, limited to
the usage the caller reads and to the query's filters; totalled, pivoted by a dimension, and cut
into a window's buckets in the database (a join on the buckets' bounds, then GROUP BY bucket and
dimension), so a year of a busy org comes back as a few hundred rows per dimension value.

A Source names which rollups a query reads: the 15-minute buckets between two UTC instants, or
the days in the org's own timezone between two local dates (the same sums, ~100 times fewer rows).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Date,
    DateTime,
    Integer,
    Select,
    bindparam,
    cast,
    column,
    func,
    select,
    values,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from sluicegate.analytics.feed_repository import group_names, key_names, member_names, visible_usage
from sluicegate.core.db import UTCDateTime
from sluicegate.metering.models import UsageDailyRollup, UsageRollup
from sluicegate.orgs.authorize import UsageVisibility
from sluicegate.orgs.models import Group, in_subtrees

__all__ = ["group_names", "key_names", "member_names"]

Rollup = type[UsageRollup] | type[UsageDailyRollup]
# The rollup column each pivot reads ("project" is the group the usage is attributed to).
DIMENSION_COLUMNS = {
    "model": "model",
    "project": "group_id",
    "key": "key_id",
    "member": "user_id",
    "provider": "provider",
    "app": "app",
}
METRICS = ("cost", "requests", "tokens")


@dataclass(frozen=True, slots=True)
class Sums:
    """The measures of a set of rollup rows. `requests` counts every request: failed (errors)
    and stopped by a guardrail (blocked) too."""

    requests: int = 0
    errors: int = 0
    blocked: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_nusd: int = 0
    latency_ms_sum: int = 0
    ttft_ms_sum: int = 0
    ttft_count: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def metric(self, name: str) -> int:
        if name == "cost":
            return self.cost_nusd
        if name == "tokens":
            return self.tokens
        return self.requests

    def __add__(self, other: Sums) -> Sums:
        return Sums(
            self.requests + other.requests,
            self.errors + other.errors,
            self.blocked + other.blocked,
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cached_tokens + other.cached_tokens,
            self.cost_nusd + other.cost_nusd,
            self.latency_ms_sum + other.latency_ms_sum,
            self.ttft_ms_sum + other.ttft_ms_sum,
            self.ttft_count + other.ttft_count,
        )

    def __sub__(self, other: Sums) -> Sums:
        return Sums(*(a - b for a, b in zip(_astuple(self), _astuple(other), strict=True)))


MEASURES = tuple(Sums.__dataclass_fields__)


def _astuple(sums: Sums) -> tuple[int, ...]:
    return tuple(getattr(sums, name) for name in MEASURES)


@dataclass(frozen=True, slots=True)
class Source:
    """Which rollups a query reads and how the window cuts them: `bounds` holds each bucket's
    [lo, hi) as UTC instants (15-minute rollups) or local dates (the org's daily rollups, whose
    rows carry the zone they were summed in)."""

    daily: bool
    bounds: Sequence[tuple[datetime, datetime]] | Sequence[tuple[date, date]]
    zone: str

    @property
    def table(self) -> Rollup:
        return UsageDailyRollup if self.daily else UsageRollup

    def time(self) -> InstrumentedAttribute[Any]:
        return UsageDailyRollup.day if self.daily else UsageRollup.bucket_start


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose usage a query sums: the org's, limited to what the caller reads, and the filters."""

    org_id: str
    visibility: UsageVisibility
    group_path: str | None = None  # the subtree of this group (its path)
    user_id: str | None = None
    model: str | None = None
    key_id: str | None = None
    provider: str | None = None
    app: str | None = None


def _column(source: Source, name: str) -> InstrumentedAttribute[Any]:
    attribute: InstrumentedAttribute[Any] = getattr(source.table, name)
    return attribute


def _conditions(source: Source, scope: Scope) -> list[ColumnElement[bool]]:
    table = source.table
    time = source.time()
    conditions: list[ColumnElement[bool]] = [
        table.org_id == scope.org_id,
        time >= source.bounds[0][0],
        time < source.bounds[-1][1],
        visible_usage(scope.org_id, scope.visibility, table.group_id, table.user_id),
    ]
    if source.daily:
        conditions.append(UsageDailyRollup.zone == source.zone)
    if scope.group_path is not None:
        subtree = select(Group.id).where(
            Group.org_id == scope.org_id, in_subtrees(Group.path, [scope.group_path])
        )
        conditions.append(table.group_id.in_(subtree))
    for name in ("user_id", "model", "key_id", "provider", "app"):
        value = getattr(scope, name)
        if value is not None:
            conditions.append(_column(source, name) == value)
    return conditions


def _sums(source: Source) -> list[ColumnElement[Any]]:
    # Postgres sums BIGINT into NUMERIC, which the driver turns into Decimals, slowly (a year's
    # series is thousands of rows of ten sums): cast back, as no sum comes near 2**63 (a year's
    # spend of a large org is ~10**14 nano-USD) and an overflow would fail, not wrap.
    return [
        cast(func.coalesce(func.sum(_column(source, name)), 0), BigInteger) for name in MEASURES
    ]


def _read_sums(row: Sequence[Any], offset: int) -> Sums:
    # Whole numbers already (BIGINT on Postgres, INTEGER on SQLite).
    return Sums(*row[offset : offset + len(MEASURES)])


# --- queries -------------------------------------------------------------------------------------


async def totals(session: AsyncSession, source: Source, scope: Scope) -> tuple[Sums, int, int]:
    """The sums of the whole window, with how many models and members had usage. The rows are
    first summed per (model, member), a hash aggregate; count(DISTINCT) over the raw rows
    would sort them all, spilling to disk for a year of a large org."""
    table = source.table
    inner = (
        select(
            table.model.label("model"),
            table.user_id.label("user_id"),
            *(func.sum(_column(source, name)).label(name) for name in MEASURES),
        )
        .where(*_conditions(source, scope))
        .group_by(table.model, table.user_id)
        .subquery("per_model_member")
    )
    statement = select(
        *(cast(func.coalesce(func.sum(inner.c[name]), 0), BigInteger) for name in MEASURES),
        func.count(func.distinct(inner.c.model)),
        func.count(func.distinct(inner.c.user_id)),
    )
    row = (await session.execute(statement)).one()
    width = len(MEASURES)
    return _read_sums(row, 0), int(row[width]), int(row[width + 1])


async def distinct_count(session: AsyncSession, source: Source, scope: Scope, name: str) -> int:
    """How many values of a rollup column (model, user_id) had usage in the window (a hash
    aggregate per value, then a count: count(DISTINCT) would sort every row)."""
    key = _column(source, name)
    per_value = select(key).where(*_conditions(source, scope)).group_by(key).subquery("values")
    return int(await session.scalar(select(func.count()).select_from(per_value)) or 0)


async def by_member_and_model(
    session: AsyncSession, source: Source, scope: Scope
) -> list[tuple[str, str, Sums]]:
    """(member, model, sums) of each pair with usage in the window."""
    table = source.table
    statement = (
        select(table.user_id, table.model, *_sums(source))
        .where(*_conditions(source, scope))
        .group_by(table.user_id, table.model)
    )
    return [(row[0], row[1], _read_sums(row, 2)) for row in await session.execute(statement)]


async def by_dimension(
    session: AsyncSession,
    source: Source,
    scope: Scope,
    dimension: str,
    *,
    metric: str = "cost",
    limit: int | None = None,
    offset: int = 0,
) -> list[tuple[str, Sums]]:
    """(value, sums) of each value of a dimension with usage in the window, the largest
    `metric` first (ties by value)."""
    key = _column(source, DIMENSION_COLUMNS[dimension])
    order = _metric_sum(source, metric)
    statement: Select[Any] = (
        select(key, *_sums(source))
        .where(*_conditions(source, scope))
        .group_by(key)
        .order_by(order.desc(), key)
        .offset(offset)
    )
    if limit is not None:
        statement = statement.limit(limit)
    return [(row[0], _read_sums(row, 1)) for row in await session.execute(statement)]


def _metric_sum(source: Source, metric: str) -> ColumnElement[Any]:
    if metric == "tokens":
        return func.sum(_column(source, "prompt_tokens") + _column(source, "completion_tokens"))
    return func.sum(_column(source, "cost_nusd" if metric == "cost" else "requests"))


async def series(
    session: AsyncSession,
    source: Source,
    scope: Scope,
    dimension: str | None,
    *,
    split: bool = True,
    only: Collection[str] | None = None,
    excluding: Collection[str] = (),
) -> list[tuple[int, str | None, Sums]]:
    """(bucket index, dimension value or None, sums) per bucket with usage and, with a
    dimension, per value of it (or, with `split` False, all values together), in no particular
    order: only the values in `only` when given, none of those in `excluding`."""
    time = source.time()
    conditions = _conditions(source, scope)
    dimension_keys: list[ColumnElement[Any] | InstrumentedAttribute[Any]] = []
    if dimension is not None:
        column_ = _column(source, DIMENSION_COLUMNS[dimension])
        if only is not None:
            conditions.append(column_.in_(sorted(only)))
        if excluding:
            conditions.append(column_.not_in(sorted(excluding)))
        if split:
            dimension_keys.append(column_)
    split = bool(dimension_keys)
    postgres = session.get_bind().dialect.name == "postgresql"
    single_days = all((hi - lo).days == 1 for lo, hi in source.bounds)
    if source.daily and (single_days or not postgres):
        # Summed per day in the database (a few hundred days), placed in buckets here.
        per_day = select(time, *dimension_keys, *_sums(source)).where(*conditions)
        rows = await session.execute(per_day.group_by(time, *dimension_keys))
        starts = [lo for lo, _ in source.bounds]
        merged: dict[tuple[int, str | None], Sums] = {}
        for row in rows:
            index = bisect_right(starts, row[0]) - 1
            value = row[1] if split else None
            sums = _read_sums(row, 2 if split else 1)
            key = (index, value)
            merged[key] = merged[key] + sums if key in merged else sums
        return [(index, value, sums) for (index, value), sums in merged.items()]
    statement: Select[Any]
    if postgres and _contiguous(source.bounds):
        # Each row's bucket by binary search over the bounds (width_bucket): one pass over the
        # window's rows, where a join on the bounds is a loop per bucket (and, once Postgres
        # caches a generic plan for the prepared statement, a loop per row and bucket).
        # Weeks and months of days too: buckets x values come back, not days x values.
        thresholds = [lo for lo, _ in source.bounds] + [source.bounds[-1][1]]
        element = Date() if source.daily else DateTime(timezone=True)
        array = bindparam("thresholds", thresholds, ARRAY(element))
        keys: list[ColumnElement[Any] | InstrumentedAttribute[Any]] = [
            func.width_bucket(time, array) - 1,
            *dimension_keys,
        ]
        statement = select(*keys, *_sums(source)).where(*conditions).group_by(*keys)
    else:
        kind = Date if source.daily else UTCDateTime
        buckets = (
            values(column("idx", Integer), column("lo", kind), column("hi", kind), name="buckets")
            .data([(index, lo, hi) for index, (lo, hi) in enumerate(source.bounds)])
            .cte("buckets")
        )
        keys = [buckets.c.idx, *dimension_keys]
        statement = (
            select(*keys, *_sums(source))
            .select_from(buckets)
            .join(source.table, (time >= buckets.c.lo) & (time < buckets.c.hi))
            .where(*conditions)
            .group_by(*keys)
        )
    answer = await session.execute(statement)
    if not split:
        return [(int(row[0]), None, _read_sums(row, 1)) for row in answer]
    return [(int(row[0]), row[1], _read_sums(row, 2)) for row in answer]


def _contiguous(bounds: Sequence[tuple[Any, Any]]) -> bool:
    return all(bounds[n][1] == bounds[n + 1][0] for n in range(len(bounds) - 1))
