"""The SQL of reading the audit trail: filtered, newest first, by sequence number."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.audit.models import AuditEvent
from sluicegate.core.pagination import paginate
from sluicegate.orgs.models import Group, in_subtrees


@dataclass(frozen=True, slots=True)
class AuditFilters:
    """What a reader narrows the trail to; every field is optional."""

    action: str | None = None  # "key" matches every key.* action, "key.create" only itself
    actor_user_id: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    since: datetime | None = None  # at or after
    until: datetime | None = None  # before


async def list_events(
    session: AsyncSession,
    chain: str,
    filters: AuditFilters,
    *,
    subtrees: list[str] | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[AuditEvent], str | None]:
    statement = select(AuditEvent).where(AuditEvent.org_id == chain)
    if subtrees is not None:
        statement = statement.join(Group, Group.id == AuditEvent.group_id).where(
            in_subtrees(Group.path, subtrees)
        )
    if filters.action is not None:
        # "key" matches every key.* action; "key.create" only itself.
        statement = statement.where(
            (AuditEvent.action == filters.action)
            | AuditEvent.action.startswith(filters.action + ".", autoescape=True)
        )
    if filters.actor_user_id is not None:
        statement = statement.where(AuditEvent.actor_user_id == filters.actor_user_id)
    if filters.target_type is not None:
        statement = statement.where(AuditEvent.target_type == filters.target_type)
    if filters.target_id is not None:
        statement = statement.where(AuditEvent.target_id == filters.target_id)
    if filters.since is not None:
        statement = statement.where(AuditEvent.created_at >= filters.since)
    if filters.until is not None:
        statement = statement.where(AuditEvent.created_at < filters.until)
    return await paginate(
        session,
        statement,
        AuditEvent.seq,
        cursor=cursor,
        limit=limit,
        descending=True,
        key_type=int,
    )
