"""The pieces of an analytics answer: the pivot of a dimension (its groups ranked by a metric,
the rest summed as one, and the series per bucket), the top value of a dimension, and the labels
people read for each value (group and key names, members with their email)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.analytics import repository
from sluicegate.analytics.repository import Scope, Source
from sluicegate.analytics.sums import Sums
from sluicegate.analytics.windows import Window
from sluicegate.orgs import service as orgs
from sluicegate.orgs.authorize import OrgAccess, UsageVisibility
from sluicegate.orgs.models import Organization

# An activity answer names at most this many groups by default; the rest are summed in one
# "other" group, so a pivot over thousands of keys stays a readable (and bounded) answer.
DEFAULT_GROUPS = 20
OTHER = "(other)"
NO_VALUE = {
    "provider": "(no provider)",
    "app": "(no app)",
    "model": "(no model)",
    "deployment": "(no deployment)",
}
# Names are looked up this many ids at a time (a bound parameter each).
NAME_CHUNK = 500
# A pivot over at most this many buckets reads its series per bucket and value in one pass and
# ranks the values from it; over more, the database ranks and sums the rest (fewer rows back).
ONE_PASS_BUCKETS = 800


@dataclass(frozen=True, slots=True)
class Labelled:
    """A value of the pivot (a model, a group, a key, a member, a provider, an app, a
    deployment) and its sums."""

    id: str
    label: str
    sums: Sums


class Point(NamedTuple):
    """A bucket's sums of one group (a named tuple: a year's series is thousands of points)."""

    bucket_start: datetime
    group_id: str | None
    sums: Sums


@dataclass(frozen=True, slots=True)
class Reader:
    access: OrgAccess
    org: Organization
    visibility: UsageVisibility


async def pivot_of(
    session: AsyncSession,
    reader: Reader,
    window: Window,
    source: Source,
    scope: Scope,
    dimension: str | None,
    *,
    metric: str = "cost",
    limit: int = DEFAULT_GROUPS,
) -> tuple[list[Labelled], list[Point]]:
    """The groups of a dimension, the largest `metric` first (the first `limit` by name, the
    rest summed as OTHER), and the series per bucket and group; without a dimension, no groups
    and one point per bucket with usage."""
    if dimension is None:
        rows = await repository.series(session, source, scope, None)
        return [], _points(window, rows, {None: 0})
    if len(source.bounds) > ONE_PASS_BUCKETS:
        return await _pivot_in_the_database(
            session, reader, window, source, scope, dimension, metric=metric, limit=limit
        )
    pivot = await pivot_in_one_pass(
        session, reader, window, source, scope, dimension, metric=metric, limit=limit
    )
    return pivot.groups, pivot.series


@dataclass(frozen=True, slots=True)
class Pivot:
    groups: list[Labelled]
    series: list[Point]
    totals: Sums  # of every value
    values: int  # how many values had usage


async def pivot_in_one_pass(
    session: AsyncSession,
    reader: Reader,
    window: Window,
    source: Source,
    scope: Scope,
    dimension: str,
    *,
    metric: str,
    limit: int,
) -> Pivot:
    """_pivot over one read of the rollups: the series per bucket and value, from which the
    groups, their ranking and the totals follow here."""
    rows = await repository.series(session, source, scope, dimension)
    of_value: dict[str, list[Sums]] = defaultdict(list)
    for _, value, sums in rows:
        assert value is not None
        of_value[value].append(sums)
    per_value = {value: Sums.total(items) for value, items in of_value.items()}
    ranked = sorted(per_value.items(), key=lambda item: (-item[1].metric(metric), item[0]))
    top, rest = ranked[:limit], ranked[limit:]
    groups = await _named(session, reader, dimension, top)
    if rest:
        named = {value for value, _ in top}
        groups.append(_other(rest))
        others: dict[int, list[Sums]] = defaultdict(list)
        kept: list[tuple[int, str | None, Sums]] = []
        for index, value, sums in rows:
            if value in named:
                kept.append((index, value, sums))
            else:
                others[index].append(sums)
        rows = kept + [(index, OTHER, Sums.total(items)) for index, items in others.items()]
    order: dict[str | None, int] = {group.id: rank for rank, group in enumerate(groups)}
    totals = Sums.total(group.sums for group in groups)
    return Pivot(groups, _points(window, rows, order), totals, len(per_value))


async def _pivot_in_the_database(
    session: AsyncSession,
    reader: Reader,
    window: Window,
    source: Source,
    scope: Scope,
    dimension: str,
    *,
    metric: str,
    limit: int,
) -> tuple[list[Labelled], list[Point]]:
    """_pivot for windows of many buckets (hours over months): the ranking first, then the
    series of the named values and of the rest summed in the database, so the rows that come
    back stay (buckets x named values)."""
    ranked = await repository.by_dimension(session, source, scope, dimension, metric=metric)
    top, rest = ranked[:limit], ranked[limit:]
    groups = await _named(session, reader, dimension, top)
    names = [value for value, _ in top]
    rows = await repository.series(session, source, scope, dimension, only=names if rest else None)
    if rest:
        groups.append(_other(rest))
        others = await repository.series(
            session, source, scope, dimension, split=False, excluding=names
        )
        rows += [(index, OTHER, sums) for index, _, sums in others]
    order: dict[str | None, int] = {group.id: rank for rank, group in enumerate(groups)}
    return groups, _points(window, rows, order)


async def _named(
    session: AsyncSession, reader: Reader, dimension: str, top: list[tuple[str, Sums]]
) -> list[Labelled]:
    labels = await _labels(session, reader, dimension, [value for value, _ in top])
    return [Labelled(value, labels[value], sums) for value, sums in top]


def _other(rest: list[tuple[str, Sums]]) -> Labelled:
    """The groups past the limit, summed as one."""
    return Labelled(OTHER, f"Other ({len(rest)} more)", Sums.total(s for _, s in rest))


def _points(
    window: Window, rows: list[tuple[int, str | None, Sums]], order: dict[str | None, int]
) -> list[Point]:
    """The rows as points, buckets in order and, within a bucket, the groups in `order`."""
    last, rank, starts = len(order), order.get, window.starts
    keyed = sorted((index, rank(value, last), n) for n, (index, value, _) in enumerate(rows))
    return [Point(starts[index], rows[n][1], rows[n][2]) for index, _, n in keyed]


async def top_of(
    session: AsyncSession, source: Source, scope: Scope, dimension: str
) -> Labelled | None:
    rows = await repository.by_dimension(session, source, scope, dimension, limit=1)
    if not rows:
        return None
    value, sums = rows[0]
    return Labelled(value, value or NO_VALUE[dimension], sums)


async def _labels(
    session: AsyncSession, reader: Reader, dimension: str, ids: list[str]
) -> dict[str, str]:
    """What people read for each value: names of groups, keys (with their prefix) and members
    (with their email); models, providers, apps and deployments are their own names."""
    if dimension == "project":
        groups = await orgs.groups_of(session, reader.access, ids)
        return {value: groups[value].name if value in groups else value for value in ids}
    if dimension == "key":
        found: dict[str, tuple[str, str]] = {}
        for chunk in in_chunks(ids):
            found.update(await repository.key_names(session, reader.org.id, chunk))
        return {
            value: f"{found[value][0]} ({found[value][1]})" if value in found else value
            for value in ids
        }
    if dimension == "member":
        people = await people_named(session, ids)
        return {value: member_label(value, *people.get(value, (None, None))) for value in ids}
    return {value: value or NO_VALUE[dimension] for value in ids}


def member_label(user_id: str, name: str | None, email: str | None) -> str:
    if name and email:
        return f"{name} <{email}>"
    return name or email or user_id


async def people_named(session: AsyncSession, ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    found: dict[str, tuple[str, str]] = {}
    for chunk in in_chunks(ids):
        found.update(await repository.member_names(session, chunk))
    return found


def in_chunks(ids: Sequence[str]) -> list[list[str]]:
    return [list(ids[start : start + NAME_CHUNK]) for start in range(0, len(ids), NAME_CHUNK)]
