"""Writing audit events (inside the mutation's own transaction) and verifying a chain."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.expression import Executable

from sluicegate.audit.chain import (
    GENESIS_HASH,
    HASHED_FIELDS,
    OPTIONAL_HASHED_FIELDS,
    link_hash,
    redact,
)
from sluicegate.audit.models import AuditEvent, AuditHead
from sluicegate.core.actors import Actor, RequestMeta
from sluicegate.core.clock import utcnow
from sluicegate.core.ids import new_id

__all__ = ["ChainReport", "RequestMeta", "record", "record_action", "verify_chain"]

# Events are checked in pages so that verifying a long chain uses bounded memory.
VERIFY_PAGE = 1000


@dataclass(frozen=True, slots=True)
class ChainReport:
    org_id: str
    checked: int
    broken_event_id: str | None = None
    broken_seq: int | None = None
    problem: str | None = None

    @property
    def intact(self) -> bool:
        return self.broken_event_id is None and self.problem is None


async def record(
    session: AsyncSession,
    *,
    org_id: str,
    actor_user_id: str | None,
    action: str,
    target_type: str,
    target_id: str | None,
    group_id: str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    meta: RequestMeta | None = None,
    now: datetime | None = None,
) -> AuditEvent:
    """Append one event to the org's chain. Call it in the same transaction as the change."""
    meta = meta or RequestMeta()
    # The head row must exist before it can be locked: the first two writers of a new org
    # would otherwise both start a chain.
    await session.execute(_create_head_if_missing(session, org_id))
    head = await session.scalar(
        select(AuditHead).where(AuditHead.org_id == org_id).with_for_update()
    )
    assert head is not None
    fields: dict[str, Any] = {
        "id": new_id("aud"),
        "org_id": org_id,
        "seq": head.seq + 1,
        "created_at": now or utcnow(),
        "actor_user_id": actor_user_id,
        "action": action,
        "target_type": target_type,
        "target_id": target_id,
        "group_id": group_id,
        "before": redact(before) if before is not None else None,
        "after": redact(after) if after is not None else None,
        "ip": meta.ip,
        "user_agent": (meta.user_agent or "")[:400] or None,
        "request_id": meta.request_id,
    }
    digest = link_hash(head.hash, fields)
    event = AuditEvent(**fields, prev_hash=head.hash, hash=digest)
    session.add(event)
    head.seq, head.hash = event.seq, digest
    await session.flush()
    return event


async def record_action(
    session: AsyncSession,
    actor: Actor,
    *,
    org_id: str,
    action: str,
    target_type: str,
    target_id: str | None,
    group_id: str | None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEvent:
    """`record` for a change an authenticated actor made through the admin API."""
    return await record(
        session,
        org_id=org_id,
        actor_user_id=actor.user_id,
        action=action,
        target_type=target_type,
        target_id=target_id,
        group_id=group_id,
        before=before,
        after=after,
        meta=actor.meta,
    )


def _create_head_if_missing(session: AsyncSession, org_id: str) -> Executable:
    values = {"org_id": org_id, "seq": 0, "hash": GENESIS_HASH}
    if session.get_bind().dialect.name == "postgresql":
        return postgres_insert(AuditHead).values(values).on_conflict_do_nothing()
    return sqlite_insert(AuditHead).values(values).on_conflict_do_nothing()


async def verify_chain(session: AsyncSession, org_id: str) -> ChainReport:
    """Recompute the org's chain from the start; report the first event that does not fit."""
    previous, expected_seq, checked = GENESIS_HASH, 1, 0
    while True:
        page = list(
            await session.scalars(
                select(AuditEvent)
                .where(AuditEvent.org_id == org_id, AuditEvent.seq >= expected_seq)
                .order_by(AuditEvent.seq)
                .limit(VERIFY_PAGE)
            )
        )
        for event in page:
            if event.seq != expected_seq:
                return ChainReport(
                    org_id,
                    checked,
                    event.id,
                    event.seq,
                    f"expected event #{expected_seq}, found #{event.seq}",
                )
            fields = {name: getattr(event, name) for name in HASHED_FIELDS + OPTIONAL_HASHED_FIELDS}
            if event.prev_hash != previous or link_hash(previous, fields) != event.hash:
                return ChainReport(
                    org_id,
                    checked,
                    event.id,
                    event.seq,
                    "its content or links do not match its hash",
                )
            previous, expected_seq, checked = event.hash, expected_seq + 1, checked + 1
        if len(page) < VERIFY_PAGE:
            break
    head = await session.get(AuditHead, org_id)
    if head is not None and (head.seq != checked or head.hash != previous):
        return ChainReport(
            org_id,
            checked,
            None,
            head.seq,
            f"the chain head says {head.seq} events, {checked} are present",
        )
    return ChainReport(org_id, checked)
