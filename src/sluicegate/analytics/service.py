"""The rules of analytics over the usage rollups: activity pivoted by a dimension over time, the
members table, one member's and one key's statistics, for the usage the caller reads
(orgs.authorize.usage_visibility: owners the whole org, admins and viewers their subtrees,
members their own usage, and everyone their own requests).

Which rollups answer: the org's daily rollups when the query's timezone is the org's own and
every bucket boundary is a local midnight (days, weeks and months between dates), otherwise the
15-minute rollups; among the daily ones, the org-wide rows of one dimension when the caller reads
the whole org and gives no filter. All hold the same sums, so all give the same numbers to the
nano-USD.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.analytics import repository
from sluicegate.analytics.pivots import (
    DEFAULT_GROUPS,
    ONE_PASS_BUCKETS,
    OTHER,
    Labelled,
    Point,
    Reader,
    in_chunks,
    member_label,
    people_named,
    pivot_in_one_pass,
    pivot_of,
    top_of,
)
from sluicegate.analytics.repository import DIMENSION_COLUMNS, METRICS, Scope, Source
from sluicegate.analytics.sums import Sums
from sluicegate.analytics.windows import Window, resolve_window
from sluicegate.core.actors import Actor
from sluicegate.core.errors import InvalidInput, NotFound
from sluicegate.core.pagination import decode_cursor, encode_cursor
from sluicegate.keys import service as keys
from sluicegate.orgs import membership_service
from sluicegate.orgs import service as orgs
from sluicegate.orgs.authorize import (
    Action,
    UsageOf,
    authorize,
    usage_visibility,
)
from sluicegate.orgs.models import Organization

__all__ = ["DEFAULT_GROUPS", "OTHER", "Labelled", "Point", "Sums", "member_label"]

DIMENSIONS = tuple(DIMENSION_COLUMNS)
MAX_GROUPS = 100
# A member's and a key's statistics show their cost by model: at most this many models by name.
DETAIL_MODELS = 50


@dataclass(frozen=True, slots=True)
class WindowQuery:
    """`from`/`to`/`timezone`/`granularity` as the API received them (parsed in windows)."""

    since: str | None = None
    until: str | None = None
    timezone: str | None = None
    granularity: str | None = None


@dataclass(frozen=True, slots=True)
class Filters:
    group_id: str | None = None  # the group's whole subtree
    user_id: str | None = None
    model: str | None = None
    key_id: str | None = None
    provider: tuple[str, ...] | None = None  # any of these
    app: str | None = None
    deployment: tuple[str, ...] | None = None  # any of these


@dataclass(frozen=True, slots=True)
class Cards:
    """The summary of a view: its sums, and how many members and models had usage."""

    sums: Sums
    members: int
    models: int

    @property
    def avg_tokens_per_member(self) -> int:
        return _ratio(self.sums.tokens, self.members)

    @property
    def avg_cost_per_call_nusd(self) -> int:
        return _ratio(self.sums.cost_nusd, self.sums.requests)

    @property
    def error_rate(self) -> float:
        return error_rate(self.sums)


def _ratio(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half up (0 without a denominator)."""
    if not denominator:
        return 0
    return int((Decimal(numerator) / denominator).quantize(Decimal(1), ROUND_HALF_UP))


def error_rate(sums: Sums) -> float:
    """Failed requests (not those a guardrail blocked) per request, to four decimals."""
    return round(sums.errors / sums.requests, 4) if sums.requests else 0.0


@dataclass(frozen=True, slots=True)
class View:
    """What every view shares: the org, the window, which rollups answered, the summary."""

    org_name: str
    window: Window
    daily: bool
    cards: Cards


@dataclass(frozen=True, slots=True)
class Activity:
    view: View
    group_by: str | None
    metric: str
    groups: list[Labelled]
    series: list[Point]


@dataclass(frozen=True, slots=True)
class MemberStats:
    user_id: str
    name: str | None
    email: str | None
    sums: Sums
    key_count: int


@dataclass(frozen=True, slots=True)
class Members:
    view: View
    members: list[MemberStats]
    next_cursor: str | None
    # The whole window's cost over time (the PDF's chart); empty for a JSON page.
    series: list[Point] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class MemberDetail:
    view: View
    member: MemberStats
    top_model: Labelled | None
    top_provider: Labelled | None
    top_app: Labelled | None
    by_model: list[Labelled]
    series: list[Point]


@dataclass(frozen=True, slots=True)
class KeyDetail:
    view: View
    key_id: str
    name: str
    prefix: str
    group_id: str
    owner_user_id: str
    status: str
    by_model: list[Labelled]
    series: list[Point]


# --- views ---------------------------------------------------------------------------------------


async def activity(
    session: AsyncSession,
    actor: Actor,
    org_id: str,
    when: WindowQuery,
    filters: Filters,
    *,
    group_by: str | None,
    metric: str,
    limit: int = DEFAULT_GROUPS,
    now: datetime,
    prefer_daily: bool = True,
    prefer_org_wide: bool = True,
) -> Activity:
    """Totals, groups and series of the usage the caller reads. `prefer_daily` False reads the
    15-minute rollups even where the daily ones would do, `prefer_org_wide` False the daily
    rollups where the org-wide ones would do (they agree; tests compare them)."""
    _check_choice("groupBy", group_by, DIMENSIONS, optional=True)
    _check_choice("metric", metric, METRICS)
    reader = await _reader(session, actor, org_id)
    window = _window(when, reader.org, now)
    source = _source(window, reader.org.timezone, prefer_daily, prefer_org_wide)
    scope = await _scope(session, reader, filters)
    if group_by is None or len(source.bounds) > ONE_PASS_BUCKETS:
        view = await _view(session, reader, window, source, scope)
        groups, series = await pivot_of(
            session, reader, window, source, scope, group_by, metric=metric, limit=limit
        )
        return Activity(view, group_by, metric, groups, series)
    # The totals follow from the pivot's rows; only a count of models or members is left.
    pivot = await pivot_in_one_pass(
        session, reader, window, source, scope, group_by, metric=metric, limit=limit
    )
    models, members = pivot.values, pivot.values
    if group_by != "model":
        models = await repository.distinct_count(session, source, scope, "model")
    if group_by != "member":
        members = await repository.distinct_count(session, source, scope, "user_id")
    cards = Cards(pivot.totals, members, models)
    view = View(reader.org.name, window, source.daily, cards)
    return Activity(view, group_by, metric, pivot.groups, pivot.series)


async def members(
    session: AsyncSession,
    actor: Actor,
    org_id: str,
    when: WindowQuery,
    filters: Filters,
    *,
    cursor: str | None,
    limit: int | None,
    now: datetime,
    with_series: bool = False,
) -> Members:
    """One row per member with usage in the window, the largest spend first. `limit` None reads
    every member (exports); the cursor is the offset of the next page."""
    reader = await _reader(session, actor, org_id)
    window = _window(when, reader.org, now)
    source = _source(window, reader.org.timezone, prefer_daily=True)
    scope = await _scope(session, reader, filters)
    offset = decode_cursor(cursor, int) or 0
    if offset < 0:
        raise InvalidInput("cursor: not a cursor this list returned", details={"field": "cursor"})
    # One read of the rollups summed per (member, model) gives the cards and every member's
    # sums (or, from the org-wide rollups, one per member and a count of models); the ranking
    # (as by_dimension orders it) and the page are cut here.
    per_member: dict[str, Sums]
    if repository.answers_org_wide(source, scope):
        per_member = dict(await repository.by_dimension(session, source, scope, "member"))
        models = await repository.distinct_count(session, source, scope, "model")
    else:
        names: set[str] = set()
        of_member: dict[str, list[Sums]] = defaultdict(list)
        for user_id, model, sums in await repository.by_member_and_model(session, source, scope):
            names.add(model)
            of_member[user_id].append(sums)
        per_member = {user_id: Sums.total(items) for user_id, items in of_member.items()}
        models = len(names)
    totals = Sums.total(per_member.values())
    view = View(reader.org.name, window, source.daily, Cards(totals, len(per_member), models))
    ranked = sorted(per_member.items(), key=lambda item: (-item[1].cost_nusd, item[0]))
    rows = ranked[offset:] if limit is None else ranked[offset : offset + limit + 1]
    next_cursor = None
    if limit is not None and len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(offset + limit)
    stats = await _member_stats(session, org_id, rows)
    series: list[Point] = []
    if with_series:
        _, series = await pivot_of(session, reader, window, source, scope, None)
    return Members(view, stats, next_cursor, series)


async def member_detail(
    session: AsyncSession,
    actor: Actor,
    org_id: str,
    user_id: str,
    when: WindowQuery,
    *,
    now: datetime,
) -> MemberDetail:
    """One member's usage that the caller reads: 403 unless they read this member (themselves,
    owners, admins and viewers above the member's home group, everyone when the org opens its
    usage to members); 404 for anyone who never was a member of the org."""
    reader = await _reader(session, actor, org_id)
    target = await membership_service.member_target(session, org_id, user_id)
    if target is None:
        raise NotFound(f"member {user_id} not found")
    authorize(reader.access, Action.USAGE_READ, UsageOf(target, reader.org.members_see_org_feed))
    window = _window(when, reader.org, now)
    source = _source(window, reader.org.timezone, prefer_daily=True)
    scope = Scope(org_id, reader.visibility, user_id=user_id)
    view = await _view(session, reader, window, source, scope)
    by_model, series = await pivot_of(
        session, reader, window, source, scope, "model", metric="cost", limit=DETAIL_MODELS
    )
    tops = [await top_of(session, source, scope, name) for name in ("provider", "app")]
    member = (await _member_stats(session, org_id, [(user_id, view.cards.sums)]))[0]
    top_model = by_model[0] if by_model and by_model[0].id != OTHER else None
    return MemberDetail(view, member, top_model, tops[0], tops[1], by_model, series)


async def key_detail(
    session: AsyncSession,
    actor: Actor,
    org_id: str,
    key_id: str,
    when: WindowQuery,
    *,
    now: datetime,
) -> KeyDetail:
    """One key's usage: 403 unless the caller reads the key (its owner, owners, admins and
    viewers at its group or above, everyone when the org opens its usage); 404 for unknown ids."""
    reader = await _reader(session, actor, org_id)
    key, target = await keys.key_and_target(session, reader.access, key_id)
    authorize(reader.access, Action.USAGE_READ, UsageOf(target, reader.org.members_see_org_feed))
    window = _window(when, reader.org, now)
    source = _source(window, reader.org.timezone, prefer_daily=True)
    scope = Scope(org_id, reader.visibility, key_id=key_id)
    view = await _view(session, reader, window, source, scope)
    by_model, series = await pivot_of(
        session, reader, window, source, scope, "model", metric="cost", limit=DETAIL_MODELS
    )
    return KeyDetail(
        view,
        key.id,
        key.name,
        key.prefix,
        key.group_id,
        key.owner_user_id,
        key.status,
        by_model,
        series,
    )


# --- pieces --------------------------------------------------------------------------------------


async def _reader(session: AsyncSession, actor: Actor, org_id: str) -> Reader:
    if session.get_bind().dialect.name == "postgresql":
        # The driver prepares every statement; after five runs Postgres may keep a generic plan,
        # blind to how many rollup rows this window and org hold (seen: 100x slower).
        await session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
    access = await orgs.load_access(session, actor, org_id)
    authorize(access, Action.ORG_READ)
    org = await orgs.organization_of(session, access)
    return Reader(access, org, usage_visibility(access, org.members_see_org_feed))


def _window(when: WindowQuery, org: Organization, now: datetime) -> Window:
    return resolve_window(
        since=when.since,
        until=when.until,
        timezone=when.timezone,
        granularity=when.granularity,
        org_timezone=org.timezone,
        now=now,
    )


def _source(
    window: Window, org_timezone: str, prefer_daily: bool, prefer_org_wide: bool = True
) -> Source:
    if prefer_daily and window.timezone == org_timezone and window.local_days is not None:
        return Source(True, window.day_bounds, org_timezone, org_wide=prefer_org_wide)
    return Source(False, window.bounds, org_timezone)


def _check_choice(
    name: str, value: str | None, choices: Sequence[str], *, optional: bool = False
) -> None:
    if (value is None and optional) or value in choices:
        return
    raise InvalidInput(f"{name}: must be one of {', '.join(choices)}", details={"field": name})


async def _scope(session: AsyncSession, reader: Reader, filters: Filters) -> Scope:
    group_path = None
    if filters.group_id is not None:
        groups = await orgs.groups_of(session, reader.access, [filters.group_id])
        if filters.group_id not in groups:
            raise NotFound(f"group {filters.group_id} not found", details={"field": "group_id"})
        group_path = groups[filters.group_id].path
    return Scope(
        reader.org.id,
        reader.visibility,
        group_path=group_path,
        user_id=filters.user_id,
        model=filters.model,
        key_id=filters.key_id,
        provider=filters.provider or None,
        app=filters.app,
        deployment=filters.deployment or None,
    )


async def _view(
    session: AsyncSession, reader: Reader, window: Window, source: Source, scope: Scope
) -> View:
    sums, models, members = await repository.totals(session, source, scope)
    return View(reader.org.name, window, source.daily, Cards(sums, members, models))


async def _member_stats(
    session: AsyncSession, org_id: str, rows: Sequence[tuple[str, Sums]]
) -> list[MemberStats]:
    ids = [user_id for user_id, _ in rows]
    people = await people_named(session, ids)
    counts: dict[str, int] = {}
    for chunk in in_chunks(ids):
        counts.update(await membership_service.key_counts(session, org_id, chunk))
    return [
        MemberStats(
            user_id,
            people.get(user_id, (None, None))[0] or None,
            people.get(user_id, (None, None))[1],
            sums,
            counts.get(user_id, 0),
        )
        for user_id, sums in rows
    ]
