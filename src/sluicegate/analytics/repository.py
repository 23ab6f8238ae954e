"""The SQL of analytics: sums over the usage rollups (never the usage rows) of one org, limited to
the usage the caller reads and to the query's filters; totalled, pivoted by a dimension, and cut
into a window's buckets in the database (a join on the buckets' bounds, then GROUP BY bucket and
dimension), so a year of a busy org comes back as a few hundred rows per dimension value.

A Source names which rollups a query reads: the 15-minute buckets between two UTC instants, or
the days in the org's own timezone between two local dates (the same sums, ~100 times fewer rows).
A query over days of the whole org without a filter (what an owner's dashboard asks) reads the
org-wide daily rollups of the one dimension it needs instead (~16 times fewer rows again for a
year by model).
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
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute, aliased

from sluicegate.analytics.feed_repository import group_names, key_names, member_names, visible_usage
from sluicegate.analytics.sums import MEASURES, Sums
from sluicegate.core.db import UTCDateTime
from sluicegate.metering.models import (
    ORG_DIMENSIONS,
    UsageDailyRollup,
    UsageOrgDailyRollup,
    UsageRollup,
)
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
    "deployment": "deployment",
}
METRICS = ("cost", "requests", "tokens")
FILTERS = ("group_path", "user_id", "model", "key_id", "provider", "app", "deployment")
# Every dimension's org-wide rows sum to the whole usage: a query that needs none reads these.
ANY_DIMENSION = "model"


@dataclass(frozen=True, slots=True)
class Source:
    """Which rollups a query reads and how the window cuts them: `bounds` holds each bucket's
    [lo, hi) as UTC instants (15-minute rollups) or local dates (the org's daily rollups, whose
    rows carry the zone they were summed in). `org_wide`: daily, and the org-wide daily rollups
    may answer the queries that need them (off, the daily rollups answer: tests compare)."""

    daily: bool
    bounds: Sequence[tuple[datetime, datetime]] | Sequence[tuple[date, date]]
    zone: str
    org_wide: bool = False

    @property
    def table(self) -> Rollup:
        return UsageDailyRollup if self.daily else UsageRollup


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose usage a query sums: the org's, limited to what the caller reads, and the filters
    (provider and deployment: any of the values given)."""

    org_id: str
    visibility: UsageVisibility
    group_path: str | None = None  # the subtree of this group (its path)
    user_id: str | None = None
    model: str | None = None
    key_id: str | None = None
    provider: tuple[str, ...] | None = None  # any of these
    app: str | None = None
    deployment: tuple[str, ...] | None = None  # any of these

    @property
    def unfiltered(self) -> bool:
        return self.visibility.whole_org and all(getattr(self, n) is None for n in FILTERS)


@dataclass(frozen=True, slots=True)
class _Read:
    """What one query reads: a rollup table, the conditions on its rows, and the column of the
    dimension it sums by (None: by none)."""

    table: Rollup | type[UsageOrgDailyRollup]
    conditions: list[ColumnElement[bool]]
    key: InstrumentedAttribute[Any] | None

    @property
    def time(self) -> InstrumentedAttribute[Any]:
        return self.column("bucket_start" if self.table is UsageRollup else "day")

    @property
    def org_wide(self) -> bool:
        return self.table is UsageOrgDailyRollup

    def column(self, name: str) -> InstrumentedAttribute[Any]:
        attribute: InstrumentedAttribute[Any] = getattr(self.table, name)
        return attribute

    def sums(self) -> list[ColumnElement[Any]]:
        # Postgres sums BIGINT into NUMERIC, which the driver turns into Decimals, slowly (a
        # year's series is thousands of rows of ten sums): cast back, as no sum comes near 2**63
        # (a year's spend of a large org is ~10**14 nano-USD) and an overflow would fail, not
        # wrap.
        return [
            cast(func.coalesce(func.sum(self.column(name)), 0), BigInteger) for name in MEASURES
        ]

    def metric_sum(self, metric: str) -> ColumnElement[Any]:
        if metric == "tokens":
            return func.sum(self.column("prompt_tokens") + self.column("completion_tokens"))
        return func.sum(self.column("cost_nusd" if metric == "cost" else "requests"))


def _org_wide(source: Source, scope: Scope, name: str | None = None) -> bool:
    """Whether the org-wide daily rollups of the rollup column `name` (of any, without one)
    hold the answer: days in the org's zone, the whole org, no filter."""
    return source.org_wide and scope.unfiltered and (name is None or name in ORG_DIMENSIONS)


def _read(source: Source, scope: Scope, name: str | None = None) -> _Read:
    """How to sum the usage of `scope` in `source` by the rollup column `name` (or by none):
    from the org-wide daily rollups of that dimension when they hold the answer."""
    if _org_wide(source, scope, name):
        table = UsageOrgDailyRollup
        conditions = [
            table.org_id == scope.org_id,
            table.zone == source.zone,
            table.dimension == (name or ANY_DIMENSION),
            table.day >= source.bounds[0][0],
            table.day < source.bounds[-1][1],
        ]
        return _Read(table, conditions, None if name is None else table.value)
    key = None if name is None else getattr(source.table, name)
    return _Read(source.table, _conditions(source, scope), key)


def _column(source: Source, name: str) -> InstrumentedAttribute[Any]:
    attribute: InstrumentedAttribute[Any] = getattr(source.table, name)
    return attribute


def _conditions(source: Source, scope: Scope) -> list[ColumnElement[bool]]:
    table = source.table
    time = UsageDailyRollup.day if source.daily else UsageRollup.bucket_start
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
    for name in ("user_id", "model", "key_id", "provider", "app", "deployment"):
        value = getattr(scope, name)
        if isinstance(value, tuple):  # provider, deployment: any of the values
            conditions.append(_column(source, name).in_(sorted(value)))
        elif value is not None:
            conditions.append(_column(source, name) == value)
    return conditions


_WIDTH = len(MEASURES)
_new_tuple = tuple.__new__


def _read_sums(row: Sequence[Any], offset: int) -> Sums:
    # Whole numbers already (BIGINT on Postgres, INTEGER on SQLite); every statement here
    # selects all the measures in order, so the slice is a whole Sums, built without the named
    # tuple's argument handling (a year's series reads thousands).
    sums: Sums = _new_tuple(Sums, row[offset : offset + _WIDTH])
    return sums


# --- queries -------------------------------------------------------------------------------------


async def _rows(
    session: AsyncSession, statement: Select[*tuple[Any, ...]]
) -> Sequence[Row[*tuple[Any, ...]]]:
    """The statement's rows, as Core rows fetched at once: the session's ORM layer would process
    each row again, and fetching them one by one costs as much (a year's series is thousands)."""
    connection = await session.connection()
    return (await connection.execute(statement)).all()


async def totals(session: AsyncSession, source: Source, scope: Scope) -> tuple[Sums, int, int]:
    """The sums of the whole window, with how many models and members had usage. The rows are
    first summed per (model, member), a hash aggregate; count(DISTINCT) over the raw rows
    would sort them all, spilling to disk for a year of a large org."""
    if _org_wide(source, scope):
        per_model = await by_dimension(session, source, scope, "model")
        members = await distinct_count(session, source, scope, "user_id")
        return Sums.total(sums for _, sums in per_model), len(per_model), members
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
    (row,) = await _rows(session, statement)
    width = len(MEASURES)
    return _read_sums(row, 0), int(row[width]), int(row[width + 1])


async def distinct_count(session: AsyncSession, source: Source, scope: Scope, name: str) -> int:
    """How many values of a rollup column (model, user_id) had usage in the window (a hash
    aggregate per value, then a count: count(DISTINCT) would sort every row)."""
    read = _read(source, scope, name)
    assert read.key is not None
    if read.org_wide:
        return await _count_org_wide_values(session, source, scope, name)
    per_value = select(read.key).where(*read.conditions).group_by(read.key).subquery("values")
    ((count,),) = await _rows(session, select(func.count()).select_from(per_value))
    return int(count or 0)


async def _count_org_wide_values(
    session: AsyncSession, source: Source, scope: Scope, name: str
) -> int:
    """distinct_count over the org-wide rows of a dimension, one index probe per value: walk
    the values in order (each the first one after the last, a recursive query), then keep those
    with a row in the window. A year of a hundred members is ~200 probes, not ~30,000 rows."""
    table = UsageOrgDailyRollup

    def rows_of(alias: Any) -> list[ColumnElement[bool]]:
        return [
            alias.org_id == scope.org_id,
            alias.zone == source.zone,
            alias.dimension == name,
        ]

    first = select(table.value).where(*rows_of(table)).order_by(table.value).limit(1)
    seen = select(first.scalar_subquery().label("value")).cte("seen", recursive=True)
    after = aliased(table)
    following = (
        select(after.value)
        .where(*rows_of(after), after.value > seen.c.value)
        .order_by(after.value)
        .limit(1)
    )
    seen = seen.union_all(
        select(following.scalar_subquery().label("value")).where(seen.c.value.is_not(None))
    )
    inside = aliased(table)
    used = (
        select(inside.value)
        .where(
            *rows_of(inside),
            inside.value == seen.c.value,
            inside.day >= source.bounds[0][0],
            inside.day < source.bounds[-1][1],
        )
        .exists()
    )
    ((count,),) = await _rows(
        session, select(func.count()).select_from(seen).where(seen.c.value.is_not(None), used)
    )
    return int(count)


def answers_org_wide(source: Source, scope: Scope) -> bool:
    """Whether the org-wide daily rollups answer this scope (then a sum per member and one per
    model are two small reads, where a sum per (member, model) is one large one)."""
    return _org_wide(source, scope)


async def by_member_and_model(
    session: AsyncSession, source: Source, scope: Scope
) -> list[tuple[str, str, Sums]]:
    """(member, model, sums) of each pair with usage in the window, from the daily or
    15-minute rollups (the org-wide ones hold no pairs)."""
    table = source.table
    read = _Read(table, _conditions(source, scope), None)
    statement = (
        select(table.user_id, table.model, *read.sums())
        .where(*read.conditions)
        .group_by(table.user_id, table.model)
    )
    return [(row[0], row[1], _read_sums(row, 2)) for row in await _rows(session, statement)]


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
    read = _read(source, scope, DIMENSION_COLUMNS[dimension])
    assert read.key is not None
    statement: Select[Any] = (
        select(read.key, *read.sums())
        .where(*read.conditions)
        .group_by(read.key)
        .order_by(read.metric_sum(metric).desc(), read.key)
        .offset(offset)
    )
    if limit is not None:
        statement = statement.limit(limit)
    return [(row[0], _read_sums(row, 1)) for row in await _rows(session, statement)]


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
    read = _read(source, scope, None if dimension is None else DIMENSION_COLUMNS[dimension])
    time = read.time
    conditions = list(read.conditions)
    dimension_keys: list[ColumnElement[Any] | InstrumentedAttribute[Any]] = []
    if read.key is not None:
        if only is not None:
            conditions.append(read.key.in_(sorted(only)))
        if excluding:
            conditions.append(read.key.not_in(sorted(excluding)))
        if split:
            dimension_keys.append(read.key)
    split = bool(dimension_keys)
    postgres = session.get_bind().dialect.name == "postgresql"
    single_days = all((hi - lo).days == 1 for lo, hi in source.bounds)
    if source.daily and (single_days or not postgres):
        # Summed per day in the database (a few hundred days), placed in buckets here. The
        # org-wide rows of a dimension are one per day and value already: read as they are.
        if read.org_wide and split:
            measures = [read.column(name) for name in MEASURES]
            per_day = select(time, *dimension_keys, *measures).where(*conditions)
        else:
            per_day = (
                select(time, *dimension_keys, *read.sums())
                .where(*conditions)
                .group_by(time, *dimension_keys)
            )
        rows = await _rows(session, per_day)
        starts = [lo for lo, _ in source.bounds]
        offset = 2 if split else 1
        if single_days:  # one row per bucket (and value) already
            index_of = {day: index for index, day in enumerate(starts)}
            return [
                (index_of[row[0]], row[1] if split else None, _read_sums(row, offset))
                for row in rows
            ]
        merged: dict[tuple[int, str | None], Sums] = {}
        for row in rows:
            index = bisect_right(starts, row[0]) - 1
            key = (index, row[1] if split else None)
            sums = _read_sums(row, offset)
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
        statement = select(*keys, *read.sums()).where(*conditions).group_by(*keys)
    else:
        kind = Date if source.daily else UTCDateTime
        buckets = (
            values(column("idx", Integer), column("lo", kind), column("hi", kind), name="buckets")
            .data([(index, lo, hi) for index, (lo, hi) in enumerate(source.bounds)])
            .cte("buckets")
        )
        keys = [buckets.c.idx, *dimension_keys]
        statement = (
            select(*keys, *read.sums())
            .select_from(buckets)
            .join(read.table, (time >= buckets.c.lo) & (time < buckets.c.hi))
            .where(*conditions)
            .group_by(*keys)
        )
    answer = await _rows(session, statement)
    if not split:
        return [(int(row[0]), None, _read_sums(row, 1)) for row in answer]
    return [(int(row[0]), row[1], _read_sums(row, 2)) for row in answer]


def _contiguous(bounds: Sequence[tuple[Any, Any]]) -> bool:
    return all(bounds[n][1] == bounds[n + 1][0] for n in range(len(bounds) - 1))
