"""The SQL of the activity feed: an org's usage events newest first in (created_at, request_id)
order, filtered and limited to whose usage the caller reads; the names the feed shows for keys,
members and groups; and the visibility condition the insights share."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from sluicegate.core.errors import InvalidInput
from sluicegate.core.pagination import decode_cursor, encode_cursor
from sluicegate.identity.models import User
from sluicegate.keys.models import ApiKey
from sluicegate.metering.models import UsageEvent
from sluicegate.metering.rollups import BLOCKED_ERROR_TYPES
from sluicegate.orgs.authorize import UsageVisibility
from sluicegate.orgs.models import PATH_SEPARATOR, Group, in_subtrees

# Where an event stands in the feed's one total order: its time, then its request id (two
# requests may share a microsecond).
FeedKey = tuple[datetime, str]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# A status code from this one up is a failed request (as the rollups count errors).
FIRST_ERROR_STATUS = 400
_BLOCKED = sorted(BLOCKED_ERROR_TYPES)

# What a feed row reads: metadata only (never content). Of the routing, the feed shows the
# fields metering/event.py `routing_of` reads.
FEED_COLUMNS = (
    UsageEvent.request_id,
    UsageEvent.created_at,
    UsageEvent.group_id,
    UsageEvent.key_id,
    UsageEvent.user_id,
    UsageEvent.requested_model,
    UsageEvent.served_model,
    UsageEvent.provider,
    UsageEvent.app,
    UsageEvent.status_code,
    UsageEvent.error_type,
    UsageEvent.stream,
    UsageEvent.prompt_tokens,
    UsageEvent.completion_tokens,
    UsageEvent.cached_tokens,
    UsageEvent.cost_nusd,
    UsageEvent.latency_ms,
    UsageEvent.ttft_ms,
    UsageEvent.usage_estimated,
    UsageEvent.routing,
)
# The deployment that served, read from the routing (a JSON field on either backend).
_DEPLOYMENT = UsageEvent.routing["deployment"].as_string()


@dataclass(frozen=True, slots=True)
class FeedFilters:
    key_id: str | None = None
    user_id: str | None = None
    model: str | None = None  # requested or served
    outcome: str | None = None  # ok | error | blocked
    status_code: int | None = None
    since: datetime | None = None  # at or after
    until: datetime | None = None  # before
    provider: tuple[str, ...] | None = None  # any of these
    deployment: tuple[str, ...] | None = None  # any of these


# --- cursors -------------------------------------------------------------------------------------


def encode_key(created_at: datetime, request_id: str) -> str:
    """The cursor after an event: its time in exact microseconds and its request id."""
    micros = (created_at - _EPOCH) // _MICROSECOND
    return encode_cursor(f"{micros}:{request_id}")


def decode_key(cursor: str | None) -> FeedKey | None:
    value: str | None = decode_cursor(cursor, str)
    if value is None:
        return None
    micros, separator, request_id = value.partition(":")
    try:
        if not separator or not request_id:
            raise ValueError(value)
        return _EPOCH + int(micros) * _MICROSECOND, request_id
    except (ValueError, OverflowError):
        raise InvalidInput(
            "cursor: not a cursor this list returned; pass next_cursor from the previous page",
            details={"field": "cursor"},
        ) from None


# --- conditions ----------------------------------------------------------------------------------


def visible_usage(
    org_id: str,
    visibility: UsageVisibility,
    group_column: InstrumentedAttribute[str],
    user_column: InstrumentedAttribute[str],
) -> ColumnElement[bool]:
    """Usage of a group in the caller's subtrees (groups found by path, deleted ones too, as
    their usage stays), or the caller's own."""
    if visibility.subtrees is None:
        return true()
    own = user_column == visibility.user_id
    if not visibility.subtrees:
        return own
    paths = [PATH_SEPARATOR.join(path) for path in visibility.subtrees]
    groups = select(Group.id).where(Group.org_id == org_id, in_subtrees(Group.path, paths))
    return or_(group_column.in_(groups), own)


def _outcome(outcome: str) -> ColumnElement[bool]:
    """ok, error, blocked as the rollups count them: a guardrail block is not an error."""
    blocked = UsageEvent.error_type.in_(_BLOCKED)
    if outcome == "blocked":
        return blocked
    not_blocked = or_(UsageEvent.error_type.is_(None), UsageEvent.error_type.not_in(_BLOCKED))
    if outcome == "error":
        return and_(UsageEvent.status_code >= FIRST_ERROR_STATUS, not_blocked)
    return and_(UsageEvent.status_code < FIRST_ERROR_STATUS, not_blocked)


def _conditions(
    org_id: str, visibility: UsageVisibility, filters: FeedFilters
) -> list[ColumnElement[bool]]:
    conditions = [
        UsageEvent.org_id == org_id,
        visible_usage(org_id, visibility, UsageEvent.group_id, UsageEvent.user_id),
    ]
    if filters.key_id is not None:
        conditions.append(UsageEvent.key_id == filters.key_id)
    if filters.user_id is not None:
        conditions.append(UsageEvent.user_id == filters.user_id)
    if filters.model is not None:
        conditions.append(
            or_(
                UsageEvent.requested_model == filters.model,
                UsageEvent.served_model == filters.model,
            )
        )
    if filters.outcome is not None:
        conditions.append(_outcome(filters.outcome))
    if filters.status_code is not None:
        conditions.append(UsageEvent.status_code == filters.status_code)
    if filters.provider is not None:
        conditions.append(UsageEvent.provider.in_(sorted(filters.provider)))
    if filters.deployment is not None:
        conditions.append(_DEPLOYMENT.in_(sorted(filters.deployment)))
    if filters.since is not None:
        conditions.append(UsageEvent.created_at >= filters.since)
    if filters.until is not None:
        conditions.append(UsageEvent.created_at < filters.until)
    return conditions


def _before(key: FeedKey) -> ColumnElement[bool]:
    # Spelled out rather than as a row value: `created_at <= at` alone bounds the index scan
    # and prunes the monthly partitions on Postgres; the request id only breaks a tie.
    at, request_id = key
    column = UsageEvent.created_at
    return and_(column <= at, or_(column < at, UsageEvent.request_id < request_id))


# --- rows ----------------------------------------------------------------------------------------


async def events(
    session: AsyncSession,
    org_id: str,
    visibility: UsageVisibility,
    filters: FeedFilters,
    *,
    before: FeedKey | None,
    limit: int,
) -> list[Any]:
    """Up to `limit` events older than `before` (all of them when None), newest first, read
    along the (org_id, created_at, request_id) index."""
    statement = select(*FEED_COLUMNS).where(*_conditions(org_id, visibility, filters))
    if before is not None:
        statement = statement.where(_before(before))
    statement = statement.order_by(
        UsageEvent.created_at.desc(), UsageEvent.request_id.desc()
    ).limit(limit)
    result = await session.execute(statement)
    return list(result.all())


# --- names ---------------------------------------------------------------------------------------


async def key_names(
    session: AsyncSession, org_id: str, key_ids: Collection[str]
) -> dict[str, tuple[str, str]]:
    """(name, prefix) of the org's keys by id, revoked ones included."""
    if not key_ids:
        return {}
    rows = await session.execute(
        select(ApiKey.id, ApiKey.name, ApiKey.prefix).where(
            ApiKey.org_id == org_id, ApiKey.id.in_(sorted(key_ids))
        )
    )
    return {key_id: (name, prefix) for key_id, name, prefix in rows}


async def member_names(
    session: AsyncSession, user_ids: Collection[str]
) -> dict[str, tuple[str, str]]:
    """(name, email) of people by id."""
    if not user_ids:
        return {}
    rows = await session.execute(
        select(User.id, User.name, User.email).where(User.id.in_(sorted(user_ids)))
    )
    return {user_id: (name, email) for user_id, name, email in rows}


async def group_names(
    session: AsyncSession, org_id: str, group_ids: Collection[str]
) -> dict[str, str]:
    """Names of the org's groups by id, deleted ones included (their usage stays)."""
    if not group_ids:
        return {}
    rows = await session.execute(
        select(Group.id, Group.name).where(Group.org_id == org_id, Group.id.in_(sorted(group_ids)))
    )
    return {group_id: name for group_id, name in rows}
