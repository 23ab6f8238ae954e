"""Writing audit events (inside the mutation's own transaction) and verifying a chain."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.expression import Executable

from sluicegate.audit.chain import (
    GENESIS_HASH,
    HASHED_FIELDS,
    KEYED,
    OPTIONAL_HASHED_FIELDS,
    SESSION_KEY,
    UNKEYED,
    head_mac,
    link_hash,
    redact,
)
from sluicegate.audit.checkpoints import Checkpoint
from sluicegate.audit.models import AuditEvent, AuditHead
from sluicegate.core.actors import Actor, RequestMeta
from sluicegate.core.clock import utcnow
from sluicegate.core.db import dialect_insert
from sluicegate.core.ids import new_id

__all__ = [
    "ChainReport",
    "HeadUnsealed",
    "RequestMeta",
    "chains",
    "checkpoint_of",
    "record",
    "record_action",
    "verify_chain",
]

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


class HeadUnsealed(Exception):
    """A chain's head whose seal does not match: no checkpoint may vouch for it."""


def session_audit_key(session: AsyncSession) -> bytes:
    """The audit key the session carries (the runtime's session factory puts it there)."""
    key: bytes | None = session.info.get(SESSION_KEY)
    if key is None:
        raise RuntimeError(
            "this session carries no audit key: open sessions through the Runtime, whose "
            "settings hold SLUICEGATE_SECRET_KEY"
        )
    return key


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
    """Append one event to the org's chain (keyed link, sealed head). Call it in the same
    transaction as the change."""
    key = session_audit_key(session)
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
    digest = link_hash(head.hash, fields, KEYED, key)
    event = AuditEvent(**fields, prev_hash=head.hash, hash=digest, hash_version=KEYED)
    session.add(event)
    head.seq, head.hash = event.seq, digest
    head.mac = head_mac(key, org_id, event.seq, digest)
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
    insert = dialect_insert(session.get_bind().dialect.name)
    statement: Executable = insert(AuditHead).values(values).on_conflict_do_nothing()
    return statement


async def verify_chain(
    session: AsyncSession, org_id: str, checkpoints: Sequence[Checkpoint] = ()
) -> ChainReport:
    """Recompute the org's chain from the start; report the first event that does not fit, a
    head that is missing, moved or not sealed by our key, or a chain that is shorter than, or
    differs from, what one of `checkpoints` (of this chain) saw."""
    key = session_audit_key(session)
    wanted = {checkpoint.seq for checkpoint in checkpoints}
    seen: dict[int, str] = {0: GENESIS_HASH}
    previous, expected_seq, checked, keyed = GENESIS_HASH, 1, 0, False
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
            if event.hash_version not in (UNKEYED, KEYED):
                return ChainReport(
                    org_id, checked, event.id, event.seq, "its link version is unknown"
                )
            if event.hash_version == UNKEYED and keyed:
                return ChainReport(
                    org_id,
                    checked,
                    event.id,
                    event.seq,
                    "an unkeyed link after keyed ones: the chain was rewritten from here",
                )
            keyed = keyed or event.hash_version == KEYED
            fields = {name: getattr(event, name) for name in HASHED_FIELDS + OPTIONAL_HASHED_FIELDS}
            expected = link_hash(previous, fields, event.hash_version, key)
            if event.prev_hash != previous or not hmac.compare_digest(expected, event.hash):
                return ChainReport(
                    org_id,
                    checked,
                    event.id,
                    event.seq,
                    "its content or links do not match its hash",
                )
            previous, expected_seq, checked = event.hash, expected_seq + 1, checked + 1
            if checked in wanted:
                seen[checked] = previous
        if len(page) < VERIFY_PAGE:
            break
    problem = _head_problem(await session.get(AuditHead, org_id), key, org_id, checked, previous)
    if problem is not None:
        return ChainReport(org_id, checked, None, checked, problem)
    for checkpoint in sorted(checkpoints, key=lambda c: c.seq):
        problem = _checkpoint_problem(checkpoint, checked, seen.get(checkpoint.seq))
        if problem is not None:
            return ChainReport(org_id, checked, None, checkpoint.seq, problem)
    return ChainReport(org_id, checked)


def _head_problem(
    head: AuditHead | None, key: bytes, chain: str, checked: int, last_hash: str
) -> str | None:
    if head is None:
        if checked == 0:
            return None
        return f"the chain's head is missing ({checked} events present): the trail was tampered"
    if head.seq != checked or head.hash != last_hash:
        return f"the chain head says {head.seq} events, {checked} are present"
    if head.mac is None or not hmac.compare_digest(
        head.mac, head_mac(key, chain, head.seq, head.hash)
    ):
        return "the chain head's seal does not match: it was moved or forged"
    return None


def _checkpoint_problem(checkpoint: Checkpoint, checked: int, at_seq: str | None) -> str | None:
    taken = checkpoint.taken_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    if checkpoint.seq > checked:
        return (
            f"truncated: the checkpoint of {taken} saw {checkpoint.seq} events, "
            f"{checked} remain (events were deleted from the end)"
        )
    if at_seq != checkpoint.hash:
        return f"rewritten: event #{checkpoint.seq} is not the one the checkpoint of {taken} saw"
    return None


async def chains(session: AsyncSession) -> list[str]:
    """Every chain that has a head: the orgs' and the platform's."""
    return list(await session.scalars(select(AuditHead.org_id).order_by(AuditHead.org_id)))


async def checkpoint_of(session: AsyncSession, chain: str, now: datetime) -> Checkpoint:
    """The chain's head as a checkpoint (unsigned: see audit/checkpoints.py `sign`). Raises
    HeadUnsealed when the head's seal does not match, so a moved head is never vouched for."""
    head = await session.get(AuditHead, chain)
    if head is None:
        return Checkpoint(chain, 0, GENESIS_HASH, now)
    key = session_audit_key(session)
    if head.mac is None or not hmac.compare_digest(
        head.mac, head_mac(key, chain, head.seq, head.hash)
    ):
        raise HeadUnsealed(f"the head of the audit chain {chain} is not sealed by this key")
    return Checkpoint(chain, head.seq, head.hash, now)
