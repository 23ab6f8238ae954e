"""The SQL of reading the audit trail: filtered, newest first, by sequence number."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.audit.models import AuditEvent
from sluicegate.core.pagination import paginate
from sluicegate.orgs.models import Group, in_subtrees


async def list_events(
    session: AsyncSession,
    chain: str,
    *,
    subtrees: list[str] | None,
    action: str | None,
    actor_user_id: str | None,
    target_type: str | None,
    target_id: str | None,
    since: datetime | None,
    until: datetime | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[AuditEvent], str | None]:
    statement = select(AuditEvent).where(AuditEvent.org_id == chain)
    if subtrees is not None:
        statement = statement.join(Group, Group.id == AuditEvent.group_id).where(
            in_subtrees(Group.path, subtrees)
        )
    if action is not None:
        # "key" matches every key.* action; "key.create" only itself.
        statement = statement.where(
            (AuditEvent.action == action)
            | AuditEvent.action.startswith(action + ".", autoescape=True)
        )
    if actor_user_id is not None:
        statement = statement.where(AuditEvent.actor_user_id == actor_user_id)
    if target_type is not None:
        statement = statement.where(AuditEvent.target_type == target_type)
    if target_id is not None:
        statement = statement.where(AuditEvent.target_id == target_id)
    if since is not None:
        statement = statement.where(AuditEvent.created_at >= since)
    if until is not None:
        statement = statement.where(AuditEvent.created_at < until)
    return await paginate(
        session,
        statement,
        AuditEvent.seq,
        cursor=cursor,
        limit=limit,
        descending=True,
        key_type=int,
    )
