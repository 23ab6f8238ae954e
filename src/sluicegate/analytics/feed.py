"""The activity feed: one line per proxied request (metadata only, never content), newest first,
for the usage the caller reads (orgs.authorize.usage_visibility), paged by cursor as JSON and
streamed as CSV in keyset pages so any length of history exports in bounded memory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from sluicegate.analytics import feed_repository as repository
from sluicegate.analytics.feed_repository import FeedFilters
from sluicegate.core.actors import Actor
from sluicegate.core.errors import InvalidInput, SluicegateError
from sluicegate.core.timezones import zone
from sluicegate.metering.event import routing_of
from sluicegate.metering.rollups import BLOCKED_ERROR_TYPES
from sluicegate.orgs import service as orgs
from sluicegate.orgs.authorize import Action, UsageVisibility, authorize, usage_visibility

__all__ = ["FeedFilters"]

# Rows per query of a CSV export: each page is read, written out and dropped before the next,
# so memory stays a few megabytes whatever the length of the export.
EXPORT_PAGE = 5000
OUTCOMES = ("ok", "error", "blocked")

log = logging.getLogger("sluicegate.analytics")

Bound = date | datetime


class ExportIncomplete(SluicegateError):
    """The database failed while an export was streaming: what was sent stands, the rest is
    missing. Raised inside the stream, after the answer's status went out."""

    status_code = 503
    code = "export_incomplete"


@dataclass(frozen=True, slots=True)
class FeedQuery:
    """The feed's filters as the API takes them: `since`/`until` are RFC 3339 instants (until
    exclusive) or dates in the org's timezone (both inclusive)."""

    key_id: str | None = None
    user_id: str | None = None
    model: str | None = None
    outcome: str | None = None
    status_code: int | None = None
    since: Bound | None = None
    until: Bound | None = None
    provider: tuple[str, ...] | None = None  # any of these
    deployment: tuple[str, ...] | None = None  # any of these


@dataclass(frozen=True, slots=True)
class FeedEntry:
    request_id: str
    created_at: datetime
    group_id: str
    group_name: str | None
    key_id: str
    key_name: str | None
    key_prefix: str | None
    user_id: str
    member_name: str | None
    member_email: str | None
    requested_model: str
    served_model: str | None
    provider: str | None
    app: str | None
    status_code: int
    error_type: str | None
    outcome: str
    stream: bool
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_nusd: int
    latency_ms: int
    ttft_ms: int | None
    usage_estimated: bool
    # How the request was served (metering/event.py `Routing`); None where the event does not
    # say, as for a request that reached no deployment.
    deployment: str | None
    attempts: int | None
    fallback: bool | None
    fallback_model: str | None


@dataclass(slots=True)
class _Names:
    """Names of keys, members and groups, looked up once per id (an export reuses them across
    pages: an org has far fewer of them than requests)."""

    org_id: str
    keys: dict[str, tuple[str, str]] = field(default_factory=dict)
    members: dict[str, tuple[str, str]] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)
    asked: set[tuple[str, str]] = field(default_factory=set)

    def _missing(self, kind: str, ids: Iterable[str]) -> set[str]:
        wanted = {value for value in ids if (kind, value) not in self.asked}
        self.asked.update((kind, value) for value in wanted)
        return wanted

    async def load(self, session: AsyncSession, rows: list[Any]) -> None:
        keys = self._missing("key", (row.key_id for row in rows))
        members = self._missing("member", (row.user_id for row in rows))
        groups = self._missing("group", (row.group_id for row in rows))
        self.keys.update(await repository.key_names(session, self.org_id, keys))
        self.members.update(await repository.member_names(session, members))
        self.groups.update(await repository.group_names(session, self.org_id, groups))

    def entry(self, row: Any) -> FeedEntry:
        key_name, key_prefix = self.keys.get(row.key_id, (None, None))
        member_name, member_email = self.members.get(row.user_id, (None, None))
        routing = routing_of(row.routing)
        return FeedEntry(
            request_id=row.request_id,
            created_at=row.created_at,
            group_id=row.group_id,
            group_name=self.groups.get(row.group_id),
            key_id=row.key_id,
            key_name=key_name,
            key_prefix=key_prefix,
            user_id=row.user_id,
            member_name=member_name or None,
            member_email=member_email,
            requested_model=row.requested_model,
            served_model=row.served_model,
            provider=row.provider,
            app=row.app,
            status_code=row.status_code,
            error_type=row.error_type,
            outcome=outcome_of(row.status_code, row.error_type),
            stream=bool(row.stream),
            prompt_tokens=row.prompt_tokens or 0,
            completion_tokens=row.completion_tokens or 0,
            cached_tokens=row.cached_tokens or 0,
            cost_nusd=row.cost_nusd or 0,
            latency_ms=row.latency_ms or 0,
            ttft_ms=row.ttft_ms,
            usage_estimated=bool(row.usage_estimated),
            deployment=routing.deployment,
            attempts=routing.attempts,
            fallback=routing.fallback,
            fallback_model=routing.fallback_model,
        )


def outcome_of(status_code: int, error_type: str | None) -> str:
    if error_type in BLOCKED_ERROR_TYPES:
        return "blocked"
    return "error" if status_code >= repository.FIRST_ERROR_STATUS else "ok"


# --- reading -------------------------------------------------------------------------------------


async def list_activity(
    session: AsyncSession,
    actor: Actor,
    org_id: str,
    query: FeedQuery,
    *,
    cursor: str | None,
    limit: int,
) -> tuple[list[FeedEntry], str | None]:
    """A page of the feed, newest first. The cursor is the last event's (time, request id), so
    events stored meanwhile never shift a page: newer ones are before the first page, and none
    is skipped or repeated."""
    visibility, filters = await _access(session, actor, org_id, query)
    before = repository.decode_key(cursor)
    rows = await repository.events(
        session, org_id, visibility, filters, before=before, limit=limit + 1
    )
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = repository.encode_key(rows[-1].created_at, rows[-1].request_id)
    names = _Names(org_id)
    await names.load(session, rows)
    return [names.entry(row) for row in rows], next_cursor


async def export_activity(
    session: AsyncSession, actor: Actor, org_id: str, query: FeedQuery
) -> AsyncIterator[list[FeedEntry]]:
    """Checks access and the filters now, then yields every matching event newest first in pages,
    each read in a session of its own while the answer streams (the request's transaction is
    over by then). A database failure mid-way is logged and raised as ExportIncomplete."""
    visibility, filters = await _access(session, actor, org_id, query)
    return _pages(session.bind, org_id, visibility, filters)


async def _pages(
    bind: AsyncEngine | AsyncConnection | None,
    org_id: str,
    visibility: UsageVisibility,
    filters: FeedFilters,
) -> AsyncIterator[list[FeedEntry]]:
    names = _Names(org_id)
    before: repository.FeedKey | None = None
    sent = 0
    while True:
        try:
            async with AsyncSession(bind, expire_on_commit=False) as fresh:
                rows = await repository.events(
                    fresh, org_id, visibility, filters, before=before, limit=EXPORT_PAGE
                )
                await names.load(fresh, rows)
        except (SQLAlchemyError, OSError) as exc:
            log.error(
                "activity export stopped: the database failed after %d rows",
                sent,
                exc_info=True,
                extra={"org_id": org_id, "rows_sent": sent},
            )
            raise ExportIncomplete(
                f"the database failed after {sent} rows ({type(exc).__name__}); the rows above "
                "are correct but the export is incomplete: run it again",
                details={"rows_sent": sent},
            ) from exc
        if rows:
            sent += len(rows)
            yield [names.entry(row) for row in rows]
        if len(rows) < EXPORT_PAGE:
            return
        before = rows[-1].created_at, rows[-1].request_id


async def _access(
    session: AsyncSession, actor: Actor, org_id: str, query: FeedQuery
) -> tuple[UsageVisibility, FeedFilters]:
    access = await orgs.load_access(session, actor, org_id)
    authorize(access, Action.ORG_READ)
    org = await orgs.organization_of(session, access)
    visibility = usage_visibility(access, org.members_see_org_feed)
    return visibility, resolve_filters(query, org.timezone)


def resolve_filters(query: FeedQuery, timezone: str) -> FeedFilters:
    """Dates become instants in the org's timezone: `since` a day's first moment, `until` the
    first moment of the day after (dates are inclusive, instants `until` exclusive)."""
    if query.outcome is not None and query.outcome not in OUTCOMES:
        raise InvalidInput(
            f"status: must be one of {', '.join(OUTCOMES)}", details={"field": "status"}
        )
    since = _instant(query.since, timezone, next_day=False)
    until = _instant(query.until, timezone, next_day=True)
    if since is not None and until is not None and since >= until:
        raise InvalidInput(
            "from: must be before `to` (dates are inclusive, instants in `to` exclusive)",
            details={"field": "from"},
        )
    return FeedFilters(
        key_id=query.key_id,
        user_id=query.user_id,
        model=query.model,
        outcome=query.outcome,
        status_code=query.status_code,
        since=since,
        until=until,
        provider=query.provider or None,
        deployment=query.deployment or None,
    )


def _instant(bound: Bound | None, timezone: str, *, next_day: bool) -> datetime | None:
    if bound is None or isinstance(bound, datetime):
        return bound
    name = "to" if next_day else "from"
    try:
        day = bound + timedelta(days=1) if next_day else bound
        return datetime.combine(day, time.min, tzinfo=zone(timezone)).astimezone(UTC)
    except OverflowError:
        raise InvalidInput(
            f"{name}: {bound.isoformat()} is out of range", details={"field": name}
        ) from None
